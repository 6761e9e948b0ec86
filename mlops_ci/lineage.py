"""`mlops-ci lineage`: the whole chain of a model, from an endpoint back to the commit and its
data, and forward to its deployments, with the artifact digest verified now."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from . import integrity
from ._untrusted import inline, mask_params
from .backends import fetch_checked
from .errors import MlopsCiError
from .records import data_summary
from .refs import ANYTHING

if TYPE_CHECKING:  # pragma: no cover
    from .records import Run
    from .refs import Target
    from .workspace import Workspace


def resolve(ws: Workspace, target: str) -> Target:
    """What `target` names: anything a reference can be (mlops_ci/refs.py), an endpoint and a
    model version (v3 / 3) included; for a commit, also the model version promoted from it."""
    found = ws.resolve(target, ANYTHING, what="lineage")
    if found.version is None:
        mv = ws.store.version_for_sha(ws.project, found.sha)
        if mv is not None and (found.run is None or mv.run_id == found.run.run_id):
            found = dataclasses.replace(found, version=mv)  # a run's lineage shows its own version only
    return found


def lineage(ws: Workspace, target: str) -> dict[str, Any]:
    found = resolve(ws, target)
    sha, mv, endpoint = found.sha, found.version, found.endpoint
    run: Run | None = found.run
    if run is None and mv is not None:
        run = ws.store.get_run(mv.run_id)
    if run is None:
        runs = ws.store.runs(ws.project, sha=sha, limit=1)
        run = runs[0] if runs else None
    commit = ws.git.commit_info(sha)
    doc: dict[str, Any] = {
        "target": target,
        "project": ws.project,
        "endpoint": None,
        "commit": {"sha": sha, "tags": ws.git.tags_at(sha), **commit},
        "config": _config_at(ws, sha),
        "run": None,
        "artifact": None,
        "verdict": None,
        "model_version": mv.to_dict() if mv else None,
        "deployments": [],
        "integrity": [],  # every broken seal or link among the records shown (exit 14)
    }
    if endpoint:
        st = ws.store.endpoint_state(ws.project, endpoint)
        doc["endpoint"] = st.to_dict() if st else None
    if run is not None:
        doc["run"] = {
            "run_id": run.run_id, "status": run.status, "backend": run.backend, "branch": run.branch,
            "duration_s": round(run.finished - run.started, 3), "config_digest": run.config_digest,
            "hyperparameters": mask_params(run.params), "data": run.data, "metrics": run.metrics, "log": run.log_path,
            "links": run.links, "failure": run.failure, "dirty": run.dirty, "inputs_digest": run.inputs_digest,
            "reused_from": None,
        }  # fmt: skip
        if run.reused_from:  # the commit that really trained this model (same training inputs)
            orig = ws.store.get_run(run.reused_from)
            doc["run"]["reused_from"] = {"run_id": run.reused_from, "sha": orig.sha if orig else None,
                                         "branch": orig.branch if orig else None}  # fmt: skip
        doc["artifact"] = _verify(ws, run.artifact_uri, run.artifact_sha256)
        verdict = ws.store.get_verdict(mv.verdict_id) if mv else ws.store.latest_verdict(run.run_id)
        doc["integrity"] = integrity.link_problems(run=run, series=ws.store.series(run.run_id), verdict=verdict,
                                                   version=mv)  # fmt: skip
        if verdict is not None:
            v = verdict.to_dict()
            keys = ("verdict_id", "passed", "conclusion", "baseline_sha", "baseline_run_id", "baseline_note",
                    "gate_digest", "created")  # fmt: skip
            doc["verdict"] = {k: v[k] for k in keys}
            doc["verdict"]["rules"] = [
                {"rule": r["rule"], "passed": r["passed"], "skipped": r["skipped"], "reason": r["reason"]}
                for r in v["results"]
            ]
    if mv is not None:
        deployments = [d for d in ws.store.deployments(ws.project) if d.version == mv.version]
        doc["deployments"] = [asdict(d) for d in deployments]
        for d in deployments:
            doc["integrity"] += [p for p in integrity.link_problems(deployment=d, version=mv) if d.deployment_id in p]
    return doc


def _verify(ws: Workspace, uri: str | None, digest: str | None) -> dict[str, object]:
    out: dict[str, object] = {"uri": uri, "sha256": digest, "verified": False, "problem": None}
    if not uri or not digest:
        out["problem"] = "no artifact recorded"
        return out
    try:
        got = fetch_checked(ws.store, uri, ws.home / "artifacts" / "cache")
    except MlopsCiError as exc:
        out["problem"] = exc.message
        return out
    if got.actual is None:
        out["problem"] = "artifact missing"
    else:
        out["verified"] = got.matches(digest)
        if not out["verified"]:
            out["problem"] = f"digest mismatch: the file now has sha256 {got.actual}"
    return out


def _config_at(ws: Workspace, sha: str) -> dict[str, object]:
    """The mlops-ci.yaml of that commit, resolved (secrets masked), or why it cannot be read."""
    from . import config as config_mod

    rel = ws.config_path_in_repo()
    try:
        text = ws.git.show_file(sha, rel)
    except MlopsCiError as exc:
        return {"path": rel, "error": exc.message}
    try:
        cfg = config_mod.parse(text, f"{rel}@{sha[:8]}", str(ws.root))
    except MlopsCiError as exc:
        return {"path": rel, "error": exc.message}
    return {"path": rel, "training_digest": cfg.training_digest(), "gate_digest": cfg.gate_digest(),
            "resolved": cfg.to_display()}  # fmt: skip


def render(doc: dict[str, Any]) -> str:
    c, r, a, v, mv = doc["commit"], doc["run"], doc["artifact"], doc["verdict"], doc["model_version"]
    lines = [f"lineage of {doc['target']} ({doc['project']})"]
    if doc["endpoint"]:
        e = doc["endpoint"]
        serving = "serving" if e["status"] == "InService" else "last served"
        lines.append(f"endpoint   {e['name']}: {e['status']} at {e['url']}, {serving} v{e['version']}")
    if mv:
        lines.append(f"version    v{mv['version']} ({mv['stage']}), promoted with verdict {mv['verdict_id']}")
    tags = f" [{', '.join(c['tags'])}]" if c["tags"] else ""
    lines.append(f"commit     {c['sha']}{tags}")
    lines.append(f"           {inline(c['author'])} <{inline(c['email'])}>: {inline(c['subject'])}")
    cfg = doc["config"]
    if "error" in cfg:
        lines.append(f"config     {cfg['path']}: {cfg['error']}")
    else:
        lines.append(f"config     {cfg['path']} training digest {cfg['training_digest'][:16]}, gate digest "
                     f"{cfg['gate_digest'][:16]}")  # fmt: skip
    if r is None:
        lines.append("run        none recorded for this commit")
    else:
        lines.append(
            f"run        {r['run_id']} ({r['status']}, {r['backend']}, {r['duration_s']:.1f}s), log {r['log']}"
        )
        if r.get("reused_from"):
            o = r["reused_from"]
            lines.append(f"reused     the model of run {o['run_id']} ({(o['sha'] or '?')[:8]}): same training inputs")
        hps = ", ".join(f"{inline(k)}={inline(val)}" for k, val in sorted(r["hyperparameters"].items()))
        lines.append(f"params     {hps or '-'}")
        for name, d in sorted(r["data"].items()):
            lines.append(f"data       {name}: {data_summary(d)}")
        metrics = ", ".join(f"{inline(k)}={val:.6g}" for k, val in sorted(r["metrics"].items()))
        lines.append(f"metrics    {metrics or '-'}")
    if a:
        state = "verified now" if a["verified"] else f"VERIFICATION FAILED: {a['problem']}"
        lines.append(f"artifact   {a['uri']}")
        lines.append(f"sha256     {a['sha256']} ({state})")
    if v:
        base = v["baseline_sha"][:8] if v["baseline_sha"] else "none"
        lines.append(f"verdict    {v['conclusion']} (baseline {base}) {v['verdict_id']}")
        for rule in v["rules"]:
            mark = "skip" if rule["skipped"] else ("pass" if rule["passed"] else "FAIL")
            lines.append(f"             {mark:<4} {rule['rule']}: {rule['reason']}")
    else:
        lines.append("verdict    none: this commit never went through the gate")
    for d in doc["deployments"]:
        lines.append(
            f"deployed   {d['kind']} to {d['endpoint']}: {d['outcome']}" + (f" ({d['tag']})" if d["tag"] else "")
        )
    if mv and not doc["deployments"]:
        lines.append("deployed   never")
    for problem in doc["integrity"]:
        lines.append(f"INTEGRITY  {problem}")
    if not doc["integrity"] and r is not None:
        lines.append("integrity  every record above matches its digest and its links")
    return "\n".join(lines)

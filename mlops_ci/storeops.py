"""Moving history between stores (`store export` / `import`) and checking a store's integrity."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

from . import integrity
from ._files import sha256_file
from .backends import Store, fetch_checked
from .errors import AlreadyExists, ConfigError, IntegrityError, MlopsCiError, NotFound
from .records import Deployment, ModelVersion, RuleResult, Run, Verdict

FORMAT = "mlops-ci/store-export/v1"


def export(store: Store, project: str) -> Iterator[dict[str, object]]:
    """Every record of the project as JSON-able dicts, oldest first, runs before their verdicts."""
    yield {"kind": "header", "format": FORMAT, "project": project}
    for run in sorted(store.runs(project, limit=10**9), key=lambda r: (r.finished, r.run_id)):
        series = {k: list(v) for k, v in store.series(run.run_id).items()}
        yield {"kind": "run", "run": run.to_dict(), "series": series}
        for v in store.verdicts_for(run.run_id):
            d = v.to_dict()
            d.pop("conclusion")
            yield {"kind": "verdict", "verdict": d}
    for mv in store.versions(project):
        yield {"kind": "version", "version": mv.to_dict()}
    for dep in store.deployments(project):
        yield {"kind": "deployment", "deployment": dep.to_dict()}


def write_export(store: Store, project: str, out: IO[str]) -> int:
    n = 0
    for rec in export(store, project):
        out.write(json.dumps(rec, sort_keys=True) + "\n")
        n += 1
    return n - 1


def import_records(
    store: Store, project: str, lines: Iterable[str], *, artifact_cache: Path, say: Callable[[str], None]
) -> dict[str, int]:
    """Write exported records into `store`; existing ones are skipped, so an import can be
    re-run. Local artifacts are uploaded when the target keeps artifacts elsewhere (S3)."""
    counts = {"run": 0, "verdict": 0, "version": 0, "deployment": 0, "skipped": 0}
    uris: dict[str, str] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise ConfigError(f"line {i} of the export is not JSON") from None
        kind = rec.get("kind")
        if kind == "header":
            if rec.get("format") != FORMAT:
                raise ConfigError(f"not an mlops-ci export (format {rec.get('format')!r}, expected {FORMAT})")
            if rec.get("project") != project:
                raise ConfigError(f"the export is of project {rec.get('project')!r}, not {project!r}")
            continue

        def sealed(record: integrity.R, i: int = i) -> integrity.R:
            if (bad := integrity.problem(record)) is not None:  # an import must not launder a forgery
                raise IntegrityError(f"line {i} of the export: {bad}")
            return record

        try:
            if kind == "run":
                run = sealed(Run(**rec["run"]))
                run = replace(
                    run, artifact_uri=_carry(store, run.artifact_uri, run.artifact_sha256, uris, artifact_cache)
                )
                store.record_run(run, rec["series"])
            elif kind == "verdict":
                d = rec["verdict"]
                d["results"] = tuple(RuleResult(**r) for r in d["results"])
                store.record_verdict(sealed(Verdict(**d)))
            elif kind == "version":
                mv = sealed(ModelVersion(**rec["version"]))
                mv = replace(
                    mv, artifact_uri=_carry(store, mv.artifact_uri, mv.artifact_sha256, uris, artifact_cache) or ""
                )
                if not store.import_version(mv):
                    counts["skipped"] += 1
                    continue
            elif kind == "deployment":
                store.record_deployment(sealed(Deployment(**rec["deployment"])))
            else:
                raise ConfigError(f"line {i}: unknown record kind {kind!r}")
        except AlreadyExists:
            counts["skipped"] += 1
            continue
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"line {i}: malformed {kind} record ({exc})") from None
        counts[kind] += 1
    say(", ".join(f"{v} {k}(s)" for k, v in counts.items()))
    return counts


def _carry(store: Store, uri: str | None, digest: str | None, done: dict[str, str], cache: Path) -> str | None:
    """Re-home an artifact into the target store (verifying its digest on the way)."""
    if not uri or not digest:
        return uri
    if uri in done:
        return done[uri]
    if uri.startswith("file://"):  # a no-op for the SQLite store, an upload for S3
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(uri).path))
        if not path.is_file():
            raise NotFound(f"artifact {path} of the export is missing here; import where it exists")
        if sha256_file(path) != digest:
            raise IntegrityError(f"artifact {path} does not match its recorded sha256; refusing to import it")
        done[uri] = store.put_artifact(path, digest)
        return done[uri]
    return uri


def check(
    store: Store,
    project: str,
    cache: Path,
    signature: Callable[[Verdict | ModelVersion], str | None] | None = None,
) -> list[str]:
    """Problems found: records that no longer match their digest or whose links are broken,
    bad signatures (with `signature`), artifacts missing or not matching their digest, dangling
    references."""
    problems = store.integrity_problems()
    if problems:
        return problems  # the file itself is damaged: reading records from it would only mislead
    runs = {r.run_id: r for r in store.runs(project, limit=10**9)}
    versions = store.versions(project)
    verdicts: dict[str, Verdict] = {}
    # An unsigned verdict is a PR or branch job's advisory one (only a release job signs): it is a
    # problem only when a version rests on it. Every signature there is must verify.
    promoted = {mv.verdict_id for mv in versions}
    for run in runs.values():
        problems += integrity.link_problems(run=run, series=store.series(run.run_id))
        for judged in store.verdicts_for(run.run_id):
            verdicts[judged.verdict_id] = judged
            base = runs.get(judged.baseline_run_id) if judged.baseline_run_id else None
            found = integrity.link_problems(verdict=judged, run=run, baseline=base)
            found = [p for p in found if judged.verdict_id in p]
            needs = judged.signature.get("value") or judged.verdict_id in promoted
            if signature is not None and not found and needs and (bad := signature(judged)):
                found.append(bad)
            problems += found
    by_number = {mv.version: mv for mv in versions}
    for mv in versions:
        found = integrity.link_problems(version=mv, verdict=verdicts.get(mv.verdict_id), run=runs.get(mv.run_id))
        problems += [p for p in found if p.startswith(integrity.describe(mv))]
        if signature is not None and not found and (bad := signature(mv)):
            problems.append(bad)
    for dep in store.deployments(project):
        found = integrity.link_problems(deployment=dep, version=by_number.get(dep.version))
        problems += [p for p in found if p.startswith(integrity.describe(dep))]
    checked: set[tuple[str, str]] = set()  # an artifact shared by a run and its version: checked, reported once

    def artifact_ok(uri: str | None, digest: str | None, what: str) -> None:
        if not uri or not digest:
            problems.append(f"{what}: no artifact recorded")
            return
        if (uri, digest) in checked:
            return
        checked.add((uri, digest))
        try:
            got = fetch_checked(store, uri, cache)
        except MlopsCiError as exc:
            problems.append(f"{what}: {exc.message}")
            return
        if got.actual is None:
            problems.append(f"{what}: artifact {uri} is missing")
        elif not got.matches(digest):
            problems.append(f"{what}: artifact {uri} does not match its sha256 {digest[:16]}…")

    for run in runs.values():
        if run.status == "completed":
            artifact_ok(run.artifact_uri, run.artifact_sha256, f"run {run.run_id}")
    for mv in versions:
        what = f"v{mv.version}"
        if mv.run_id not in runs:
            problems.append(f"{what}: its run {mv.run_id} is not in the store")
        v = store.get_verdict(mv.verdict_id)
        if v is None:
            problems.append(f"{what}: its verdict {mv.verdict_id} is not in the store (provenance missing)")
        elif not v.passed:
            problems.append(f"{what}: its verdict {mv.verdict_id} did not pass")
        artifact_ok(mv.artifact_uri, mv.artifact_sha256, what)
    numbers = {mv.version for mv in versions}
    for dep in store.deployments(project):
        if dep.version not in numbers:
            problems.append(f"deployment {dep.deployment_id}: v{dep.version} is not in the registry")
    return problems

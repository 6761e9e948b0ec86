"""Fault matrix, integrity: a store edited by hand never lets a model through.

The attacker here has write access to the store (the SQLite file, or the S3 prefix) and edits
records the way someone with `sqlite3` or `aws s3 cp` would: a changed metric, a flipped
verdict, digests recomputed by someone who read integrity.py, a signature borrowed from
another record or made with a key of their own.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ci import integrity
from mlops_ci.records import RuleResult, Run, Verdict
from tests.conftest import Project, fast_config
from tests.integration.test_deploy import endpoint_state, invoke, release


def _db(project: Project) -> sqlite3.Connection:
    return sqlite3.connect(project.path / ".mlops-ci" / "store.db", isolation_level=None)


def _edit(project: Project, table: str, key: str, value: str, change: Any) -> None:
    """Rewrite one record's JSON body in place, as a hand edit would."""
    with _db(project) as db:
        (body,) = db.execute(f"SELECT body FROM {table} WHERE {key}=?", (value,)).fetchone()
        d = json.loads(body)
        change(d)
        db.execute(f"UPDATE {table} SET body=? WHERE {key}=?", (json.dumps(d), value))


def _run(project: Project, run_id: str) -> Run:
    with _db(project) as db:
        (body,) = db.execute("SELECT body FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return Run(**json.loads(body))


def _verdict_of(project: Project, run_id: str) -> Verdict:
    with _db(project) as db:
        (body,) = db.execute("SELECT body FROM verdicts WHERE run_id=? ORDER BY created DESC", (run_id,)).fetchone()
    d = json.loads(body)
    d["results"] = tuple(RuleResult(**r) for r in d["results"])
    return Verdict(**d)


def _put(project: Project, table: str, key: str, record: Any) -> None:
    d = record.to_dict()
    d.pop("conclusion", None)
    with _db(project) as db:
        db.execute(f"UPDATE {table} SET body=? WHERE {key}=?", (json.dumps(d), getattr(record, key)))


def _run_id(project: Project) -> str:
    return str(json.loads(project.ok("runs", "--json"))[0]["run_id"])


def test_a_metric_forged_in_the_store_is_refused_by_gate_store_check_and_lineage(project: Project):
    project.commit("weak", quality=0.5)
    project.ok("train")
    run_id = _run_id(project)
    _edit(project, "runs", "run_id", run_id, lambda d: d["metrics"].update(accuracy=0.99))
    code, _, err = project.cli("gate")
    assert code == 14
    assert f"run {run_id}" in err and "no longer matches its digest" in err
    with _db(project) as db:
        assert db.execute("SELECT count(*) FROM verdicts").fetchone() == (0,)  # nothing was judged
    code, out, _ = project.cli("store", "check")
    assert code == 14 and f"run {run_id}" in out
    code, out, err = project.cli("lineage", "HEAD")
    assert code == 14 and "INTEGRITY" in out and f"run {run_id}" in err


def test_a_digest_recomputed_after_a_forgery_still_breaks_the_chain(project: Project):
    """Someone who read integrity.py re-seals the forged run: its own digest holds, but the
    verdict made from the real run names the real run's digest, so promote and deploy refuse."""
    project.commit("weak", quality=0.5)
    project.ok("train")
    run_id = _run_id(project)
    assert project.cli("gate")[0] == 1
    forged_run = dataclasses.replace(_run(project, run_id), metrics={"accuracy": 0.99, "loss": 0.01, "rows": 3.0})
    with _db(project) as db:
        rows = db.execute("SELECT metric, points FROM series WHERE run_id=?", (run_id,)).fetchall()
    from mlops_ci.backends.sqlite_store import _unpack

    series = {m: list(_unpack(p)) for m, p in rows}
    _put(project, "runs", "run_id", integrity.seal_run(forged_run, series))
    verdict = _verdict_of(project, run_id)
    flipped = dataclasses.replace(verdict, passed=True, results=tuple(
        dataclasses.replace(r, passed=True, reason="ok") for r in verdict.results))  # fmt: skip
    _put(project, "verdicts", "verdict_id", integrity.seal(flipped))
    code, _, err = project.cli("promote")
    assert code == 14
    assert f"verdict {verdict.verdict_id}" in err and "was made from another run" in err
    assert json.loads(project.ok("models", "--json")) == []


def test_a_flipped_verdict_is_refused_by_promote(project: Project):
    project.commit("weak", quality=0.5)
    project.ok("train")
    run_id = _run_id(project)
    assert project.cli("gate")[0] == 1
    verdict = _verdict_of(project, run_id)
    _edit(project, "verdicts", "verdict_id", verdict.verdict_id, lambda d: d.update(passed=True))
    code, _, err = project.cli("promote")
    assert code == 14 and f"verdict {verdict.verdict_id}" in err
    assert json.loads(project.ok("models", "--json")) == []


def test_a_version_or_deployment_edited_after_the_fact_is_refused_and_found(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    project.commit("v2", scale=2.0)
    release(project, "v2.0.0")
    _edit(project, "model_versions", "version", "2", lambda d: d["metrics"].update(accuracy=1.0))
    code, _, err = project.cli("deploy", "v2.0.0")
    assert code == 14 and "fast v2" in err and "no longer matches its digest" in err
    assert endpoint_state(project, "production")["version"] == 1
    assert invoke(project, "production") == [3.0, 7.0]
    with _db(project) as db:
        (dep_id,) = db.execute("SELECT deployment_id FROM deployments").fetchone()
    _edit(project, "deployments", "deployment_id", dep_id, lambda d: d.update(sha="0" * 40))
    code, out, _ = project.cli("store", "check")
    assert code == 14
    assert f"deployment {dep_id}" in out and "fast v2" in out


def test_an_import_does_not_launder_a_forged_record(project: Project, tmp_path: Path):
    project.ok("train")
    export = tmp_path / "export.jsonl"
    project.ok("store", "export", "-o", str(export))
    lines = export.read_text().splitlines()
    forged = []
    for line in lines:
        rec = json.loads(line)
        if rec["kind"] == "run":
            rec["run"]["metrics"]["accuracy"] = 0.999
        forged.append(json.dumps(rec))
    export.write_text("\n".join(forged) + "\n")
    other = tmp_path / "other.db"
    code, _, err = project.cli("--store", f"sqlite:///{other}", "store", "import", str(export))
    assert code == 14 and "line 2 of the export" in err and "no longer matches its digest" in err


# -- policy from the committed config ---------------------------------------------------------
def _loosened(config: str) -> str:
    return config.replace("min: 0.8", "min: 0.1").replace("max_regression: 5%", "max_regression: 99%")


def test_an_uncommitted_loosening_of_the_gate_rules_promotes_nothing(project: Project):
    project.commit("weak", quality=0.5)
    project.ok("train")
    assert project.cli("gate")[0] == 1
    loose = _loosened(fast_config(quality=0.5))
    (project.path / "mlops-ci.yaml").write_text(loose)
    code, out, err = project.cli("gate")
    assert code == 1, out
    assert "differ from the ones committed at" in err
    code, _, err = project.cli("promote")
    assert code == 5 and "failed the gate" in err
    assert json.loads(project.ok("models", "--json")) == []


def test_a_pull_request_cannot_loosen_its_own_gate(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Under Actions on a pull request the rules come from the base branch, not the PR head."""
    project.ok("train")
    project.ok("gate")
    project.git("checkout", "-q", "-b", "feature")
    loose = _loosened(fast_config(quality=0.5))
    (project.path / "mlops-ci.yaml").write_text(loose)
    head = project.commit("weaker model, looser gate")
    project.ok("train")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 7, "pull_request": {
        "number": 7, "head": {"sha": head, "ref": "feature"}, "base": {"ref": "main"}}}))  # fmt: skip
    for k, v in {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
                 "GITHUB_REF": "refs/pull/7/merge", "MLOPS_CI_ALLOW_RUNNER_STORE": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    code, out, _ = project.cli("gate", "--json")
    assert code == 1
    verdict = json.loads(out)
    assert verdict["gate_source"].startswith(project.git("rev-parse", "main")[:8])
    assert any("0.8" in r["rule"] and not r["passed"] for r in verdict["results"])


# -- signatures ------------------------------------------------------------------------------
@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """AWS KMS as moto implements it (Sign/Verify with real ECDSA keys), in process."""
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        yield boto3.client("kms", region_name="us-east-1")


def _signed_config(key_id: str, **kw: Any) -> str:
    return fast_config(**kw).replace("gate:\n", f"aws:\n  region: us-east-1\ngate:\n  signing_key: {key_id}\n", 1)


def test_signed_verdicts_and_versions_deploy_and_forgeries_do_not(project: Project, kms: Any):
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    (project.path / "mlops-ci.yaml").write_text(_signed_config(key))
    project.commit("sign the gate")
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    assert invoke(project, "production") == [3.0, 7.0]
    v1 = json.loads(project.ok("models", "--json"))[0]
    assert v1["signature"]["key_id"].endswith(key) and v1["signature"]["algorithm"] == "ECDSA_SHA_256"

    # A failing commit whose verdict and version are forged by someone with store write access
    # who knows how digests are made, but not the key: their own key, then a borrowed signature.
    (project.path / "mlops-ci.yaml").write_text(_signed_config(key, quality=0.5))
    project.commit("weak")
    project.ok("train")
    run_id = _run_id(project)
    assert project.cli("gate")[0] == 1
    verdict = _verdict_of(project, run_id)
    flipped = integrity.seal(dataclasses.replace(verdict, passed=True, results=()))
    theirs = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    from mlops_ci.integrity import Signer

    own = Signer(theirs, kms, (Exception,), lambda exc, what: exc)
    _put(project, "verdicts", "verdict_id", dataclasses.replace(flipped, signature=own.sign(flipped, {})))
    code, _, err = project.cli("promote")
    assert code == 14 and "does not verify with KMS key" in err
    borrowed = dict(_verdict_of(project, json.loads(project.ok("runs", "--json"))[-1]["run_id"]).signature)
    _put(project, "verdicts", "verdict_id", dataclasses.replace(flipped, signature=borrowed))
    code, _, err = project.cli("promote")
    assert code == 14 and "does not verify" in err
    code, out, _ = project.cli("store", "check")  # every signature there is must verify
    assert code == 14 and f"verdict {verdict.verdict_id}" in out
    _put(project, "verdicts", "verdict_id", flipped)  # no signature at all
    code, _, err = project.cli("promote")
    assert code == 14 and "is not signed" in err
    assert len(json.loads(project.ok("models", "--json"))) == 1
    # Unsigned, it reads as a PR job's advisory verdict, which nothing may rest on: harmless
    assert project.cli("store", "check")[0] == 0


# -- smaller ones ----------------------------------------------------------------------------
def test_a_force_moved_release_tag_is_refused(project: Project):
    release(project, "v1.0.0")
    project.ok("deploy", "v1.0.0")
    project.commit("v2", scale=2.0)
    project.ok("train")
    project.ok("gate", "--base", "main")
    project.ok("promote")
    project.git("tag", "-f", "v1.0.0")
    code, _, err = project.cli("deploy", "v1.0.0")
    assert code == 5 and "release tag v1.0.0 now points at" in err and "the tag was moved" in err
    assert endpoint_state(project, "production")["version"] == 1
    assert invoke(project, "production") == [3.0, 7.0]
    project.git("tag", "v2.0.0")
    project.ok("deploy", "v2.0.0")  # a new tag for the new commit is the way
    assert endpoint_state(project, "production")["version"] == 2


@pytest.mark.parametrize("channel", ["../outside", "data/../../outside", "/proc/self", "/etc"])
def test_a_channel_outside_the_repository_or_on_a_system_directory_is_refused(project: Project, channel: str):
    (project.path.parent / "outside").mkdir(exist_ok=True)
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("train: data", f"train: {channel}"))
    project.commit("channel")
    code, _, err = project.cli("train")
    assert code == 2, err
    assert "leaves the repository" in err or "is a system directory" in err


def test_an_absolute_data_directory_is_recorded_as_a_host_path(project: Project, tmp_path: Path):
    data = tmp_path / "datasets" / "rows"
    data.mkdir(parents=True)
    (data / "rows.csv").write_text("1\n2\n")
    (project.path / "mlops-ci.yaml").write_text(fast_config().replace("train: data", f"train: {data}"))
    project.commit("host data")
    project.ok("train")
    run = json.loads(project.ok("runs", "show", "--json"))
    assert run["data"]["train"]["source"] == "host"


def test_rules_never_committed_are_previewed_by_report_and_refused_by_gate(project: Project):
    project.git("rm", "-q", "--cached", "mlops-ci.yaml")
    project.git("commit", "-q", "-m", "config not committed (a first hour)")
    project.ok("train")
    code, out, err = project.cli("report")
    assert code == 0 and "mlops-ci:report" in out
    assert "is not committed at" in err and "previews the work tree's rules" in err
    code, _, err = project.cli("gate")
    assert code == 5 and "mlops-ci.yaml is not committed at" in err and "commit it" in err


def test_a_signature_binds_the_workflow_that_gated(project: Project, kms: Any, monkeypatch: pytest.MonkeyPatch):
    """Under Actions the signed message names the repository and workflow run that gated: a
    verdict signed in another repository does not pass here, and editing the recorded identity
    breaks the signature."""
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    (project.path / "mlops-ci.yaml").write_text(_signed_config(key))
    project.commit("sign the gate")
    project.ok("train")
    actions = {"GITHUB_ACTIONS": "true", "MLOPS_CI_ALLOW_RUNNER_STORE": "true", "GITHUB_REPOSITORY": "other/fork",
               "GITHUB_WORKFLOW_REF": "other/fork/.github/workflows/gate.yml@refs/heads/main", "GITHUB_RUN_ID": "42",
               "GITHUB_REF": "refs/tags/v1.0.0", "GITHUB_REF_TYPE": "tag",
               "GITHUB_SHA": project.git("rev-parse", "HEAD")}  # fmt: skip
    for k, v in actions.items():
        monkeypatch.setenv(k, v)
    project.ok("gate")
    verdict = _verdict_of(project, _run_id(project))
    assert verdict.signature["identity.GITHUB_WORKFLOW_REF"].startswith("other/fork/")
    assert verdict.signature["identity.GITHUB_REF"] == "refs/tags/v1.0.0"
    monkeypatch.setenv("GITHUB_REPOSITORY", "owner/model")
    code, _, err = project.cli("promote")
    assert code == 14 and "signed by a workflow of other/fork, not of owner/model" in err
    relabelled = dict(verdict.signature, **{"identity.GITHUB_REPOSITORY": "owner/model"})
    _put(project, "verdicts", "verdict_id", dataclasses.replace(verdict, signature=relabelled))
    code, _, err = project.cli("promote")
    assert code == 14 and "does not verify" in err
    assert json.loads(project.ok("models", "--json")) == []


@pytest.mark.parametrize(("event", "ref"), [("pull_request", "refs/pull/7/merge"), ("push", "refs/heads/main")])
def test_only_a_release_tags_job_signs(
    project: Project, kms: Any, monkeypatch: pytest.MonkeyPatch, event: str, ref: str
):
    """A PR or branch job runs under the training role, which must not hold kms:Sign (same-repo
    PR code can use it): its verdict is recorded unsigned and says so, never deploys, and the
    release job (a tag) gates the commit again and signs."""
    key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    (project.path / "mlops-ci.yaml").write_text(_signed_config(key))
    project.commit("sign the gate")
    project.ok("train")
    sha = project.git("rev-parse", "HEAD")
    job = {
        "GITHUB_ACTIONS": "true",
        "MLOPS_CI_ALLOW_RUNNER_STORE": "true",
        "GITHUB_REPOSITORY": "owner/model",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": ref,
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_SHA": sha,
    }
    for k, v in job.items():
        monkeypatch.setenv(k, v)
    if event == "pull_request":  # the policy of a PR comes from its base branch
        event_file = project.path.parent / "event.json"
        pr = {"number": 7, "base": {"ref": "main"}, "head": {"sha": sha}}
        event_file.write_text(json.dumps({"pull_request": pr}))
        monkeypatch.setenv("GITHUB_EVENT_PATH", str(event_file))
    code, _, err = project.cli("gate")
    assert code == 0, err
    assert f"a {event} job on {ref} does not sign" in err and "recorded unsigned" in err
    unsigned = _verdict_of(project, _run_id(project))
    assert unsigned.passed and unsigned.signature == {}
    assert project.cli("store", "check")[0] == 0  # an advisory verdict nothing rests on is no problem
    code, _, err = project.cli("promote")
    assert code == 14 and "is not signed" in err
    assert json.loads(project.ok("models", "--json")) == []

    project.git("tag", "v1.0.0")
    monkeypatch.setenv("GITHUB_EVENT_NAME", "push")
    monkeypatch.setenv("GITHUB_REF", "refs/tags/v1.0.0")
    monkeypatch.setenv("GITHUB_REF_TYPE", "tag")
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    code, _, err = project.cli("gate")
    assert code == 0 and "unsigned" not in err, err
    signed = _verdict_of(project, _run_id(project))
    assert signed.signature["identity.GITHUB_REF"] == "refs/tags/v1.0.0"
    project.ok("promote")
    (version,) = json.loads(project.ok("models", "--json"))
    assert version["signature"]["value"]
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")  # a later branch job gates it again
    monkeypatch.setenv("GITHUB_REF_TYPE", "branch")
    project.ok("gate")
    assert project.cli("store", "check")[0] == 0

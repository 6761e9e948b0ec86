"""One resolver for every reference a command takes (mlops_ci/refs.py): what each form names,
that every command taking a reference accepts the same forms, and that a hostile or ambiguous
reference is a one-line error with a user's exit code, never a crash."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from mlops_ci import lineage
from mlops_ci.errors import INTERNAL, NOT_FOUND, USAGE, MlopsCiError, NotFound, UsageError
from mlops_ci.records import EndpointState, ModelVersion, Run
from mlops_ci.refs import ANYTHING, COMMITS, RefKind
from mlops_ci.verbs.baseline import find_baseline
from mlops_ci.verbs.deploy import Deployer
from mlops_ci.verbs.train import head_run, train
from mlops_ci.workspace import Workspace
from tests.conftest import Project


@pytest.fixture
def ws(project: Project) -> Iterator[Workspace]:
    w = Workspace(project.path, {})
    yield w
    w.close()


def record_run(ws: Workspace, sha: str, run_id: str | None = None, *, project: str | None = None,
               status: str = "completed") -> Run:  # fmt: skip
    run = Run(
        run_id=run_id or f"{sha[:8]}-abc123", project=project or ws.project, sha=sha, branch="main",
        config_digest=ws.cfg.training_digest(), status=status, backend="local", started=0.0, finished=1.0,
        metrics={"accuracy": 0.9},
    )  # fmt: skip
    ws.store.record_run(run, {})
    return run


def promote(ws: Workspace, run: Run) -> ModelVersion:
    def make(version: int) -> ModelVersion:
        return ModelVersion(ws.project, version, run.sha, run.run_id, "v", "file:///x", "f" * 64, {}, "approved", 0.0)

    return ws.store.promote(make, run.sha, ws.project)[0]


# -- what each form names ---------------------------------------------------------------------
def test_each_form_resolves_to_its_kind_and_commit(project: Project, ws: Workspace):
    sha = project.git("rev-parse", "HEAD")
    project.git("tag", "v1.0.0")
    run = record_run(ws, sha)
    cases = {
        None: RefKind.HEAD,
        run.run_id: RefKind.RUN,
        run.run_id[:11]: RefKind.RUN,  # a unique prefix of a run id
        sha: RefKind.COMMIT,
        sha[:7]: RefKind.COMMIT,
        "HEAD": RefKind.COMMIT,
        "HEAD~0": RefKind.COMMIT,
        "main": RefKind.BRANCH,
        "refs/heads/main": RefKind.BRANCH,
        "v1.0.0": RefKind.TAG,
        "refs/tags/v1.0.0": RefKind.TAG,
    }
    for ref, kind in cases.items():
        target = ws.resolve(ref)
        assert (target.kind, target.sha, target.ref) == (kind, sha, ref), ref
    assert ws.resolve(run.run_id).run == run
    assert ws.resolve("v1.0.0").tag == "v1.0.0" and ws.resolve("main").branch == "main"
    head = ws.resolve(None)
    assert (head.tag, head.branch) == ("v1.0.0", "main")
    assert ws.resolve_sha(run.run_id) == sha  # the Workspace's shorthand takes every form too


def test_an_annotated_tag_resolves_to_its_commit(project: Project, ws: Workspace):
    sha = project.git("rev-parse", "HEAD")
    project.git("tag", "-a", "v2.0.0", "-m", "release")
    assert (ws.resolve("v2.0.0").kind, ws.resolve("v2.0.0").sha) == (RefKind.TAG, sha)


def test_model_versions_and_endpoints_are_names_lineage_takes(project: Project, ws: Workspace):
    sha = project.git("rev-parse", "HEAD")
    mv = promote(ws, record_run(ws, sha))
    ws.store.put_endpoint_state(
        EndpointState(ws.project, "production", None, None, None, None, None, mv.version, sha, "InService", 0.0)
    )
    for ref in ("v1", "1"):
        target = ws.resolve(ref, ANYTHING)
        assert (target.kind, target.sha, target.version, target.run and target.run.run_id) == (
            RefKind.VERSION, sha, mv, mv.run_id,
        )  # fmt: skip
    target = ws.resolve("production", ANYTHING)
    assert (target.kind, target.endpoint, target.version, target.sha) == (RefKind.ENDPOINT, "production", mv, sha)
    # a tag of that name wins over the version, as git's own names win
    project.commit("next")
    project.git("tag", "v1")
    assert ws.resolve("v1", ANYTHING).kind is RefKind.TAG
    # every other command refuses them, naming what they are and what to pass
    with pytest.raises(UsageError, match=r"'production' is an endpoint, and deploy takes a commit SHA, branch, tag or "
                                         r"run id; pass the tag or SHA it serves"):  # fmt: skip
        ws.resolve("production", what="deploy")
    with pytest.raises(UsageError, match=rf"'1' is model version 1, and train takes .*; pass its commit: {sha[:12]}"):
        ws.resolve("1", what="train")


def test_a_branch_named_like_an_endpoint_is_the_branch_where_endpoints_are_not_taken(project: Project, ws: Workspace):
    project.git("branch", "production")
    assert ws.resolve("production").kind is RefKind.BRANCH
    with pytest.raises(NotFound, match="never had a version deployed"):
        ws.resolve("production", ANYTHING)  # lineage: the endpoint, as before


def test_a_run_of_another_project_is_not_found(project: Project, ws: Workspace):
    run = record_run(ws, project.git("rev-parse", "HEAD"), "other-1", project="other")
    with pytest.raises(NotFound, match="run other-1 belongs to project 'other', not 'fast'"):
        ws.resolve(run.run_id)


def test_a_run_id_prefix_needs_four_characters_and_one_match(project: Project, ws: Workspace):
    record_run(ws, "a" * 40, "zzz-one")
    record_run(ws, "b" * 40, "zzz-two")
    record_run(ws, "c" * 40, "yyy-one")
    assert ws.resolve("yyy-").run.run_id == "yyy-one"  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="'yyy' does not name"):
        ws.resolve("yyy")  # `deploy 3` must not deploy whichever run starts with 3
    with pytest.raises(UsageError, match="'zzz-' is ambiguous: it starts run ids zzz-one, zzz-two; give the whole"):
        ws.resolve("zzz-")


def _commits_sharing_a_prefix(project: Project) -> tuple[str, list[str]]:
    """Two commit objects whose SHAs share their first 4 hex digits (found by hashing, written
    with `git hash-object`): a short SHA git calls ambiguous."""
    seen: dict[str, bytes] = {}
    for i in range(100_000):
        body = (f"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@b> 0 +0000\n"
                f"committer A <a@b> 0 +0000\n\nn{i}\n").encode()  # fmt: skip
        prefix = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()[:4]
        if prefix in seen:
            break
        seen[prefix] = body
    shas = []
    for obj in (seen[prefix], body):
        done = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=project.path, input=obj,
                              capture_output=True, check=True)  # fmt: skip
        shas.append(done.stdout.decode().strip())
    return prefix, shas


def test_an_ambiguous_short_sha_is_a_usage_error_naming_the_commits(project: Project, ws: Workspace):
    prefix, shas = _commits_sharing_a_prefix(project)
    with pytest.raises(UsageError) as caught:
        ws.resolve(prefix)
    assert f"'{prefix}' is ambiguous: the SHAs of" in caught.value.message
    assert all(s[:12] in caught.value.message for s in shas) and "give more of the SHA" in caught.value.message
    assert ws.resolve(shas[0][:12]).sha == shas[0]  # more of it is unique


def test_nothing_by_that_name_is_not_found_naming_what_was_looked_for(ws: Workspace):
    with pytest.raises(NotFound) as caught:
        ws.resolve("nosuchref")
    assert caught.value.message == (
        "'nosuchref' does not name a commit SHA, branch, tag or run id in this repository; "
        "`git log`, `git tag` and `mlops-ci runs` list them"
    )
    with pytest.raises(NotFound, match="commit SHA, branch, tag, run id, model version or endpoint"):
        ws.resolve("nosuchref", ANYTHING)
    with pytest.raises(UsageError, match="lineage needs a reference"):
        ws.resolve(None, ANYTHING - {RefKind.HEAD}, what="lineage")
    assert COMMITS < ANYTHING


# -- every command takes the same forms -------------------------------------------------------
def _callers(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> dict[str, Callable[[str], str]]:
    """Each command's use of a reference → the commit it ended up working on."""
    from mlops_ci.cli.commands import runs

    head = head_run(ws, None)

    def runs_show(ref: str) -> str:
        capsys.readouterr()
        runs(ws, "show", ref, limit=20, as_json=True)
        return str(json.loads(capsys.readouterr().out)["sha"])

    return {
        "train": lambda ref: train(ws, ref)[0].sha,  # type: ignore[union-attr]  # its run is reused
        "report/gate/promote (head_run)": lambda ref: head_run(ws, ref).sha,
        "report --baseline": lambda ref: find_baseline(ws, head, explicit=ref).run.sha,  # type: ignore[union-attr]
        "runs show": runs_show,
        "deploy": lambda ref: Deployer(ws)._resolve(ref, "production")[0],
        "lineage": lambda ref: str(lineage.lineage(ws, ref)["commit"]["sha"]),
        "Workspace.resolve_sha": ws.resolve_sha,
    }


def test_every_command_taking_a_reference_accepts_the_same_forms(
    project: Project, ws: Workspace, capsys: pytest.CaptureFixture[str]
):
    first = project.git("rev-parse", "HEAD")
    record_run(ws, first)
    sha = project.commit("second")
    project.git("tag", "v1.0.0")
    run = record_run(ws, sha)
    forms = [run.run_id, run.run_id[:12], sha, sha[:7], "v1.0.0", "main", "HEAD"]
    for name, use in _callers(ws, capsys).items():
        assert [use(ref) for ref in forms] == [sha] * len(forms), name
        assert use(f"{first[:8]}-abc123") == first, name  # a run id of another commit


HOSTILE = [
    "a\nb",  # a line break
    "main\r::error::x",
    "::x::",
    "$(touch /tmp/pwned)",
    "x'; touch /tmp/pwned; '",
    "`id`",
    "x;id",
    "a|b&c>d",
    "--config=/dev/null",
    "-x",
    "\x1b[31mred",
    "v1\u202e0",  # a bidi override
    "HEAD:mlops-ci.yaml",
    "main..HEAD",
    "x" * 5000,
]


@pytest.mark.parametrize("ref", HOSTILE)
def test_a_hostile_reference_is_a_one_line_error_in_every_command(
    project: Project, ws: Workspace, capsys: pytest.CaptureFixture[str], ref: str
):
    record_run(ws, project.git("rev-parse", "HEAD"))
    for name, use in _callers(ws, capsys).items():
        with pytest.raises(MlopsCiError) as caught:
            use(ref)
        err = caught.value
        assert err.exit_code in (USAGE, NOT_FOUND), (name, err.message)
        assert "\n" not in err.message and "\r" not in err.message and len(err.message) < 400, (name, err.message)
        assert "is not a git ref" in err.message or "does not name a commit SHA" in err.message, (name, err.message)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--"),
        ("runs", "show", "--"),
        ("report", "--baseline"),
        ("gate", "--"),
        ("promote", "--"),
        ("deploy", "--"),
        ("lineage", "--"),
    ],
)
def test_on_the_command_line_a_hostile_reference_is_one_line_on_stderr(project: Project, args: tuple[str, ...]):
    project.ok("runs")  # the store exists
    for ref in ("a\nb", "::x::", "--config=/dev/null", "$(touch /tmp/pwned)", "x;id"):
        argv = (*args[:-1], f"--baseline={ref}") if args[-1] == "--baseline" else (*args, ref)
        code, out, err = project.cli(*argv)
        assert code in (USAGE, NOT_FOUND) and code != INTERNAL, (argv, err)
        assert err.count("\n") == 1 and err.startswith("mlops-ci: error: "), (argv, err)
        assert out == ""

"""The git store across machines: three clones stand for three CI machines, a bare repository
for GitHub. Nothing connects them but the refs under refs/mlops-ci on the "origin"."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlops_ci.backends.git_store import GitLocation, GitStore
from mlops_ci.errors import ConfigError, MlopsCiError, PermissionDenied
from mlops_ci.records import Run
from tests.conftest import FAST_TRAIN, Project, git, kill_and_wait, run_module, serving_processes
from tests.fakes.git_http import GitHttpServer


class Machine(Project):
    """A clone of origin with its own state directory: what a CI job starts from."""

    def __init__(self, origin: Path, path: Path, monkeypatch: pytest.MonkeyPatch):
        git(path.parent, "clone", "-q", str(origin), str(path))
        super().__init__(path)
        self.mp = monkeypatch

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.mp.setenv("MLOPS_CI_STORE", "git")
        self.mp.setenv("MLOPS_CI_HOME", str(self.path / ".state"))
        return super().cli(*args)

    def pull(self) -> None:
        git(self.path, "fetch", "-q", "--tags", "origin")
        git(self.path, "checkout", "-q", "origin/main")


@pytest.fixture
def origin(project: Project, tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    project.git("remote", "add", "origin", str(bare))
    project.git("push", "-q", "origin", "main")
    return bare


@pytest.fixture
def machines(origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Machine]]:
    made = [Machine(origin, tmp_path / f"machine{i}", monkeypatch) for i in range(3)]
    yield made
    for m in made:
        for name in ("staging", "production"):
            m.cli("endpoint", "stop", name)
        kill_and_wait(serving_processes(m.path / ".state"), m.path / ".state")


def store_refs(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/mlops-ci/").splitlines()


def test_train_gate_on_one_machine_promote_on_another_deploy_on_a_third(project: Project, origin: Path,
                                                                        machines: list[Machine]):  # fmt: skip
    a, b, c = machines
    run = json.loads(a.ok("train", "--json"))["run"]
    assert run["artifact_uri"] == f"git+origin#refs/mlops-ci/artifacts/{run['artifact_sha256']}"
    a.ok("gate")
    project.git("tag", "v1.0.0")
    project.git("push", "-q", "origin", "v1.0.0")
    b.pull()
    assert "promoted fast v1" in b.ok("promote", "v1.0.0")  # finds a's run and verdict
    c.pull()
    dep = json.loads(c.ok("deploy", "v1.0.0", "--json"))  # finds b's version, fetches a's artifact
    assert (dep["version"], dep["sha"], dep["outcome"]) == (1, run["sha"], "succeeded")
    assert c.ok("store", "check").strip() == "git: ok"
    kinds = [json.loads(line)["kind"] for line in a.ok("store", "export").splitlines()]
    assert (kinds.count("run"), kinds.count("verdict"), kinds.count("version"), kinds.count("deployment")) == \
           (1, 1, 1, 1)  # fmt: skip
    # the records live outside branches and tags: a clone of the project shows none of them
    refs = store_refs(origin)
    assert refs == ["refs/mlops-ci/artifacts/" + run["artifact_sha256"], "refs/mlops-ci/store"]
    assert git(origin, "branch", "--list") == "* main" and git(origin, "tag", "--list") == "v1.0.0"
    # the store's commit has no parent: a fresh machine fetches one tree, no history
    assert git(origin, "rev-list", "--count", "refs/mlops-ci/store") == "1"


def test_an_artifact_is_fetched_only_by_the_job_that_uses_it(project: Project, origin: Path,
                                                             machines: list[Machine]):  # fmt: skip
    a, b, _ = machines
    run = json.loads(a.ok("train", "--json"))["run"]
    b.ok("runs")  # reads the records ...
    blob = git(origin, "rev-parse", f"refs/mlops-ci/artifacts/{run['artifact_sha256']}:model.tar.gz")
    missing = subprocess.run(["git", "cat-file", "-e", blob], cwd=b.path, capture_output=True, check=False)
    assert missing.returncode != 0  # ... without the model
    a.ok("gate")
    b.ok("promote", run["sha"])
    dep = json.loads(b.ok("deploy", run["sha"][:12], "--endpoint", "staging", "--json"))
    assert dep["outcome"] == "succeeded"


def test_concurrent_promotes_from_three_machines_get_distinct_versions(project: Project, machines: list[Machine]):
    a = machines[0]
    shas = []
    for q in (0.9, 0.91, 0.92):
        shas.append(project.commit(f"q{q}", quality=q))
        project.git("push", "-q", "origin", "HEAD:main")
        a.pull()
        a.ok("train")
        a.ok("gate")
    for m in machines:
        m.pull()

    def promote(pair: tuple[Machine, str]) -> int:  # a process each: three machines at once
        m, sha = pair
        env = {"MLOPS_CI_STORE": "git", "MLOPS_CI_HOME": str(m.path / ".state")}
        return run_module("promote", sha, cwd=m.path, env=env).returncode

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(promote, zip(machines, shas, strict=True))) == [0, 0, 0]
    versions = json.loads(a.ok("models", "--json"))
    assert sorted(v["version"] for v in versions) == [1, 2, 3]
    assert sorted(v["sha"] for v in versions) == sorted(shas)


def _run(run_id: str, sha: str) -> Run:
    return Run(run_id=run_id, project="p", sha=sha, branch="main", config_digest="c", status="completed",
               backend="local", started=0.0, finished=1.0, params={}, metrics={"acc": 0.9})  # fmt: skip


def test_twenty_rounds_of_concurrent_writes_lose_no_record(tmp_path: Path):
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    stores = []
    for i in range(3):
        clone = tmp_path / f"m{i}"
        git(tmp_path, "init", "-q", str(clone))
        git(clone, "remote", "add", "origin", str(origin))
        stores.append(GitStore(GitLocation(), "p", clone / ".git", env={"PATH": "/usr/bin:/bin"}))
    for r in range(20):
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda i: stores[i].record_run(_run(f"r{r}-m{i}", f"{r:02d}{i:038d}"), {}), range(3)))
    fresh = tmp_path / "reader"
    git(tmp_path, "init", "-q", str(fresh))
    git(fresh, "remote", "add", "origin", str(origin))
    reader = GitStore(GitLocation(), "p", fresh / ".git", env={"PATH": "/usr/bin:/bin"})
    assert len(reader.runs("p", limit=1000)) == 60
    assert len(reader.shas_with_runs("p", [f"{r:02d}{i:038d}" for r in range(20) for i in range(3)])) == 60
    for s in [*stores, reader]:
        s.close()


def test_the_training_script_never_sees_the_jobs_github_token(project: Project, monkeypatch: pytest.MonkeyPatch):
    # the token that may push the store's refs stays mlops-ci's: the script's environment has none
    check = ("import os, sys\n"
             "if {'GITHUB_TOKEN', 'MLOPS_CI_GITHUB_TOKEN'} & set(os.environ): sys.exit('the token leaked')\n"
             "assert os.environ['MLOPS_CI_SOME_SETTING'] == 'kept'\n")  # fmt: skip
    (project.path / "train.py").write_text(check + FAST_TRAIN)
    project.commit("check the environment")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_job")
    monkeypatch.setenv("MLOPS_CI_GITHUB_TOKEN", "ghs_job")
    monkeypatch.setenv("MLOPS_CI_SOME_SETTING", "kept")
    code, _, err = project.cli("train")
    assert code == 0, err


# -- over HTTP, as on GitHub: the job's token, sent by git in a header, never on a command line ------
def _clone_of(server: GitHttpServer, path: Path) -> Path:
    git(path.parent, "init", "-q", str(path))
    git(path, "remote", "add", "origin", f"{server.url}/acme/models.git")
    return path / ".git"


def test_over_http_the_jobs_token_pushes_and_a_missing_one_is_named(server: GitHttpServer, tmp_path: Path):
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    writer = GitStore(GitLocation(), "p", _clone_of(server, tmp_path / "a"), {**base, "GITHUB_TOKEN": "ghs_write"})
    writer.record_run(_run("r1", "a" * 40), {"loss": [1.0]})
    assert server.pushes and all(user == "ghs_write" for user, _ in server.pushes)
    # a fetch needs no token (a public repository); a push without one is refused with the fix
    reader = GitStore(GitLocation(), "p", _clone_of(server, tmp_path / "b"), base)
    assert reader.get_run("r1") is not None
    with pytest.raises(PermissionDenied, match=r"needs `permissions: contents: write`"):
        reader.record_run(_run("r2", "b" * 40), {})
    assert server.refused == ["push without valid credentials"]
    # MLOPS_CI_GITHUB_TOKEN comes first, as for every other GitHub call
    both = GitStore(GitLocation(), "p", _clone_of(server, tmp_path / "c"),
                    {**base, "GITHUB_TOKEN": "ghs_read", "MLOPS_CI_GITHUB_TOKEN": "ghs_write"})  # fmt: skip
    both.record_run(_run("r3", "c" * 40), {})
    fresh = GitStore(GitLocation(), "p", _clone_of(server, tmp_path / "d"), base)
    assert sorted(r.run_id for r in fresh.runs("p")) == ["r1", "r3"]
    for s in (writer, reader, both, fresh):
        s.close()


def test_a_checkouts_persisted_credentials_are_not_sent_twice(server: GitHttpServer, tmp_path: Path):
    # actions/checkout with persist-credentials (its default) leaves an extraheader for the host in
    # the clone's config; a second Authorization header would make the request ambiguous
    git_dir = _clone_of(server, tmp_path / "a")
    basic = base64.b64encode(b"x-access-token:ghs_write").decode()
    git(git_dir.parent, "config", f"http.{server.url}/.extraheader", f"AUTHORIZATION: basic {basic}")
    store = GitStore(GitLocation(), "p", git_dir, {"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "ghs_other"})
    assert "GIT_CONFIG_COUNT" not in store._env
    store.record_run(_run("r1", "a" * 40), {})
    assert {user for user, _ in server.pushes} == {"ghs_write"}
    store.close()


def test_a_shallow_checkout_reads_and_writes_the_store(project: Project, origin: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    a = Machine(origin, tmp_path / "full", monkeypatch)
    run = json.loads(a.ok("train", "--json"))["run"]
    shallow = tmp_path / "shallow"  # what actions/checkout gives by default: fetch-depth 1
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(shallow))
    m = Machine.__new__(Machine)
    m.path, m.mp = shallow, monkeypatch
    assert [r["run_id"] for r in json.loads(m.ok("runs", "--json"))] == [run["run_id"]]
    code, _, err = m.cli("gate", run["sha"])  # no history here: the baseline is unknown, the gate fails closed
    assert code == 1 and "baseline could not be determined" in err
    kinds = [json.loads(line)["kind"] for line in a.ok("store", "export").splitlines()]
    assert kinds.count("verdict") == 1  # ... and its verdict was pushed from the shallow clone
    assert git(shallow, "rev-parse", "--is-shallow-repository") == "true"
    assert len(git(shallow, "rev-list", "--branches", "--tags").split()) == 1  # fetched no project history


def test_store_check_names_an_artifact_deleted_from_the_remote(project: Project, origin: Path,
                                                               machines: list[Machine]):  # fmt: skip
    a, b, _ = machines
    run = json.loads(a.ok("train", "--json"))["run"]
    git(origin, "update-ref", "-d", f"refs/mlops-ci/artifacts/{run['artifact_sha256']}")
    code, out, err = b.cli("store", "check")
    assert code == 14
    assert f"artifact git+origin#refs/mlops-ci/artifacts/{run['artifact_sha256']} is missing" in out + err


def test_moving_from_the_local_store_to_the_git_store_keeps_history(project: Project, machines: list[Machine],
                                                                   tmp_path: Path):  # fmt: skip
    project.ok("train")
    project.ok("gate")
    project.ok("promote")
    export = tmp_path / "history.jsonl"
    project.ok("store", "export", "--output", str(export))
    code, _, err = project.cli("--store", "git", "store", "import", str(export))
    assert code == 0, err
    assert "1 run(s), 1 verdict(s), 1 version(s), 0 deployment(s), 0 skipped(s)" in err
    a = machines[0]  # another machine sees all of it, with the artifact in the repository's refs
    assert a.ok("store", "check").strip() == "git: ok"
    (version,) = json.loads(a.ok("models", "--json"))
    assert version["artifact_uri"].startswith("git+origin#refs/mlops-ci/artifacts/")
    assert "already fast v1" in a.ok("promote", version["sha"])


def test_the_token_goes_to_github_only_and_no_remote_runs_a_command(tmp_path: Path):
    clone = tmp_path / "c"
    git(tmp_path, "init", "-q", str(clone))
    token = {"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "ghs_secret"}
    # a store URL naming another host (a pull request may change mlops-ci.yaml) gets no token
    other = GitStore(GitLocation.parse("git+https://collector.example/x.git"), "p", clone / ".git", token)
    assert "GIT_CONFIG_COUNT" not in other._env
    on_github = GitStore(GitLocation.parse("git+https://github.com/acme/models.git"), "p", clone / ".git", token)
    assert on_github._env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraheader"
    # GitHub Enterprise Server: its own host, from GITHUB_SERVER_URL
    ghes = GitStore(GitLocation.parse("git+https://ghe.example/acme/models.git"), "p", clone / ".git",
                    {**token, "GITHUB_SERVER_URL": "https://ghe.example"})  # fmt: skip
    assert ghes._env["GIT_CONFIG_KEY_0"] == "http.https://ghe.example/.extraheader"
    # git's ext:: transport runs a command: never allowed, whatever the git config says
    marker = tmp_path / "ran"
    git(clone, "config", "protocol.ext.allow", "always")
    with pytest.raises(ConfigError, match="not a remote name or URL"):
        GitLocation.parse(f"git+ext::sh -c touch% {marker}")
    git(clone, "remote", "add", "evil", f"ext::sh -c touch% {marker}")  # a remote's name hides it
    hostile = GitStore(GitLocation.parse("git+evil"), "p", clone / ".git", token)
    with pytest.raises(MlopsCiError):
        hostile.runs("p")
    assert not marker.exists()
    for s in (other, on_github, ghes, hostile):
        s.close()


def test_the_requirements_install_never_sees_the_token_either(project: Project, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path):  # fmt: skip
    # a local package in requirements.txt runs its setup.py during the job's pip install
    pkg = project.path / "localpkg"
    pkg.mkdir()
    seen = tmp_path / "pip-env"
    (pkg / "setup.py").write_text(
        "import os\nfrom setuptools import setup\n"
        f"open({str(seen)!r}, 'w').write(repr(sorted(k for k in os.environ if k.endswith('TOKEN'))))\n"
        "setup(name='localpkg', version='0.0.1', py_modules=[])\n"
    )
    (project.path / "requirements.txt").write_text("./localpkg\n")
    project.commit("a local requirement")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_job")
    monkeypatch.setenv("MLOPS_CI_GITHUB_TOKEN", "ghs_job")
    code, _, err = project.cli("train")
    assert code == 0 and seen.exists(), err
    assert "GITHUB_TOKEN" not in seen.read_text(), seen.read_text()

"""`mlops-ci doctor` in process, against the fake GitHub REST API (driven by the real PyGithub
client), IAM and S3 as moto implements them, and the fake Comet REST API."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from mlops_ci.doctor import OIDC_HOST, SECRETS, VARIABLES, ref_matches, referenced_names, trust_verdict
from mlops_ci.records import EndpointState
from tests.conftest import ROOT, git
from tests.fakes.github_api import ADMIN, ALL_PERMISSIONS, Account, EnvironmentSetup, FakeGitHub, RepoSetup

REPO = "acme/models"
TOKEN = "github_pat_doctor0123456789"  # a fine-grained PAT of a repository admin
WRITER = "github_pat_writer"  # the same admin's token that may change settings (applies doctor's fixes)
OCTOCAT = 583231  # TOKEN's account id
ACCOUNT = "123456789012"  # moto's account
TRAIN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fast-mlops-ci-train"
DEPLOY_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fast-mlops-ci-deploy"
BUCKET = "mlops-ci-store"
STORE = f"s3://{BUCKET}/team"
CHECK = "mlops-ci / fast"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    fake = FakeGitHub(
        tokens={TOKEN: ADMIN, "github_pat_plain": ALL_PERMISSIONS, "ghs_actions": ALL_PERMISSIONS,
                "github_pat_no_envs": ADMIN - {"environments:read"}, WRITER: ADMIN | {"administration:write"}},
        accounts={TOKEN: Account("octocat", OCTOCAT, installation=False),
                  "github_pat_plain": Account("dev", 4242, installation=False)},
    ).start()  # fmt: skip
    yield fake
    fake.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """IAM (the OIDC provider, the two roles with the trust policies of docs/iam/) and the store's
    bucket, as moto implements them, in process."""
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        import boto3

        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_open_id_connect_provider(Url=f"https://{OIDC_HOST}", ClientIDList=["sts.amazonaws.com"],
                                           ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"])  # fmt: skip
        for arn, doc in ((TRAIN_ROLE, "training-role-trust.json"), (DEPLOY_ROLE, "deploy-role-trust.json")):
            iam.create_role(RoleName=arn.rsplit("/", 1)[1], AssumeRolePolicyDocument=trust(doc))
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield iam


def trust(name: str, repo: str = REPO) -> str:
    """A trust policy of docs/iam/ with its placeholders filled in, as a user would."""
    text = (ROOT / "docs" / "iam" / name).read_text()
    owner, repo_name = repo.split("/")
    return text.replace("ACCOUNT_ID", ACCOUNT).replace("OWNER", owner).replace("REPO", repo_name)


def complete(**changes: Any) -> RepoSetup:
    """A repository set up as docs/sagemaker.md and docs/store.md ask."""
    setup = RepoSetup(
        variables={"MLOPS_CI_STORE": STORE, "MLOPS_CI_AWS_ROLE": TRAIN_ROLE, "MLOPS_CI_AWS_REGION": "us-east-1"},
        secrets=["COMET_API_KEY"],
        environments={
            "staging": EnvironmentSetup(branch_policy="custom", policies=[("v*", "tag")],
                                        variables={"MLOPS_CI_AWS_ROLE": DEPLOY_ROLE}),
            "production": EnvironmentSetup(reviewers=["octocat"], branch_policy="custom", policies=[("v*", "tag")],
                                           variables={"MLOPS_CI_AWS_ROLE": DEPLOY_ROLE}),
            "fork-training": EnvironmentSetup(reviewers=["octocat"]),
        },
        rules={"main": ["lint", CHECK]},
    )  # fmt: skip
    for k, v in changes.items():
        setattr(setup, k, v)
    return setup


def config(*, comet: bool = False, sagemaker: bool = False, store: str | None = None, signing: bool = False) -> str:
    text = "project: fast\n" + (f"store: {store}\n" if store else "")
    if signing:
        text += "gate:\n  signing_key: alias/mlops-ci-signing\n"
    if comet:
        text += "tracking:\n  backend: comet\n  workspace: acme\n"
    if sagemaker:
        text += "training:\n  backend: sagemaker\n  sagemaker: {framework: sklearn, framework_version: '1.2-1'}\n"
        text += f"aws: {{region: us-east-1, role: 'arn:aws:iam::{ACCOUNT}:role/sm-exec', bucket: mlops-ci-data}}\n"
    return text


class Repo:
    def __init__(self, path: Path):
        self.path = path

    def doctor(self, *args: str) -> tuple[int, str, str]:
        from mlops_ci.cli import main

        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["-C", str(self.path), "doctor", *args])
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def repo(tmp_path: Path, gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "mlops-ci.yaml").write_text(config())
    git(path, "init", "-q", "-b", "main")
    for k, v in {"GITHUB_API_URL": gh.base_url, "GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO}.items():
        monkeypatch.setenv(k, v)
    return Repo(path)


def documents(out: str) -> list[Any]:
    """The JSON documents on stdout (the report; the CLI may add an error document after a failure)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while out[at:].strip():
        doc, at = decoder.raw_decode(out, at + len(out[at:]) - len(out[at:].lstrip()))
        docs.append(doc)
    return docs


def marked(out: str, mark: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(mark)]


def check_of(out: str, check_id: str) -> dict[str, Any]:
    """One check of a `--json` report."""
    (check,) = [c for c in documents(out)[0]["checks"] if c["id"] == check_id]
    return dict(check)


def apply_fix(fake: FakeGitHub, fix: list[str]) -> None:
    """Run the `gh api` commands of a fix against the fake as gh sends them (cli.github.com/manual/
    gh_api: `-X` the method; `--input -` the body from stdin, here the heredoc, where an unquoted
    `<<EOF` lets the shell expand `$(gh api user --jq .id)` to the caller's id; each `-f key=value`
    a string field of the JSON body). Comment lines are skipped."""
    import requests

    for command in fix:
        first, *rest = command.split("\n")
        if not first.startswith("gh api "):
            assert first.startswith("#"), command
            continue
        words = shlex.split(first.split(" <<", 1)[0])
        method, path = words[words.index("-X") + 1], words[4]
        body: Any = {}
        if "--input" in words:
            text = "\n".join(rest[:-1])
            if "<<EOF" in first:
                text = text.replace("$(gh api user --jq .id)", str(OCTOCAT))
            body = json.loads(text)
        for i, word in enumerate(words):
            if word == "-f":
                key, _, value = words[i + 1].partition("=")
                body[key] = value
        r = requests.request(method, f"{fake.base_url}/{path}", json=body or None, timeout=10,
                             headers={"Authorization": f"token {WRITER}"})  # fmt: skip
        assert r.status_code < 300, (command, r.status_code, r.text)


def fixes_of(out: str, title: str) -> str:
    """The lines printed under one check (its fix and console path)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("[") and line[10:].startswith(title))
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        block.append(line.strip())
    return "\n".join(block)


# -- the checklist ------------------------------------------------------------------------------
def test_two_missing_names_and_the_required_check_are_the_three_misses(repo: Repo, gh: FakeGitHub, aws: Any):
    (repo.path / "mlops-ci.yaml").write_text(config(comet=True))
    setup = complete(secrets=[], rules={"main": ["lint"]})
    del setup.variables["MLOPS_CI_AWS_REGION"]
    gh.setups[REPO] = setup
    code, out, err = repo.doctor()
    assert code == 2, err
    assert marked(out, "[MISSING]") == [
        "[MISSING] variable MLOPS_CI_AWS_REGION: not set; needed because the store is s3://mlops-ci-store/team",
        "[MISSING] secret COMET_API_KEY: not set; needed because tracking.backend is comet",
        f"[MISSING] required check '{CHECK}' on main: not required (required now: lint): a failed gate would not "
        "block the merge",
    ]
    assert fixes_of(out, "variable MLOPS_CI_AWS_REGION").startswith(
        "fix: gh variable set MLOPS_CI_AWS_REGION --repo acme/models --body us-east-1"
    )
    assert fixes_of(out, "secret COMET_API_KEY").startswith("fix: gh secret set COMET_API_KEY --repo acme/models")
    ruleset = fixes_of(out, "required check")
    assert ruleset.startswith("fix: gh api -X POST repos/acme/models/rulesets --input - <<'EOF'")
    body = json.loads(ruleset.splitlines()[1])
    assert body["rules"][0]["parameters"]["required_status_checks"] == [{"context": CHECK}]
    assert body["conditions"]["ref_name"]["include"] == ["~DEFAULT_BRANCH"]
    assert "Settings → Rules → Rulesets" in ruleset
    # the Comet key cannot be read back from GitHub: said, not counted as missing
    assert marked(out, "[UNKNOWN]") == ["[UNKNOWN] Comet key (workspace acme): could not check: the key is a GitHub "
                                        "secret and no API returns its value; set $COMET_API_KEY here to check the key "
                                        "you stored"]  # fmt: skip
    assert out.rstrip().endswith("3 missing, 1 could not be checked, 10 ok")
    assert "set-up incomplete: 3 item(s) to fix" in err and "secret COMET_API_KEY" in err
    code, out, _ = repo.doctor("--json")
    report = documents(out)[0]
    assert code == 2 and report["ok"] is False and report["summary"] == {"ok": 10, "missing": 3, "could_not_check": 1}
    (check,) = [c for c in report["checks"] if c["status"] == "missing" and c["id"] == "secret:COMET_API_KEY"]
    assert check["fix"][0].startswith("gh secret set COMET_API_KEY --repo acme/models")


def test_a_complete_set_up_passes(repo: Repo, gh: FakeGitHub, aws: Any):
    (repo.path / "mlops-ci.yaml").write_text(config(sagemaker=True))
    gh.setups[REPO] = complete()
    code, out, err = repo.doctor()
    assert code == 0, out + err
    checks = [line for line in out.splitlines() if line.startswith("[")]
    assert checks and all(line.startswith("[ok]") for line in checks), out
    assert f"[ok]      AWS OIDC trust of role fast-mlops-ci-train (MLOPS_CI_AWS_ROLE): trusts repo:{REPO}:ref:refs/" \
           in out  # fmt: skip
    assert f"repo:{REPO}:environment:fork-training" in out  # SageMaker training: forks train after approval
    assert f"[ok]      AWS OIDC trust of role fast-mlops-ci-deploy (environment staging's MLOPS_CI_AWS_ROLE): " \
           f"trusts repo:{REPO}:environment:staging, repo:{REPO}:environment:production" in out  # fmt: skip
    assert f"{STORE} is readable and writable as arn:aws:sts::{ACCOUNT}:user/moto" in out
    import boto3

    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # the probe is gone
    (doc,) = documents(repo.doctor("--json")[1])
    assert doc["ok"] is True and doc["summary"] == {"ok": len(checks), "missing": 0, "could_not_check": 0}
    assert {c["id"] for c in doc["checks"]} >= {
        "variable:MLOPS_CI_AWS_ROLE", "environment:production", "required-check", "workflow-permissions",
        "fork-approval", "oidc:fast-mlops-ci-train", "oidc:fast-mlops-ci-deploy", "store",
    }  # fmt: skip
    # every call was a read
    assert gh.writes() == 0 and gh.requests


def test_a_token_without_the_settings_permissions_says_what_it_could_not_check(
    repo: Repo, gh: FakeGitHub, aws: Any, monkeypatch: pytest.MonkeyPatch
):
    (repo.path / "mlops-ci.yaml").write_text(config(comet=True, store=STORE))
    gh.setups[REPO] = complete(rules={})
    monkeypatch.setenv("GITHUB_TOKEN", "github_pat_plain")
    code, out, err = repo.doctor()
    assert code == 0, err  # nothing is known to be missing
    unknown = marked(out, "[UNKNOWN]")
    by_title = {line.split(":")[0].removeprefix("[UNKNOWN] "): line for line in unknown}
    assert set(by_title) == {"variable MLOPS_CI_AWS_REGION", "variable MLOPS_CI_AWS_ROLE",
                             "variable MLOPS_CI_FORK_REVIEW", "secret COMET_API_KEY",
                             f"required check '{CHECK}' on main", "workflow token default", "fork PR approval",
                             "AWS OIDC trust", "store (mlops-ci.yaml)", "Comet key (workspace acme)"}  # fmt: skip
    assert ("could not check: GitHub answered 403 (Resource not accessible by personal access token); the token needs "
            "`Variables: read` (fine-grained token) or the `repo` scope (classic token); GITHUB_TOKEN cannot be given "
            "it (GitHub accepts: actions_variables=read)") in by_title["variable MLOPS_CI_AWS_ROLE"]  # fmt: skip
    assert "`Secrets: read`" in by_title["secret COMET_API_KEY"]
    assert "branch protection: GitHub answered 403" in by_title[f"required check '{CHECK}' on main"]
    assert "`Administration: read`" in by_title["workflow token default"]
    assert "console:" in fixes_of(out, "workflow token default")
    # what the token may read is still checked: environments need only Actions: read
    assert "[ok]      environment production: 1 required reviewer(s), deployments from tag v*" in out
    # mlops-ci.yaml's store is checked, but the jobs use the variable's if it is set
    assert by_title["store (mlops-ci.yaml)"].endswith(f"which they use otherwise; {STORE} is readable and writable "
                                                      f"as arn:aws:sts::{ACCOUNT}:user/moto")  # fmt: skip
    assert "4 item(s) could not be checked" not in err and "could not be checked (see above)" in err
    code, _, err = repo.doctor("--strict")
    assert code == 2 and "variable MLOPS_CI_AWS_ROLE" in err
    # GITHUB_TOKEN (an installation token) is told so in GitHub's own words
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_actions")
    code, out, _ = repo.doctor()
    assert code == 0
    assert "GitHub answered 403 (Resource not accessible by integration)" in out


def test_an_unreadable_environment_role_is_not_guessed(repo: Repo, gh: FakeGitHub, aws: Any,
                                                      monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    gh.setups[REPO] = complete()
    monkeypatch.setenv("GITHUB_TOKEN", "github_pat_no_envs")
    code, out, _ = repo.doctor()
    # the release jobs assume staging's and production's own role, which this token cannot read:
    # checking the repository's role against their subjects would report a miss that is not one
    assert code == 0, out
    assert [line.split(":")[0] for line in marked(out, "[UNKNOWN]")] == [
        "[UNKNOWN] AWS OIDC trust of environment staging",
        "[UNKNOWN] AWS OIDC trust of environment production",
    ]
    assert "`Variables: read` and `Environments: read`" in out
    assert f"[ok]      AWS OIDC trust of role fast-mlops-ci-train (MLOPS_CI_AWS_ROLE): trusts repo:{REPO}:ref:" in out


def test_a_rejected_token_stops_doctor(repo: Repo, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked")
    code, out, err = repo.doctor()
    assert code == 13 and out == ""
    assert "GitHub rejected the token (401 Bad credentials)" in err and "ghp_revoked" not in err


def test_a_repository_the_token_cannot_see_is_not_found(repo: Repo, gh: FakeGitHub):
    gh.inject("GET", r"^/repos/acme/models$", 404, message="Not Found")
    code, out, err = repo.doctor()
    assert code == 4 and out == ""
    assert "GitHub has no repository acme/models, or the token cannot see it" in err


# -- the OIDC trust --------------------------------------------------------------------------------
def test_a_trust_policy_for_another_repository_is_missing_with_the_policy_to_set(repo: Repo, gh: FakeGitHub,
                                                                                aws: Any):  # fmt: skip
    own = json.loads(trust("training-role-trust.json", "acme/other"))
    # the role's other statements (another repository's jobs, a break-glass principal) are the
    # owner's business: the fix keeps them
    glass = {"Sid": "BreakGlass", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
             "Action": "sts:AssumeRole"}  # fmt: skip
    own["Statement"].append(glass)
    aws.update_assume_role_policy(RoleName="fast-mlops-ci-train", PolicyDocument=json.dumps(own))
    gh.setups[REPO] = complete()
    code, out, _ = repo.doctor()
    assert code == 2
    (miss,) = marked(out, "[MISSING]")
    assert miss == (f"[MISSING] AWS OIDC trust of role fast-mlops-ci-train (MLOPS_CI_AWS_ROLE): does not admit "
                    f"repo:{REPO}:ref:refs/heads/main, repo:{REPO}:ref:refs/heads/feature/any-branch, "
                    f"repo:{REPO}:pull_request")  # fmt: skip
    fix = fixes_of(out, "AWS OIDC trust of role fast-mlops-ci-train")
    policy = json.loads(fix.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])
    other, kept_glass, st = policy["Statement"]
    assert (other, kept_glass) == (own["Statement"][0], glass) and policy["Version"] == "2012-10-17"
    assert st["Principal"]["Federated"] == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_HOST}"
    assert st["Condition"]["StringLike"][f"{OIDC_HOST}:sub"] == [f"repo:{REPO}:pull_request",
                                                                 f"repo:{REPO}:ref:refs/heads/*"]  # fmt: skip
    assert (
        "aws iam update-assume-role-policy --role-name fast-mlops-ci-train --policy-document file://trust.json" in fix
    )
    # the fix, applied, passes, and the role still has its other statements
    aws.update_assume_role_policy(RoleName="fast-mlops-ci-train", PolicyDocument=json.dumps(policy))
    assert repo.doctor()[0] == 0
    assert glass in aws.get_role(RoleName="fast-mlops-ci-train")["Role"]["AssumeRolePolicyDocument"]["Statement"]


def test_a_trust_policy_without_a_subject_condition_is_missing(repo: Repo, gh: FakeGitHub, aws: Any):
    open_to_all = json.loads(trust("deploy-role-trust.json"))
    del open_to_all["Statement"][0]["Condition"]["StringEquals"][f"{OIDC_HOST}:sub"]
    aws.update_assume_role_policy(RoleName="fast-mlops-ci-deploy", PolicyDocument=json.dumps(open_to_all))
    gh.setups[REPO] = complete()
    code, out, _ = repo.doctor()
    assert code == 2
    (miss,) = marked(out, "[MISSING]")
    assert "fast-mlops-ci-deploy" in miss and "every repository on GitHub could assume the role" in miss


def test_the_trust_verdict_follows_iam_condition_operators():
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_HOST}"

    def doc(op: str, sub: Any, aud: str = "sts.amazonaws.com") -> dict[str, Any]:
        condition: dict[str, Any] = {"StringEquals": {f"{OIDC_HOST}:aud": aud}}
        condition.setdefault(op, {})[f"{OIDC_HOST}:sub"] = sub
        return {"Statement": {"Effect": "Allow", "Principal": {"Federated": provider},
                              "Action": ["sts:AssumeRoleWithWebIdentity"], "Condition": condition}}  # fmt: skip

    main = f"repo:{REPO}:ref:refs/heads/main"
    assert trust_verdict(doc("StringLike", f"repo:{REPO}:*"), [main]).problems == []
    assert trust_verdict(doc("StringLike", "repo:acme/model?:ref:refs/heads/main"), [main]).problems == []
    # `[` is literal in IAM, never a character class
    assert trust_verdict(doc("StringLike", "repo:acme/[m]odels:*"), [main]).problems
    assert trust_verdict(doc("StringEquals", f"repo:{REPO}:*"), [main]).problems == [f"does not admit {main}"]
    assert trust_verdict(doc("StringLike", f"repo:{REPO}:*", aud="other"), [main]).problems == [
        f"does not admit {main}"
    ]
    assert trust_verdict({"Statement": []}, [main]).problems[0].startswith("the trust policy has no statement")


# -- environments, store, Comet -----------------------------------------------------------------------
def test_unprotected_environments_get_their_protection_commands(repo: Repo, gh: FakeGitHub, aws: Any):
    (repo.path / "mlops-ci.yaml").write_text(config(sagemaker=True))
    setup = complete()
    setup.environments["production"] = EnvironmentSetup(branch_policy="custom", policies=[("main", "branch")],
                                                        variables={"MLOPS_CI_AWS_ROLE": DEPLOY_ROLE})  # fmt: skip
    setup.environments["fork-training"] = EnvironmentSetup(reviewers=["octocat"], branch_policy="custom",
                                                           policies=[("v*", "tag")])  # fmt: skip
    del setup.environments["staging"]
    gh.setups[REPO] = setup
    code, out, _ = repo.doctor()
    assert code == 2
    assert marked(out, "[MISSING]") == [
        "[MISSING] environment staging: does not exist (a job that names it creates it unprotected)",
        "[MISSING] environment production: no required reviewers; no tag rule admits release tags like v1.2.3 "
        "(branch main)",
        "[MISSING] environment fork-training: its deployment branches (tag v*) exclude main, the branch the "
        "fork-training job runs on",
        # without a staging environment (and its MLOPS_CI_AWS_ROLE) an rc tag's job would assume the training role
        f"[MISSING] AWS OIDC trust of role fast-mlops-ci-train (MLOPS_CI_AWS_ROLE): does not admit "
        f"repo:{REPO}:environment:staging",
    ]
    production = fixes_of(out, "environment production")
    assert production.splitlines()[:4] == [
        "fix: # the PUT repeats the environment's current settings: it sets them all anew",
        "gh api -X PUT repos/acme/models/environments/production --input - <<EOF",
        '{"deployment_branch_policy": {"protected_branches": false, "custom_branch_policies": true}, '
        '"reviewers": [{"type": "User", "id": $(gh api user --jq .id)}]}',
        "EOF",
    ]
    assert "gh api -X POST repos/acme/models/environments/production/deployment-branch-policies -f name='v*' " \
           "-f type=tag" in production  # fmt: skip
    # fork-training has its reviewers: only the missing branch rule is added, nothing is PUT
    assert fixes_of(out, "environment fork-training").splitlines()[0] == (
        "fix: gh api -X POST repos/acme/models/environments/fork-training/deployment-branch-policies -f name=main "
        "-f type=branch")  # fmt: skip
    assert "reviewers" not in fixes_of(out, "environment staging").lower()  # optional there
    # the fixes, applied, leave nothing missing in the environments
    _, out, _ = repo.doctor("--json")
    for name in ("staging", "production", "fork-training"):
        apply_fix(gh, check_of(out, f"environment:{name}")["fix"])
    _, out, _ = repo.doctor("--json")
    assert [check_of(out, f"environment:{n}")["status"] for n in ("staging", "production", "fork-training")] == \
        ["ok", "ok", "ok"]  # fmt: skip
    assert gh.setups[REPO].environments["production"].reviewers == ["octocat"]


def test_store_problems_name_the_fix(repo: Repo, gh: FakeGitHub, aws: Any):
    variables = {"MLOPS_CI_STORE": "s3://no-such-bucket-here/team", "MLOPS_CI_AWS_ROLE": TRAIN_ROLE,
                 "MLOPS_CI_AWS_REGION": "eu-west-1"}  # fmt: skip
    gh.setups[REPO] = complete(variables=variables)
    code, out, _ = repo.doctor("--read-only")
    assert code == 2
    assert marked(out, "[MISSING]") == [
        "[MISSING] store (repository variable MLOPS_CI_STORE): the bucket no-such-bucket-here does not exist"
    ]
    assert fixes_of(out, "store").startswith(
        "fix: aws s3api create-bucket --bucket no-such-bucket-here --region "
        "eu-west-1 --create-bucket-configuration LocationConstraint=eu-west-1"
    )
    # a local store dies with the runner
    (repo.path / "mlops-ci.yaml").write_text(config(store="sqlite:///.mlops-ci/store.db"))
    gh.setups[REPO] = complete(variables={"MLOPS_CI_AWS_ROLE": TRAIN_ROLE, "MLOPS_CI_AWS_REGION": "us-east-1"})
    code, out, _ = repo.doctor()
    (miss,) = marked(out, "[MISSING]")
    assert miss.startswith("[MISSING] store (mlops-ci.yaml): sqlite:///.mlops-ci/store.db is a file on the runner")
    assert "gh variable set MLOPS_CI_STORE --repo acme/models --body git" in fixes_of(out, "store (mlops-ci.yaml)")
    # --read-only: readable, writing not checked, nothing written
    gh.setups[REPO] = complete()
    code, out, _ = repo.doctor("--read-only")
    assert code == 0 and f"{STORE} is readable as arn:aws:sts::{ACCOUNT}:user/moto (--read-only" in out


def with_origin(repo: Repo, tmp_path: Path) -> Path:
    """An empty bare repository as the clone's `origin`, where a git store's refs would be."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(repo.path, "remote", "add", "origin", str(origin))
    return origin


def test_without_a_store_the_jobs_use_the_repositorys_own_refs(repo: Repo, gh: FakeGitHub, aws: Any, tmp_path: Path):
    # no MLOPS_CI_STORE and no `store:` in mlops-ci.yaml: the starter workflows' default, git
    gh.setups[REPO] = complete(variables={"MLOPS_CI_AWS_ROLE": TRAIN_ROLE, "MLOPS_CI_AWS_REGION": "us-east-1"})
    origin = with_origin(repo, tmp_path)
    _, out, err = repo.doctor("--json")
    check = check_of(out, "store")
    assert (check["title"], check["status"]) == ("store (the workflows' default)", "ok"), out + err
    assert "no records on origin yet (the first job that writes creates refs/mlops-ci/store)" in check["detail"]
    # after a job wrote a run with its model, both are there
    from mlops_ci.backends.git_store import GitLocation, GitStore

    machine = tmp_path / "machine"
    git(tmp_path, "clone", "-q", str(origin), str(machine))
    store = GitStore(GitLocation(), "fast", machine / ".git", {"PATH": os.environ["PATH"]})
    (tmp_path / "model.tar.gz").write_bytes(b"model")
    store.put_artifact(tmp_path / "model.tar.gz", "a" * 64)
    store.put_endpoint_state(EndpointState("fast", "prod", "http://x", 1, 2, 3, 4, 1, "a" * 40, "InService", 1.0))
    store.close()
    _, out, _ = repo.doctor("--json")
    assert "refs/mlops-ci/store and 1 artifact ref(s) on origin" in check_of(out, "store")["detail"]
    # the remote is unreachable: unknown, not missing
    git(repo.path, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    _, out, _ = repo.doctor("--json")
    assert check_of(out, "store")["status"] == "could_not_check"


def test_the_comet_key_is_checked_when_it_is_here(repo: Repo, gh: FakeGitHub, aws: Any,
                                                  monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from tests.fakes.comet import FakeComet, serve

    (repo.path / "mlops-ci.yaml").write_text(config(comet=True))
    gh.setups[REPO] = complete()
    fake = FakeComet(api_key="comet-good-key-0123456789")
    with serve(fake) as url:
        monkeypatch.setenv("COMET_URL_OVERRIDE", f"{url}/clientlib/")
        monkeypatch.setenv("COMET_ERROR_TRACKING_ENABLE", "false")  # what mlops-ci sets for comet_ml
        monkeypatch.setenv("COMET_API_KEY", "comet-bad-key-0123456789")
        code, out, err = repo.doctor()
        assert code == 2
        (miss,) = marked(out, "[MISSING]")
        assert miss == "[MISSING] Comet key (workspace acme): Comet rejected the key in $COMET_API_KEY"
        assert "comet-bad-key" not in out + err
        monkeypatch.setenv("COMET_API_KEY", "comet-good-key-0123456789")
        code, out, _ = repo.doctor()
        assert code == 0
        assert "[ok]      Comet key (workspace acme): the key is valid (Comet has no project fast yet" in out


# -- hostile input ---------------------------------------------------------------------------------
HOSTILE = "x\n::error title=pwned::owned\r##[warning]forged\u2028[ok]      all good `$(id)` <b>**bold**</b>"


def test_hostile_names_and_values_stay_on_their_line(repo: Repo, gh: FakeGitHub, aws: Any,
                                                     monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    setup = complete(rules={"main": [f"lint{HOSTILE}"]})
    setup.variables["MLOPS_CI_AWS_ROLE"] = f"arn:aws:iam::{ACCOUNT}:role/r{HOSTILE}"
    setup.variables[f"NAME{HOSTILE}"] = HOSTILE
    setup.secrets.append(f"SECRET{HOSTILE}")
    setup.environments["production"].policies = [(f"v*{HOSTILE}", "tag")]
    setup.environments[f"env{HOSTILE}"] = EnvironmentSetup()
    gh.setups[REPO] = setup
    code, out, err = repo.doctor()
    assert code == 2
    lines = out.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("::")]  # `##[` matters under Actions only
    assert len(marked(out, "[ok]")) == documents(repo.doctor("--json")[1])[0]["summary"]["ok"]  # none forged
    assert "[MISSING] AWS OIDC trust of MLOPS_CI_AWS_ROLE: 'arn:aws:iam::123456789012:role/rx\\n::error " in out
    assert "required now: lintx\\n::error title=pwned::owned\\r##[warning]forged\\u2028[ok]" in out
    assert "(tag v*x\\n::error" in out
    # under Actions the checklist is one stop-commands block, and the error is our own command
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, err = repo.doctor()
    token = re.fullmatch(r"::stop-commands::([0-9a-f]{32})", out.splitlines()[0])
    assert token and out.rstrip().splitlines()[-1] == f"::{token.group(1)}::"
    body = out.rstrip().splitlines()[1:-1]
    assert not [line for line in body if line.lstrip().startswith("::") or "##[" in line]
    assert [line for line in err.splitlines() if line.startswith("::")][-1].startswith("::error::set-up incomplete")
    # --json keeps the values exactly (JSON escapes the line breaks)
    monkeypatch.delenv("GITHUB_ACTIONS")
    code, out, _ = repo.doctor("--json")
    report = documents(out)[0]
    (check,) = [c for c in report["checks"] if c["id"] == "required-check"]
    assert f"lint{HOSTILE}" in check["detail"]
    assert code == 2 and report["ok"] is False


# -- plumbing ----------------------------------------------------------------------------------------
def test_the_repository_comes_from_the_origin_remote(repo: Repo, gh: FakeGitHub, aws: Any,
                                                     monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    gh.setups[REPO] = complete()
    monkeypatch.delenv("GITHUB_REPOSITORY")
    code, _, err = repo.doctor()
    assert code == 2 and "pass --repo OWNER/NAME" in err
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    git(repo.path, "remote", "add", "origin", "git@github.example:acme/models.git")
    code, out, err = repo.doctor()
    assert code == 0, err
    assert out.startswith("mlops-ci doctor: acme/models (default branch main)")
    assert repo.doctor("--repo", "not a repo")[0] == 2


def test_doctor_knows_every_name_the_workflows_and_actions_read():
    templates = next(d for d in (ROOT / "workflow-templates", ROOT / "workflow_templates") if d.is_dir())
    texts = [p.read_text() for p in sorted(templates.glob("*.yml"))]
    assert len(texts) >= 5
    texts += [(ROOT / "action.yml").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "actions").glob("*/action.yml"))]
    variables, secrets = referenced_names(texts)
    from mlops_ci.doctor import shipped_names

    assert (variables, secrets) == shipped_names()  # the package's copies say the same
    assert variables == set(VARIABLES) and secrets == set(SECRETS)


# -- what could not be read is never guessed ---------------------------------------------------------
def test_unreadable_variables_leave_the_store_the_role_and_the_aws_variables_unknown(
    repo: Repo, gh: FakeGitHub, aws: Any, monkeypatch: pytest.MonkeyPatch
):
    # the store, whether anything is on AWS and which role is assumed are all the repository
    # variables' (MLOPS_CI_STORE, MLOPS_CI_AWS_ROLE), which this token cannot read: mlops-ci.yaml's
    # local store and "nothing on AWS" are what the jobs use only if they are not set
    gh.setups[REPO] = complete()
    monkeypatch.setenv("GITHUB_TOKEN", "github_pat_plain")
    code, out, err = repo.doctor()
    assert code == 0, out + err
    assert marked(out, "[MISSING]") == []
    unknown = {line.split(":")[0].removeprefix("[UNKNOWN] ") for line in marked(out, "[UNKNOWN]")}
    assert {"store (the workflows' default)", "AWS OIDC trust", "variable MLOPS_CI_AWS_ROLE",
            "variable MLOPS_CI_AWS_REGION", "variable MLOPS_CI_FORK_REVIEW"} <= unknown  # fmt: skip
    (store,) = [line for line in marked(out, "[UNKNOWN]") if line.startswith("[UNKNOWN] store")]
    assert "the jobs use the repository variable MLOPS_CI_STORE when it is set, and it could not be read (GitHub " \
           "answered 403" in store and "`Variables: read`" in store  # fmt: skip
    assert "not needed: nothing is on AWS" not in out
    assert "fix:" not in fixes_of(out, "store (the workflows' default)")  # nothing known to be missing
    assert repo.doctor("--strict")[0] == 2


def test_the_store_of_the_job_is_the_one_checked(repo: Repo, gh: FakeGitHub, aws: Any,
                                                 monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    # in a workflow step the job's MLOPS_CI_STORE (the starter workflows set it from
    # vars.MLOPS_CI_STORE) is the store, though GITHUB_TOKEN can never read the variable itself
    gh.setups[REPO] = complete()
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_actions")
    monkeypatch.setenv("MLOPS_CI_STORE", STORE)
    _, out, err = repo.doctor()
    assert f"[ok]      store ($MLOPS_CI_STORE): {STORE} is readable and writable as arn:aws:sts::{ACCOUNT}:user/moto" \
           in out, out + err  # fmt: skip
    # --store (the global flag, passed by the CLI) comes first; a store other than the jobs' is named
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    from mlops_ci.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):  # the global flag goes before the command
        main(["-C", str(repo.path), "--store", f"s3://{BUCKET}/other", "doctor", "--read-only", "--json"])
    out, err = buf.getvalue(), ""
    check = check_of(out, "store")
    assert (check["title"], check["status"]) == ("store (--store)", "ok"), out + err
    assert check["detail"].endswith(f"(note: the workflows use {STORE}, from the repository variable MLOPS_CI_STORE, "
                                 "not this store)")  # fmt: skip


# -- fixes that do what they say, and only that ------------------------------------------------------------
def test_a_branch_rule_beside_the_tag_rule_is_deleted_by_its_fix_when_verdicts_are_signed(repo: Repo, gh: FakeGitHub,
                                                                                           aws: Any):  # fmt: skip
    (repo.path / "mlops-ci.yaml").write_text(config(signing=True))
    setup = complete()
    setup.environments["production"].policies = [("v*", "tag"), ("main", "branch")]
    gh.setups[REPO] = setup
    code, out, _ = repo.doctor("--json")
    assert code == 2
    check = check_of(out, "environment:production")
    assert check["status"] == "missing" and "branches may deploy too (branch main)" in check["detail"]
    import requests

    listed = requests.get(f"{gh.base_url}/repos/{REPO}/environments/production/deployment-branch-policies",
                          headers={"Authorization": f"token {TOKEN}"}, timeout=10).json()  # fmt: skip
    ids = {p["name"]: p["id"] for p in listed["branch_policies"]}
    assert check["fix"] == [f"gh api -X DELETE repos/{REPO}/environments/production/deployment-branch-policies/"
                            f"{ids['main']}"]  # fmt: skip
    apply_fix(gh, check["fix"])
    _, out, _ = repo.doctor("--json")
    assert check_of(out, "environment:production")["status"] == "ok"
    assert gh.setups[REPO].environments["production"].policies == [("v*", "tag")]


def test_main_beside_the_release_tags_is_a_note_without_signed_verdicts(repo: Repo, gh: FakeGitHub, aws: Any):
    # the release workflow deploys from v* tags; docs/threat-model.md needs tags only where a
    # signature must be the release job's (gate.signing_key): elsewhere a valid set-up, noted
    setup = complete()
    setup.environments["production"].policies = [("v*", "tag"), ("main", "branch")]
    gh.setups[REPO] = setup
    code, out, err = repo.doctor()
    assert code == 0, out + err
    assert "[ok]      environment production: 1 required reviewer(s), deployments from tag v*, branch main; note: " \
           "branches may deploy too (branch main)" in out  # fmt: skip


def test_the_environment_fix_keeps_its_reviewers_and_wait_timer(repo: Repo, gh: FakeGitHub, aws: Any):
    setup = complete()
    for login in ("alice", "bob"):
        gh.user_id(login)
    setup.environments["production"] = EnvironmentSetup(reviewers=["alice", "bob"], wait_timer=15,
                                                        prevent_self_review=True, can_admins_bypass=False,
                                                        variables={"MLOPS_CI_AWS_ROLE": DEPLOY_ROLE})  # fmt: skip
    gh.setups[REPO] = setup
    code, out, _ = repo.doctor("--json")
    check = check_of(out, "environment:production")
    assert code == 2 and check["detail"] == "any branch or tag may deploy (no deployment branch and tag policy)"
    put = json.loads(check["fix"][1].split("\n", 1)[1].rsplit("\n", 1)[0])
    assert put == {"deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True},
                   "wait_timer": 15, "can_admins_bypass": False, "prevent_self_review": True,
                   "reviewers": [{"type": "User", "id": gh.user_id("alice")},
                                 {"type": "User", "id": gh.user_id("bob")}]}  # fmt: skip
    apply_fix(gh, check["fix"])
    _, out, _ = repo.doctor("--json")
    assert check_of(out, "environment:production")["status"] == "ok"
    production = gh.setups[REPO].environments["production"]
    assert (production.reviewers, production.wait_timer, production.prevent_self_review,
            production.can_admins_bypass) == (["alice", "bob"], 15, True, False)  # fmt: skip
    assert production.policies == [("v*", "tag")]


def test_reviewers_a_private_repository_may_not_have_are_not_a_miss(repo: Repo, gh: FakeGitHub, aws: Any):
    setup = complete(private=True)
    setup.environments["production"].reviewers = []
    gh.setups[REPO] = setup
    code, out, err = repo.doctor()
    assert code == 0, out + err
    (line,) = [x for x in marked(out, "[UNKNOWN]") if x.startswith("[UNKNOWN] environment production")]
    assert "no required reviewers (nobody approves a release), and whether this repository's plan offers them is " \
           "unknown: required reviewers on a private repository need GitHub Enterprise" in line  # fmt: skip
    fix = fixes_of(out, "environment production").splitlines()
    assert fix[0] == "fix: # only if the plan offers required reviewers on a private repository (GitHub Enterprise):"
    assert "(on a private repository: GitHub Enterprise only)" in fix[-1]
    assert repo.doctor("--strict")[0] == 2
    # what is missing besides is fixed with what a Team plan takes (only the deployment policy)
    setup.environments["production"].branch_policy = None
    code, out, _ = repo.doctor("--json")
    check = check_of(out, "environment:production")
    assert code == 2 and check["status"] == "missing"
    assert check["detail"].startswith("any branch or tag may deploy (no deployment branch and tag policy); no required "
                                      "reviewers (nobody approves a release), and whether")  # fmt: skip
    sure = check["fix"][: check["fix"].index(next(f for f in check["fix"] if f.startswith("# only if")))]
    apply_fix(gh, sure)
    code, out, _ = repo.doctor("--json")
    assert code == 0 and check_of(out, "environment:production")["status"] == "could_not_check"
    # on Enterprise, the marked PUT adds the reviewers
    setup.enterprise = True
    apply_fix(gh, check_of(out, "environment:production")["fix"])
    _, out, _ = repo.doctor("--json")
    assert check_of(out, "environment:production")["status"] == "ok"
    assert gh.setups[REPO].environments["production"].reviewers == ["octocat"]


# -- the OIDC subject template ------------------------------------------------------------------------
def test_a_custom_subject_template_is_not_checked_as_the_default(repo: Repo, gh: FakeGitHub, aws: Any):
    # a trust policy written for the template's subjects works; checking it against the default
    # subjects would call it broken and print a policy that replaces it
    custom = json.loads(trust("training-role-trust.json"))
    custom["Statement"][0]["Condition"]["StringLike"][f"{OIDC_HOST}:sub"] = "repository_owner_id:1:repository_id:2:*"
    aws.update_assume_role_policy(RoleName="fast-mlops-ci-train", PolicyDocument=json.dumps(custom))
    keys = ["repository_owner_id", "repository_id", "context"]
    gh.setups[REPO] = complete(oidc_sub={"use_default": False, "include_claim_keys": keys})
    code, out, err = repo.doctor("--json")
    assert code == 0, out + err
    check = check_of(out, "oidc:fast-mlops-ci-train")
    assert check["status"] == "could_not_check" and check["fix"] == []
    assert "include_claim_keys: repository_owner_id, repository_id, context" in check["detail"]
    # following the organization's template: just as unknown
    gh.setups[REPO].oidc_sub = {"use_default": False}
    _, out, _ = repo.doctor("--json")
    assert "organization's OIDC subject template" in check_of(out, "oidc:fast-mlops-ci-deploy")["detail"]


def test_the_subjects_carry_the_prefix_github_gives(repo: Repo, gh: FakeGitHub, aws: Any):
    prefix = "repo:acme@1342004/models@99887766"  # immutable subjects: owner and repository ids
    gh.setups[REPO] = complete(oidc_sub={"use_default": True, "use_immutable_subject": True,
                                         "sub_claim_prefix": prefix})  # fmt: skip
    code, out, _ = repo.doctor()
    assert code == 2
    assert f"does not admit {prefix}:environment:staging, {prefix}:environment:production" in out
    fix = fixes_of(out, "AWS OIDC trust of role fast-mlops-ci-deploy")
    policy = json.loads(fix.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])
    assert policy["Statement"][-1]["Condition"]["StringLike"][f"{OIDC_HOST}:sub"] == [
        f"{prefix}:environment:production", f"{prefix}:environment:staging"]  # fmt: skip


# -- retries, GitHub Enterprise, branch patterns -------------------------------------------------------
def test_a_retry_is_said(repo: Repo, gh: FakeGitHub, aws: Any):
    gh.setups[REPO] = complete()
    gh.inject("GET", r"/environments$", 502, headers={"Retry-After": "0"}, message="Bad Gateway")
    code, out, err = repo.doctor()
    assert code == 0, out + err
    assert "GitHub: could not list the environments (" in err and "retrying in 0s (attempt 2 of 8" in err


def test_console_paths_are_on_this_github(repo: Repo, gh: FakeGitHub, aws: Any, monkeypatch: pytest.MonkeyPatch):
    gh.setups[REPO] = complete(variables={}, secrets=[], rules={})
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://ghe.example.com")
    _, out, _ = repo.doctor()
    consoles = [line.strip() for line in out.splitlines() if "console:" in line and "Settings" in line]
    assert consoles and all("ghe.example.com/acme/models → Settings" in c for c in consoles), consoles
    assert "github.com/" not in out
    # without GITHUB_SERVER_URL, the server of GITHUB_API_URL (https://HOST/api/v3 on GitHub Enterprise Server)
    monkeypatch.delenv("GITHUB_SERVER_URL")
    ghes = FakeGitHub(prefix="/api/v3", tokens={TOKEN: ADMIN}).start()
    try:
        ghes.setups[REPO] = complete(variables={}, secrets=[], rules={})
        monkeypatch.setenv("GITHUB_API_URL", ghes.base_url)
        _, out, _ = repo.doctor()
    finally:
        ghes.stop()
    host = ghes.base_url.removeprefix("http://").removesuffix("/api/v3")
    assert f"console: {host}/acme/models → Settings → Rules" in out and "github.com/" not in out


def test_deployment_patterns_match_as_github_does():
    # File.fnmatch with FNM_PATHNAME (docs.github.com/rest/deployments/branch-policies: "Wildcard
    # characters will not match /"; `release/*/*` for one more slash)
    assert ref_matches("v*", "v1.2.3") and ref_matches("*", "main")
    assert not ref_matches("*", "team/main") and ref_matches("*/*", "team/main")
    assert not ref_matches("release/*", "release/1/x") and ref_matches("release/*/*", "release/1/x")
    assert ref_matches("**/main", "main") and ref_matches("**/main", "a/b/main")
    assert ref_matches("v[0-9]*", "v1") and not ref_matches("v[!0-9]*", "v1") and not ref_matches("v?", "v/")
    assert not ref_matches("{main,dev}", "main") and ref_matches("\\*", "*") and not ref_matches("[main", "m")


def test_a_wildcard_does_not_admit_a_default_branch_with_a_slash(repo: Repo, gh: FakeGitHub, aws: Any):
    (repo.path / "mlops-ci.yaml").write_text(config(sagemaker=True))
    setup = complete(default_branch="team/main", rules={"team/main": ["lint", CHECK]})
    setup.environments["fork-training"] = EnvironmentSetup(reviewers=["octocat"], branch_policy="custom",
                                                           policies=[("*", "branch")])  # fmt: skip
    gh.setups[REPO] = setup
    code, out, _ = repo.doctor()
    assert code == 2
    assert "[MISSING] environment fork-training: its deployment branches (branch *) exclude team/main, the branch " \
           "the fork-training job runs on" in out  # fmt: skip
    assert "-f name=team/main -f type=branch" in fixes_of(out, "environment fork-training")


def test_fork_training_needs_an_s3_store_beside_the_git_default(repo: Repo, gh: FakeGitHub, aws: Any, tmp_path: Path):
    # SageMaker training: mlops-ci-fork-train.yml runs, and it cannot push the git store
    (repo.path / "mlops-ci.yaml").write_text(config(sagemaker=True))
    gh.setups[REPO] = complete(variables={"MLOPS_CI_AWS_ROLE": TRAIN_ROLE, "MLOPS_CI_AWS_REGION": "us-east-1"})
    with_origin(repo, tmp_path)
    _, out, _ = repo.doctor("--json")
    check = check_of(out, "store")
    assert check["status"] == "missing" and "mlops-ci-fork-train.yml" in check["detail"]
    assert check["fix"] == [f"gh variable set MLOPS_CI_STORE --repo {REPO} --body s3://mlops-ci-data/mlops-ci-store"]

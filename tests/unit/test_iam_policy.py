"""The pasteable least-privilege policies in docs/iam cover every AWS call mlops-ci makes, and no more.

Every module of mlops_ci is parsed (AST); the AWS calls are found wherever a boto3 client is used:
`<client>.op(...)`, `<client>.get_paginator("op")`, boto3's managed transfers (upload_file,
download_file), and the dispatch helpers that do `getattr(<client>, op)(...)` (Aws.call,
Aws.describe, Signer._call, create_once), whose operation names are string constants at their call
sites. Each operation becomes its IAM action through botocore's service model, and each call site
(module and function) is assigned the role that runs it (ROLE_OF); a call site nobody assigned
fails the test, so a new module or a new call has to be placed in a policy.

Resource facts come from the AWS Service Authorization Reference pages "Actions, resources, and
condition keys for Amazon SageMaker / Amazon S3 / Amazon CloudWatch Logs / Amazon CloudWatch /
AWS Key Management Service / Application Auto Scaling / AWS Identity and Access Management".
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mlops_ci"
IAM = ROOT / "docs" / "iam"
ROLES = {"training": IAM / "training-role-policy.json", "deploy": IAM / "deploy-role-policy.json"}
SIGNING = "signing-key"  # kms Sign/Verify/GetPublicKey: granted by the key policy, to principals
OPERATOR = "operator"  # a person's own credentials (`mlops-ci doctor`): no policy of ours grants them

# botocore service name -> IAM service prefix
IAM_PREFIX = {
    "sagemaker": "sagemaker",
    "sagemaker-runtime": "sagemaker",  # runtime InvokeEndpoint is sagemaker:InvokeEndpoint
    "s3": "s3",
    "logs": "logs",
    "cloudwatch": "cloudwatch",
    "application-autoscaling": "application-autoscaling",
    "kms": "kms",
    "sts": "sts",
    "iam": "iam",  # doctor reads roles and OIDC providers (as the operator)
}

# S3 operations whose IAM action is not s3:<OperationName> (Service Authorization Reference, S3).
S3_ACTIONS = {
    "HeadObject": {"s3:GetObject"},
    "ListObjectsV2": {"s3:ListBucket"},
    "ListObjects": {"s3:ListBucket"},
    "HeadBucket": {"s3:ListBucket"},
    "CreateMultipartUpload": {"s3:PutObject"},
    "UploadPart": {"s3:PutObject"},
    "CompleteMultipartUpload": {"s3:PutObject"},
    "AbortMultipartUpload": {"s3:AbortMultipartUpload"},
    "CopyObject": {"s3:GetObject", "s3:PutObject"},
}
# boto3's managed transfers (s3transfer): a large file goes up in parts, and a failed multipart
# upload is aborted; a download is HeadObject + (ranged) GetObject.
TRANSFERS = {
    ("s3", "upload_file"): {"s3:PutObject", "s3:AbortMultipartUpload"},
    ("s3", "upload_fileobj"): {"s3:PutObject", "s3:AbortMultipartUpload"},
    ("s3", "download_file"): {"s3:GetObject"},
    ("s3", "download_fileobj"): {"s3:GetObject"},
}

# Which role runs each call site: (module, qualified-name prefix) -> roles. The verbs:
#   training role (push and pull_request runs, fork-training): train, wait, report, gate
#   deploy role (release tag, staging/production environments): gate, promote, deploy, rollback,
#     status, endpoint stop, invoke
ROLE_OF: dict[tuple[str, str], set[str]] = {
    # shared S3 helpers: the source (train), the model data (promote, deploy)
    ("mlops_ci/backends/aws.py", "Aws."): {"training", "deploy"},
    ("mlops_ci/backends/sagemaker_training.py", "SageMakerTrainer."): {"training"},  # train, wait
    ("mlops_ci/backends/sagemaker_training.py", "_LogTail."): {"training"},  # train, wait
    ("mlops_ci/backends/sagemaker_tuning.py", "SageMakerTuner."): {"training"},  # train (a search)
    ("mlops_ci/backends/sagemaker_registry.py", "SageMakerRegistry."): {"deploy"},  # promote (release tag)
    ("mlops_ci/backends/sagemaker.py", "model_data_uri"): {"deploy"},  # promote, deploy
    ("mlops_ci/backends/aws.py", "download_prefix"): {"training"},  # report/gate: the model diff's channel
    # train (channel digests), report/gate; monitor (the data capture), monitor --schedule (the baseline channel)
    ("mlops_ci/backends/aws.py", "s3_objects"): {"training", "deploy"},
    ("mlops_ci/backends/sagemaker_endpoints.py", "SageMakerEndpoint."): {"deploy"},  # deploy, status, invoke
    ("mlops_ci/backends/sagemaker_endpoints.py", "SageMakerRollout."): {"deploy"},  # deploy, rollback, stop
    ("mlops_ci/backends/sagemaker_endpoints.py", "SageMakerSteps."): {"deploy"},  # deploy, rollback
    ("mlops_ci/backends/sagemaker_endpoints.py", "captured"): {"deploy"},  # monitor: the endpoint's data capture
    # monitor --schedule: the Model Monitor schedule of a SageMaker endpoint (a release-time step, as deploy)
    ("mlops_ci/backends/sagemaker_monitor.py", "ModelMonitor."): {"deploy"},
    ("mlops_ci/verbs/train.py", "Training._train_plan"): {"training"},  # train --dry-run
    ("mlops_ci/backends/s3_store.py", "S3Store."): {"training", "deploy"},  # the run store: every verb
    ("mlops_ci/integrity.py", "Signer."): {SIGNING},  # gate signs, promote signs, deploy verifies
    # `doctor` reads the set-up as whoever runs it (an admin, locally): IAM and STS reads are no
    # CI role's to make; its store probe is what every CI job does to the store
    ("mlops_ci/doctor.py", "Doctor._oidc"): {OPERATOR},
    ("mlops_ci/doctor.py", "Doctor._trust"): {OPERATOR},
    ("mlops_ci/doctor.py", "Doctor._store"): {"training", "deploy"},
}

# Actions no policy needs to allow: "No permissions are required to perform this operation"
# (STS API reference, GetCallerIdentity; an explicit deny does not stop it either).
UNAUTHORIZED = {"sts:GetCallerIdentity"}

# Actions a call needs besides its own (Service Authorization Reference "Dependent actions", and
# the S3/KMS rules for SSE-KMS objects). Needed only with aws.kms_key / tags / alarms, but the
# policies are written for the full configuration.
DEPENDENT = {
    "sagemaker:CreateTrainingJob": {"iam:PassRole", "sagemaker:AddTags", "kms:CreateGrant"},
    "sagemaker:CreateHyperParameterTuningJob": {"iam:PassRole", "sagemaker:AddTags", "kms:CreateGrant"},
    "sagemaker:CreateModel": {"iam:PassRole", "sagemaker:AddTags"},
    "sagemaker:CreateEndpointConfig": {"sagemaker:AddTags", "kms:CreateGrant"},
    # DeploymentConfig.AutoRollbackConfiguration: SageMaker reads the alarms as the caller
    "sagemaker:CreateEndpoint": {"sagemaker:AddTags", "kms:CreateGrant", "cloudwatch:DescribeAlarms"},
    "sagemaker:UpdateEndpoint": {"kms:CreateGrant", "cloudwatch:DescribeAlarms"},
    "sagemaker:CreateModelPackageGroup": {"sagemaker:AddTags"},
    "sagemaker:CreateModelPackage": {"sagemaker:AddTags"},
    # Model Monitor: the baselining job and the job definition run as the execution role (RoleArn);
    # the baselining job's volume and output may be under aws.kms_key
    "sagemaker:CreateProcessingJob": {"iam:PassRole", "sagemaker:AddTags", "kms:CreateGrant"},
    "sagemaker:CreateDataQualityJobDefinition": {"iam:PassRole", "sagemaker:AddTags"},
    "sagemaker:CreateMonitoringSchedule": {"sagemaker:AddTags"},
    "s3:PutObject": {"kms:GenerateDataKey", "kms:Decrypt"},  # SSE-KMS; multipart parts need Decrypt
    "s3:GetObject": {"kms:Decrypt"},
}

# Granted although no module calls it yet, with the reason. Keep this list short.
FORESEEN = {
    "deploy": {
        **dict.fromkeys(
            [
                "application-autoscaling:RegisterScalableTarget",
                "application-autoscaling:DeregisterScalableTarget",
                "application-autoscaling:DescribeScalableTargets",
                "application-autoscaling:PutScalingPolicy",
                "application-autoscaling:DeleteScalingPolicy",
                "application-autoscaling:DescribeScalingPolicies",
                "iam:CreateServiceLinkedRole",
            ],
            "endpoint autoscaling (issue #18): no module calls Application Auto Scaling yet",
        ),
    },
}

# SageMaker resource types (Service Authorization Reference, "Resource types defined by Amazon
# SageMaker"): arn:${Partition}:sagemaker:${Region}:${Account}:<type>/<name>.
SM_ARN = re.compile(r"^arn:aws:sagemaker:REGION:ACCOUNT_ID:(?P<type>[a-z-]+)/(?P<name>.+)$")
# The SageMaker resource types mlops-ci tags (AddTags / ListTags name the tagged resource).
TAGGABLE = {
    "training-job",
    "processing-job",
    "data-quality-job-definition",
    "monitoring-schedule",
    "hyper-parameter-tuning-job",
    "model-package-group",
    "model-package",
    "model",
    "endpoint-config",
    "endpoint",
}
# Which resource types each action acts on; an empty set: no resource-level permissions ("*").
SM_RESOURCES: dict[str, set[str]] = {
    "CreateTrainingJob": {"training-job"},
    "DescribeTrainingJob": {"training-job"},
    "StopTrainingJob": {"training-job"},
    "ListTrainingJobs": set(),
    "CreateHyperParameterTuningJob": {"hyper-parameter-tuning-job"},
    "DescribeHyperParameterTuningJob": {"hyper-parameter-tuning-job"},
    "ListTrainingJobsForHyperParameterTuningJob": {"hyper-parameter-tuning-job"},
    "StopHyperParameterTuningJob": {"hyper-parameter-tuning-job"},
    "ListHyperParameterTuningJobs": set(),
    "CreateModelPackageGroup": {"model-package-group"},
    "DescribeModelPackageGroup": {"model-package-group"},
    "CreateModelPackage": {"model-package", "model-package-group"},
    "DescribeModelPackage": {"model-package"},
    "ListModelPackages": set(),
    "CreateModel": {"model"},
    "DescribeModel": {"model"},
    "CreateEndpointConfig": {"endpoint-config"},
    "DescribeEndpointConfig": {"endpoint-config"},
    "CreateEndpoint": {"endpoint", "endpoint-config"},
    "UpdateEndpoint": {"endpoint", "endpoint-config"},
    "DescribeEndpoint": {"endpoint"},
    "DeleteEndpoint": {"endpoint"},
    "InvokeEndpoint": {"endpoint"},
    "CreateProcessingJob": {"processing-job"},
    "DescribeProcessingJob": {"processing-job"},
    "CreateDataQualityJobDefinition": {"data-quality-job-definition"},
    "DescribeDataQualityJobDefinition": {"data-quality-job-definition"},
    "CreateMonitoringSchedule": {"monitoring-schedule"},
    "DescribeMonitoringSchedule": {"monitoring-schedule"},
    "UpdateMonitoringSchedule": {"monitoring-schedule"},
    # AddTags / ListTags act on the tagged resource, of any taggable type
    "AddTags": TAGGABLE,
    "ListTags": TAGGABLE,
}
# Other services' actions with no resource-level permissions.
NO_RESOURCE_LEVEL = {
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies",
}
PLACEHOLDERS = {"REGION", "ACCOUNT_ID", "PROJECT", "PROJECT_SHORT", "BUCKET", "PREFIX", "DATA_BUCKET", "DATA_PREFIX",
                "STORE_BUCKET", "STORE_PREFIX", "EXECUTION_ROLE", "KMS_KEY_ID", "OWNER", "REPO"}  # fmt: skip


# -- discovery -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    module: str  # path relative to the repository
    site: str  # qualified name of the enclosing function
    line: int
    service: str  # botocore service name
    op: str  # the client method (snake case)


class _Unresolved(Exception):
    pass


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _client_call(node: ast.AST) -> ast.Call | None:
    """`boto3.client("s3")`, `self.aws.client("sagemaker")`, `session.client(service)`, doctor's
    `self._boto("iam")`."""
    if isinstance(node, ast.Call) and node.args:
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr in ("client", "_boto")) or (
            isinstance(f, ast.Name) and f.id == "client"
        ):
            return node
    return None


class _Module:
    def __init__(self, rel: str, tree: ast.Module):
        self.rel, self.tree = rel, tree
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.client_vars: dict[str, str] = {}  # scoped dotted name (var_key) -> service

    def site(self, node: ast.AST) -> str:
        names = []
        cur: ast.AST | None = node
        while cur is not None:
            if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(cur.name)
            cur = self.parents.get(cur)
        return ".".join(reversed(names)) or "<module>"

    def function(self, node: ast.AST) -> ast.AST:
        cur: ast.AST | None = node
        while cur is not None and not isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef)):
            cur = self.parents.get(cur)
        return cur or self.tree

    def service_of(self, node: ast.AST) -> str | tuple[str, str] | None:
        """The service of a client expression; ("param", name) when it is a parameter."""
        call = _client_call(node)
        if call is not None:
            arg = call.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
            if isinstance(arg, ast.Name):
                return ("param", arg.id)
            return None
        name = _dotted(node)
        return self.client_vars.get(self.var_key(node, name)) if name else None

    def var_key(self, node: ast.AST, name: str) -> str:
        """A variable's name in its scope: `self.x` per class, a local name per function."""
        if name.startswith("self."):
            cur: ast.AST | None = node
            while cur is not None and not isinstance(cur, ast.ClassDef):
                cur = self.parents.get(cur)
            return f"{cur.name if cur else ''}:{name}"
        return f"{id(self.function(node))}:{name}"

    def strings(self, expr: ast.AST, scope: ast.AST) -> set[str]:
        """The string constants an operation-name expression can take: constants in it and in the
        assignments (in the same function) to the names it uses."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        out = {n.value for n in ast.walk(expr) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and any(_dotted(t) in names for t in node.targets):
                out |= {n.value for n in ast.walk(node.value)
                        if isinstance(n, ast.Constant) and isinstance(n.value, str)}  # fmt: skip
        if not out:
            raise _Unresolved(f"{self.rel}:{expr.lineno}: cannot tell which operation `{ast.unparse(expr)}` names")
        return out


_OPS: dict[str, dict[str, str]] = {}  # service -> {snake_case method: OperationName}


def _service_ops(service: str) -> dict[str, str]:
    """botocore's service model: the client's method names and the operations they call."""
    if not _OPS:
        import botocore.session
        from botocore import xform_name

        session = botocore.session.get_session()
        for name in IAM_PREFIX:
            _OPS[name] = {xform_name(op): op for op in session.get_service_model(name).operation_names}
    return _OPS[service]


def _op_names(service: str) -> set[str]:
    return set(_service_ops(service))


def discover(sources: dict[str, str]) -> list[Call]:
    """Every AWS call in `sources` (module path -> source text)."""
    modules = {rel: _Module(rel, ast.parse(text, rel)) for rel, text in sources.items()}
    classes = {node.name: (m, node) for m in modules.values() for node in ast.walk(m.tree)
               if isinstance(node, ast.ClassDef)}  # fmt: skip

    # 1. client variables: assigned from a client (or from another client variable), or a
    #    constructor parameter that some call site fills with a client.
    for _ in range(3):
        for m in modules.values():
            for node in ast.walk(m.tree):
                if isinstance(node, ast.Assign):
                    svc = m.service_of(node.value)
                    if isinstance(svc, str):
                        for t in node.targets:
                            if (name := _dotted(t)) is not None:
                                m.client_vars[m.var_key(t, name)] = svc
                if isinstance(node, ast.Call) and (callee := _dotted(node.func)) is not None:
                    cls = classes.get(callee.rsplit(".", 1)[-1])
                    if cls is None:
                        continue
                    for i, arg in enumerate(node.args):
                        svc = m.service_of(arg)
                        if not isinstance(svc, str):
                            continue
                        cm, cnode = cls
                        init = next((f for f in cnode.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
                                    None)  # fmt: skip
                        params = [a.arg for a in init.args.args[1:]] if init else []
                        if i < len(params):
                            for sub in ast.walk(init):
                                if isinstance(sub, ast.Assign) and _dotted(sub.value) == params[i]:
                                    for t in sub.targets:
                                        if (name := _dotted(t)) is not None:
                                            cm.client_vars[cm.var_key(t, name)] = svc

    # 2. dispatch helpers: `getattr(<client>, <parameter>)` inside a function
    # method name -> (service or its arg index, op arg index, class)
    helpers: dict[str, tuple[str | int, int, str]] = {}
    for m in modules.values():
        for node in ast.walk(m.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"):
                continue
            fn = m.function(node)
            if not isinstance(fn, ast.FunctionDef) or not isinstance(node.args[1], ast.Name):
                continue
            params = [a.arg for a in fn.args.args if a.arg != "self"]
            if node.args[1].id not in params:
                continue
            svc = m.service_of(node.args[0])
            if isinstance(svc, tuple):
                svc = params.index(svc[1])
            if svc is not None:
                helpers[fn.name] = (svc, params.index(node.args[1].id), m.site(fn).rsplit(".", 1)[0])

    calls: list[Call] = []

    def add(m: _Module, node: ast.AST, service: str, ops: Iterable[str]) -> None:
        for op in ops:
            if op in _op_names(service) or (service, op) in TRANSFERS:
                calls.append(Call(m.rel, m.site(node), node.lineno, service, op))  # type: ignore[attr-defined]

    for m in modules.values():
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            # <client>.op(...) and <client>.get_paginator("op")
            if isinstance(f, ast.Attribute):
                svc = m.service_of(f.value)
                if isinstance(svc, str):
                    if svc not in IAM_PREFIX:
                        raise AssertionError(f"{m.rel}:{node.lineno}: no IAM prefix for service {svc!r}")
                    if f.attr == "get_paginator":
                        add(m, node, svc, m.strings(node.args[0], m.function(node)))
                    elif f.attr in _op_names(svc) or (svc, f.attr) in TRANSFERS:
                        add(m, node, svc, [f.attr])
                    elif f.attr not in ("close", "can_paginate", "get_waiter"):
                        raise AssertionError(f"{m.rel}:{node.lineno}: {svc} client method {f.attr} is not an operation")
                    continue
                # helper(…"op"…)
                if f.attr in helpers and m.site(node) != f"{helpers[f.attr][2]}.{f.attr}":
                    svc_at, op_at, cls_name = helpers[f.attr]
                    # the helper's own object: `self` in its class, else an `aws`/`kms`/`signer` object
                    receiver = ast.unparse(f.value)
                    own = receiver == "self" and m.site(node).startswith(cls_name + ".")
                    if len(node.args) <= op_at or not (own or re.search(r"aws|kms|signer", receiver, re.I)):
                        continue
                    if isinstance(svc_at, int):
                        a = node.args[svc_at] if len(node.args) > svc_at else None
                        if not (isinstance(a, ast.Constant) and a.value in IAM_PREFIX):
                            continue  # another method of the same name
                        svc_name = str(a.value)
                    else:
                        svc_name = svc_at
                    ops = m.strings(node.args[op_at], m.function(node)) & _op_names(svc_name)
                    add(m, node, svc_name, ops)
                    continue
            # getattr(<client>, <expression>)(...) outside a helper
            if isinstance(f, ast.Call) and isinstance(f.func, ast.Name) and f.func.id == "getattr":
                fn = m.function(node)
                if (isinstance(f.args[1], ast.Name) and isinstance(fn, ast.FunctionDef)
                        and f.args[1].id in [a.arg for a in fn.args.args]):  # fmt: skip
                    continue  # a dispatch helper itself: its callers name the operation
                svc = m.service_of(f.args[0])
                if isinstance(svc, str):
                    ops = m.strings(f.args[1], m.function(node)) & _op_names(svc)
                    if not ops:
                        raise AssertionError(f"{m.rel}:{node.lineno}: no {svc} operation in `{ast.unparse(f)}`")
                    add(m, node, svc, ops)
    return calls


def package_sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def actions_of(call: Call) -> set[str]:
    """The IAM actions a call is authorized by."""
    if (call.service, call.op) in TRANSFERS:
        return set(TRANSFERS[(call.service, call.op)])
    op = _service_ops(call.service)[call.op]
    if call.service == "s3" and op in S3_ACTIONS:
        return set(S3_ACTIONS[op])
    if call.service == "sagemaker-runtime" and op.startswith("InvokeEndpoint"):
        return {"sagemaker:InvokeEndpoint"} if op != "InvokeEndpointAsync" else {"sagemaker:InvokeEndpointAsync"}
    return {f"{IAM_PREFIX[call.service]}:{op}"}


def roles_of(call: Call) -> set[str]:
    for (module, prefix), roles in ROLE_OF.items():
        if call.module == module and (call.site == prefix or (prefix.endswith(".") and call.site.startswith(prefix))):
            return roles
    raise AssertionError(
        f"{call.module}:{call.line} ({call.site}) calls {call.service}.{call.op}: add its call site to ROLE_OF "
        "in tests/unit/test_iam_policy.py with the role that runs it, and the action to that role's policy"
    )


# -- policies --------------------------------------------------------------------------------
def _list(x: str | list[str]) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def statements(role: str) -> list[dict[str, Any]]:
    return list(json.loads(ROLES[role].read_text())["Statement"])


def allowed(role: str) -> set[str]:
    return {a for st in statements(role) for a in _list(st["Action"])}


def is_allowed(action: str, granted: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(action, g) for g in granted)


def needed(calls: Iterable[Call], role: str) -> set[str]:
    """The actions `role` needs for `calls`, with their dependent actions."""
    out: set[str] = set()
    for call in calls:
        if role in roles_of(call):
            for action in actions_of(call):
                out |= {action} | DEPENDENT.get(action, set())
    return out - UNAUTHORIZED


def missing(calls: Iterable[Call]) -> dict[str, set[str]]:
    """role -> actions its calls need that its policy does not allow."""
    calls = list(calls)
    out = {}
    for role in ROLES:
        granted = allowed(role)
        gap = {a for a in needed(calls, role) if not is_allowed(a, granted)}
        if gap:
            out[role] = gap
    return out


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    return discover(package_sources())


# -- (a) every call is allowed to the role that runs it ----------------------------------------
# Modules that only make clients and hand them over (their calls are found, and given roles, where
# they are made), with the services of those clients: anything else of boto3 there must be found.
HANDS_OVER = {"mlops_ci/workspace.py": {"kms"}}  # the KMS client of integrity.Signer (its calls: integrity.py)


def test_discovery_finds_the_calls_of_every_module_that_uses_aws(calls):
    found = {(c.module, c.service, c.op) for c in calls}
    by_module = {c.module for c in calls}
    for rel, text in package_sources().items():  # a module that imports boto3 or makes a client calls AWS
        tree = ast.parse(text)
        uses = any((isinstance(n, (ast.Import, ast.ImportFrom)) and "boto3" in ast.unparse(n)) or _client_call(n)
                   for n in ast.walk(tree))  # fmt: skip
        if rel in HANDS_OVER:
            clients = [c for c in map(_client_call, ast.walk(tree)) if c is not None]
            made = {ast.literal_eval(c.args[0]) for c in clients}
            imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert made == HANDS_OVER[rel], f"{rel} makes {made} clients, not only {HANDS_OVER[rel]} to hand over"
            assert not any("boto3" in ast.unparse(n) for n in imports), f"{rel} imports boto3: its calls must be found"
        elif uses:
            assert rel in by_module, f"{rel} uses boto3 but no AWS call of it was found: teach discover() its pattern"
    assert {
        "mlops_ci/backends/aws.py",
        "mlops_ci/backends/sagemaker_training.py",
        "mlops_ci/backends/sagemaker_registry.py",
        "mlops_ci/backends/sagemaker_endpoints.py",
        "mlops_ci/backends/s3_store.py",
        "mlops_ci/integrity.py",
    } <= by_module
    for probe in [
        ("mlops_ci/backends/sagemaker_training.py", "sagemaker", "create_training_job"),
        ("mlops_ci/backends/sagemaker_endpoints.py", "sagemaker", "update_endpoint"),  # getattr(client, op if …)
        ("mlops_ci/backends/sagemaker_endpoints.py", "sagemaker", "create_endpoint_config"),  # create_once's table
        ("mlops_ci/backends/sagemaker_endpoints.py", "sagemaker", "list_tags"),  # Aws.call("sagemaker", "list_tags")
        ("mlops_ci/backends/sagemaker_endpoints.py", "sagemaker-runtime", "invoke_endpoint"),
        ("mlops_ci/backends/sagemaker_training.py", "logs", "get_log_events"),
        ("mlops_ci/backends/aws.py", "s3", "list_objects_v2"),  # get_paginator("list_objects_v2")
        ("mlops_ci/backends/aws.py", "s3", "upload_file"),
        ("mlops_ci/backends/s3_store.py", "s3", "delete_object"),
        ("mlops_ci/backends/sagemaker_registry.py", "sagemaker", "describe_model_package_group"),  # Aws.describe(op, …)
        ("mlops_ci/backends/sagemaker_endpoints.py", "sagemaker", "describe_endpoint"),  # SageMakerEndpoint.describe
        ("mlops_ci/integrity.py", "kms", "sign"),  # Signer._call("sign"): the client handed over by the workspace
    ]:
        assert probe in found, probe


def test_every_call_is_assigned_a_role(calls):
    for call in calls:
        assert roles_of(call)


def test_every_call_is_allowed_by_the_policy_of_the_role_that_runs_it(calls):
    assert missing(calls) == {}


def test_the_policies_grant_nothing_their_calls_do_not_need(calls):
    for role, path in ROLES.items():
        extra = {a for a in allowed(role) if a not in needed(calls, role) and a not in FORESEEN.get(role, {})}
        assert extra == set(), f"{path.name} grants {sorted(extra)}, which no call of the {role} role needs"


def test_the_roles_are_split(calls):
    training, deploy = allowed("training"), allowed("deploy")
    assert not any(a.startswith(("sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DeleteEndpoint",
                                 "sagemaker:InvokeEndpoint", "sagemaker:CreateModel")) for a in training)  # fmt: skip
    assert not any(a.endswith("TrainingJob") or a == "sagemaker:ListTrainingJobs" for a in deploy)


def test_the_signing_key_policy_covers_the_kms_calls_and_reserves_sign_for_the_release_job(calls):
    policy = json.loads((IAM / "signing-key-policy.json").read_text())
    called = {a for c in calls if SIGNING in roles_of(c) for a in actions_of(c)}
    assert called == {"kms:Sign", "kms:Verify", "kms:GetPublicKey"}
    granted: dict[str, set[str]] = {}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        for action in _list(st["Action"]):
            granted.setdefault(action, set()).update(_list(st["Principal"]["AWS"]))
    assert called <= set(granted)
    # The deploy role: its trust policy admits only the staging and production environments, so
    # neither a pull request nor a branch job (the training role) can sign.
    assert granted["kms:Sign"] == {"arn:aws:iam::ACCOUNT_ID:role/DEPLOY_ROLE"}
    trusted = json.loads((IAM / "deploy-role-trust.json").read_text())["Statement"][0]["Condition"]
    subjects = {s for test in trusted.values() for s in _list(test.get("token.actions.githubusercontent.com:sub", []))}
    assert subjects and all(":environment:" in s for s in subjects)
    assert not any(a in ("kms:*", "kms:Sign*") for a in granted)


# -- (b) resources -----------------------------------------------------------------------------
@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_statement_is_scoped_to_the_projects_resources(role):
    for st in statements(role):
        sid, actions, resources = st.get("Sid", ""), _list(st["Action"]), _list(st["Resource"])
        assert st["Effect"] == "Allow" and sid, st
        assert not any(a in ("*", "sagemaker:*", "s3:*", "iam:*", "kms:*") or a.endswith(":*") for a in actions), sid
        assert not any(":endpoint/*" in r or r.startswith("arn:aws:s3:::*") for r in resources), sid
        if resources == ["*"]:
            assert all(
                a in NO_RESOURCE_LEVEL or (a.startswith("sagemaker:") and SM_RESOURCES[a[10:]] == set())
                for a in actions
            ), f"{sid}: '*' for actions that support resource-level permissions"
            assert re.search(r"Supports?NoResourceLevelPermissions", sid), f"{sid} must say why it is '*'"
            continue
        assert "*" not in resources, sid
        for r in resources:
            assert set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", r)) <= PLACEHOLDERS, f"{sid}: unknown placeholder in {r}"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_sagemaker_action_is_granted_on_the_resource_types_it_acts_on(role):
    granted_types: dict[str, set[str]] = {}
    for st in statements(role):
        resources = _list(st["Resource"])
        types = set()
        for r in resources:
            if r == "*":
                continue
            if r.startswith("arn:aws:sagemaker:"):
                m = SM_ARN.match(r)
                assert m, r
                assert m["name"].startswith("PROJECT"), f"{r}: not scoped to the project's names"
                types.add(m["type"])
        for a in _list(st["Action"]):
            if not a.startswith("sagemaker:"):
                continue
            want = SM_RESOURCES[a[len("sagemaker:") :]]
            if not want:
                assert resources == ["*"], f"{a} has no resource type: grant it on '*' in its own statement"
                continue
            assert types and types <= SM_RESOURCES["AddTags"], (a, resources)
            # every resource of the statement is one some action of it acts on
            sm_actions = [x[len("sagemaker:") :] for x in _list(st["Action"]) if x.startswith("sagemaker:")]
            assert types <= set().union(*(SM_RESOURCES[x] for x in sm_actions)), (st["Sid"], types)
            granted_types.setdefault(a, set()).update(types & want)
    for a, types in granted_types.items():
        want = SM_RESOURCES[a[len("sagemaker:") :]]
        if a not in ("sagemaker:AddTags", "sagemaker:ListTags"):
            assert types == want, f"{role}: {a} acts on {sorted(want)}, granted on {sorted(types)}"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_s3_pass_role_logs_kms_and_alarms_are_scoped(role):
    for st in statements(role):
        sid, actions, resources, cond = st["Sid"], _list(st["Action"]), _list(st["Resource"]), st.get("Condition", {})
        for r in resources:
            if r.startswith("arn:aws:s3:::"):
                path = r[len("arn:aws:s3:::") :]
                if "/" in path:  # an object ARN: under the configured prefix or the store's
                    assert path.startswith(("BUCKET/PREFIX/", "STORE_BUCKET/STORE_PREFIX/projects/PROJECT/",
                                            "DATA_BUCKET/DATA_PREFIX/")), sid  # fmt: skip
                    if path.startswith("DATA_BUCKET/"):  # the model diff reads the evaluation data, nothing else
                        assert actions == ["s3:GetObject"], sid
                    assert not path.startswith(("BUCKET/PREFIX/*", "BUCKET/*")), f"{sid}: {r} is the whole prefix"
                else:  # a bucket: only listed, and only under a prefix
                    assert actions == ["s3:ListBucket"], sid
                    assert cond["StringLike"]["s3:prefix"], sid
            if r.startswith("arn:aws:logs:"):
                assert r.startswith("arn:aws:logs:REGION:ACCOUNT_ID:log-group:/aws/sagemaker/TrainingJobs:"), sid
            if r.startswith("arn:aws:cloudwatch:"):
                assert r == "arn:aws:cloudwatch:REGION:ACCOUNT_ID:alarm:PROJECT-*", sid
        if "iam:PassRole" in actions:
            assert actions == ["iam:PassRole"] and resources == ["arn:aws:iam::ACCOUNT_ID:role/EXECUTION_ROLE"], sid
            assert cond == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}, sid
        if "iam:CreateServiceLinkedRole" in actions:
            assert cond["StringEquals"]["iam:AWSServiceName"] == "sagemaker.application-autoscaling.amazonaws.com"
        if any(a.startswith("kms:") for a in actions):
            assert resources == ["arn:aws:kms:REGION:ACCOUNT_ID:key/KMS_KEY_ID"], sid
            assert cond["StringEquals"]["kms:ViaService"] in ("s3.REGION.amazonaws.com",
                                                               "sagemaker.REGION.amazonaws.com"), sid  # fmt: skip
            if "kms:CreateGrant" in actions:
                assert cond["Bool"] == {"kms:GrantIsForAWSResource": "true"}, sid
        if any(a.startswith("application-autoscaling:") for a in actions) and resources != ["*"]:
            assert cond["StringEquals"]["application-autoscaling:service-namespace"] == "sagemaker", sid


def test_the_trust_policies_pin_the_repository_and_split_the_roles():
    def subs(name: str) -> list[str]:
        (st,) = json.loads((IAM / name).read_text())["Statement"]
        assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert st["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
        cond = st["Condition"]
        assert cond["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
        found = [*_list(cond.get("StringEquals", {}).get("token.actions.githubusercontent.com:sub", [])),
                 *_list(cond.get("StringLike", {}).get("token.actions.githubusercontent.com:sub", []))]  # fmt: skip
        assert found and all(s.startswith("repo:OWNER/REPO:") for s in found)
        return found

    training, deploy = subs("training-role-trust.json"), subs("deploy-role-trust.json")
    assert not any("environment:staging" in s or "environment:production" in s or "refs/tags" in s for s in training)
    assert not any("pull_request" in s or "refs/heads" in s or "*" in s for s in deploy)
    assert not (IAM / "github-oidc-trust.json").exists()  # the one-role trust policy is gone for good


def test_the_permissions_section_explains_every_placeholder_and_names_both_policies():
    text = (ROOT / "docs" / "sagemaker.md").read_text()
    section = text.split("## Permissions", 1)[1].split("\n## ", 1)[0]
    for name in ("training-role-policy.json", "deploy-role-policy.json", "training-role-trust.json",
                 "deploy-role-trust.json"):  # fmt: skip
        assert name in section, name
    for p in PLACEHOLDERS:
        assert f"`{p}`" in section, p
    assert not (IAM / "runner-policy.json").exists()


# -- (c) a new AWS call that no policy allows fails ---------------------------------------------
NEW_ENDPOINT_CALLS = """
import boto3

class SageMakerRollout:
    def prune(self, name):
        boto3.client("sagemaker").delete_endpoint_config(EndpointConfigName=name)
        self.aws.call("sagemaker", "delete_model", "delete a model", ModelName=name)
"""
NEW_TRAINING_CALLS = """
import boto3

class SageMakerTrainer:
    def run(self):
        logs = boto3.client("logs")
        logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs")
        boto3.client("sagemaker").describe_training_job(TrainingJobName="x")
"""


def test_a_module_that_gains_an_aws_call_not_in_the_policy_fails(calls):
    sources = package_sources()
    # the real modules, with new calls in them
    sources["mlops_ci/backends/sagemaker_endpoints.py"] += NEW_ENDPOINT_CALLS
    sources["mlops_ci/backends/sagemaker_training.py"] += NEW_TRAINING_CALLS
    new = sorted(set(discover(sources)) - set(calls), key=lambda c: (c.site, c.op))
    assert {(c.site, c.service, c.op) for c in new} == {
        ("SageMakerRollout.prune", "sagemaker", "delete_endpoint_config"),
        ("SageMakerRollout.prune", "sagemaker", "delete_model"),
        ("SageMakerTrainer.run", "logs", "filter_log_events"),
        ("SageMakerTrainer.run", "sagemaker", "describe_training_job"),
    }
    assert missing(calls + new) == {
        "deploy": {"sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"},
        "training": {"logs:FilterLogEvents"},
    }
    with pytest.raises(AssertionError, match="add its call site to ROLE_OF"):
        missing(discover({"mlops_ci/new_module.py": "import boto3\nboto3.client('sts').get_caller_identity()\n"}))

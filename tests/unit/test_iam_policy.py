"""The least-privilege policy in docs/iam covers every AWS call the SageMaker backend makes."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "mlops_ci" / "backends" / "sagemaker.py", ROOT / "mlops_ci" / "pipeline.py"]


def _allowed() -> set[str]:
    policy = json.loads((ROOT / "docs" / "iam" / "runner-policy.json").read_text())
    actions: set[str] = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        assert st["Resource"] != "*" or set(st["Action"]) <= {
            "sagemaker:ListTrainingJobs",
            "sagemaker:ListModelPackages",
        }
        actions |= {st["Action"]} if isinstance(st["Action"], str) else set(st["Action"])
    return actions


def _called(service: str) -> set[str]:
    import boto3
    from botocore import xform_name

    model = boto3.client(service, region_name="us-east-1").meta.service_model
    by_snake = {xform_name(op): op for op in model.operation_names}
    text = "\n".join(p.read_text() for p in SOURCES)
    words = set(re.findall(r"\b[a-z][a-z_]+\b", text))
    return {by_snake[w] for w in words if w in by_snake and "_" in w}


def test_every_sagemaker_call_is_in_the_runner_policy():
    called = {f"sagemaker:{op}" for op in _called("sagemaker") | _called("sagemaker-runtime")}
    assert "sagemaker:CreateTrainingJob" in called and "sagemaker:UpdateEndpoint" in called
    assert called - _allowed() == set()
    assert "sagemaker:AddTags" in _allowed()  # Create* with Tags needs it too


def test_logs_and_s3_calls_are_in_the_runner_policy():
    allowed = _allowed()
    logs = {f"logs:{op}" for op in _called("logs")}
    assert logs and logs - allowed == set()
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "iam:PassRole"} <= allowed


def test_the_oidc_trust_policy_is_scoped_to_one_repository():
    trust = json.loads((ROOT / "docs" / "iam" / "github-oidc-trust.json").read_text())
    (st,) = trust["Statement"]
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Condition"]["StringEquals"]["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    subs = st["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"]
    assert subs and all(s.startswith("repo:OWNER/REPO:") for s in subs)


def test_the_signing_key_policy_covers_the_kms_calls_and_reserves_sign_for_the_gating_role():
    policy = json.loads((ROOT / "docs" / "iam" / "signing-key-policy.json").read_text())
    text = (ROOT / "mlops_ci" / "integrity.py").read_text()
    called = {f"kms:{op}" for op in ("Sign", "Verify", "GetPublicKey") if f'"{_snake(op)}"' in text}
    assert called == {"kms:Sign", "kms:Verify", "kms:GetPublicKey"}
    granted: dict[str, set[str]] = {}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        principals = st["Principal"]["AWS"]
        for action in st["Action"]:
            granted.setdefault(action, set()).update([principals] if isinstance(principals, str) else principals)
    assert called <= set(granted)
    assert granted["kms:Sign"] == {"arn:aws:iam::ACCOUNT_ID:role/GATING_ROLE"}
    assert not any(a in ("kms:*", "kms:Sign*") for a in granted)


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()

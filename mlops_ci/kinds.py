"""The backend tables: one per kind of service, keyed by the name a user writes in mlops-ci.yaml.

This module is the only place that knows a backend by its name. Everything else asks the entry
for what it can do (`remote`, `on_aws`, `processes`, ...) and for its implementation
(`load()`), so adding a backend (a Vertex AI trainer, an MLflow tracker, a GitLab forge) is one
new module plus one line in a table here; docs/architecture.md walks through it.

Entries name their implementation as "module:attribute" and load it on first use: the CLI
never pays for an SDK the configuration does not use (tests/unit/test_imports.py). An entry
with settings of its own in mlops-ci.yaml names their parser the same way (`settings`): config.py
parses the keys every backend of a kind shares and asks the chosen entry's parser for the rest.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One backend of one kind.

    name: what mlops-ci.yaml says (`training.backend: sagemaker`).
    label: what messages call it ("SageMaker").
    impl: "module:attribute" of its implementation ("" for the built-in default that needs none).
    extra: the package extra it needs (`pip install 'mlops-ci[extra]'`), if any.
    on_aws: it calls AWS, so it needs aws.role and aws.bucket, and the jobs need AWS credentials.
    remote: training only: the job runs off this machine (it can be started, left running with
        --no-wait, followed later with `wait`, stopped when superseded; its channels are URIs).
    processes: endpoints only: serving processes on this machine that mlops-ci starts and stops.
    secrets: the repository secrets the workflows must pass it (`doctor` checks them).
    settings: "module:attribute" of the parser of its own keys in its section of mlops-ci.yaml
        (a `config.Settings`, light to import: `config check` loads it, never the implementation);
        "" when it has none.
    """

    name: str
    label: str
    impl: str = ""
    extra: str | None = None
    on_aws: bool = False
    remote: bool = False
    processes: bool = False
    secrets: tuple[str, ...] = ()
    settings: str = ""

    def load(self) -> object:
        """The implementation (imported now, not before)."""
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(module), attr)

    def parser(self) -> object:
        """The parser of its own settings (imported now, not before), or None."""
        if not self.settings:
            return None
        module, _, attr = self.settings.partition(":")
        return getattr(importlib.import_module(module), attr)


TRAINING: dict[str, Kind] = {
    "local": Kind(
        "local",
        "this machine",
        "mlops_ci.backends.local_training:LocalTrainingBackend",
        settings="mlops_ci.settings.local:TRAINING",
    ),
    "sagemaker": Kind(
        "sagemaker",
        "SageMaker",
        "mlops_ci.backends.sagemaker_training:SageMakerTrainer",
        extra="sagemaker",
        on_aws=True,
        remote=True,
        settings="mlops_ci.settings.sagemaker:TRAINING",
    ),
}

TRACKING: dict[str, Kind] = {
    "local": Kind("local", "the run store"),  # the store's own records: no tracker
    "comet": Kind(
        "comet",
        "Comet",
        "mlops_ci.backends.comet:Comet",
        extra="comet",
        secrets=("COMET_API_KEY",),
        settings="mlops_ci.settings.comet:TRACKING",
    ),
}

REGISTRY: dict[str, Kind] = {
    "local": Kind("local", "the run store"),  # the store's model versions: no second registry
    "sagemaker": Kind(
        "sagemaker",
        "SageMaker",
        "mlops_ci.backends.sagemaker_registry:SageMakerRegistry",
        extra="sagemaker",
        on_aws=True,
        settings="mlops_ci.settings.sagemaker:REGISTRY",
    ),
}

ENDPOINTS: dict[str, Kind] = {
    "local": Kind("local", "this machine", "mlops_ci.backends.local_endpoints:LocalEndpoints", processes=True),
    "sagemaker": Kind(
        "sagemaker",
        "SageMaker",
        "mlops_ci.backends.sagemaker_endpoints:SageMakerRollout",
        extra="sagemaker",
        on_aws=True,
        settings="mlops_ci.settings.sagemaker:ENDPOINT",
    ),
}

FORGES: dict[str, Kind] = {
    "github": Kind("github", "GitHub", "mlops_ci.backends.github:GitHubClient"),
}

TABLES: dict[str, dict[str, Kind]] = {
    "training": TRAINING,
    "tracking": TRACKING,
    "registry": REGISTRY,
    "endpoints": ENDPOINTS,
    "forge": FORGES,
}


def kind(table: str, name: str) -> Kind:
    """The entry `name` of `table` (config validation has made sure it exists)."""
    return TABLES[table][name]

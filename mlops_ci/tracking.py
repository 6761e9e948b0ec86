"""For training scripts: a Comet experiment already linked to the commit mlops-ci is training.

    from mlops_ci.tracking import experiment

    exp = experiment()            # comet_ml.start(): online with an API key, else an offline archive
    exp.log_metric("accuracy", acc)

mlops-ci passes everything through the job's environment (locally and on SageMaker alike):
COMET_WORKSPACE, COMET_PROJECT_NAME, COMET_API_KEY (only when online; never a hyperparameter),
MLOPS_CI_COMET_EXPERIMENT_KEY (so mlops-ci knows the experiment before it exists), and the
commit's provenance (MLOPS_CI_GIT_SHA, _BRANCH, _REPOSITORY, _PR, _JOB, _RUN). On SageMaker the
uploaded source has no .git directory, so Comet's own git detection cannot work: the helper logs
the commit itself, as others and tags. On SageMaker, add `mlops-ci` (or `comet_ml`) to the
source's requirements.txt.

Without the helper the same variables configure a script's own experiment (`comet_ml.start()`,
or `comet_ml.Experiment()`, which runs offline in a local job without a key), and comet_ml logs
the commit on it itself (COMET_LOG_OTHER_*); online, mlops-ci adds the tags after the run.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comet_ml import CometExperiment

PROVENANCE = {
    "git_sha": "MLOPS_CI_GIT_SHA",
    "git_branch": "MLOPS_CI_GIT_BRANCH",
    "repository": "MLOPS_CI_REPOSITORY",
    "pull_request": "MLOPS_CI_PR",
    "training_job": "MLOPS_CI_JOB",
    "mlops_ci_run": "MLOPS_CI_RUN",
}


def provenance(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The `log_other` entries that tie an experiment to its commit."""
    return {name: env[var] for name, var in PROVENANCE.items() if env.get(var)}


def tags(env: Mapping[str, str] = os.environ) -> list[str]:
    """Tags to find the experiment by in Comet's UI: the full SHA, the branch, the PR, the job."""
    p = provenance(env)
    out = [p["git_sha"]] if "git_sha" in p else []
    if "git_branch" in p:
        out.append(f"branch:{p['git_branch']}")
    if "pull_request" in p:
        out.append(f"pr:{p['pull_request']}")
    if "training_job" in p:
        out.append(f"job:{p['training_job']}")
    return out


def offline(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("COMET_MODE", "").lower() == "offline" or not env.get("COMET_API_KEY")


def experiment(**kwargs: object) -> CometExperiment:
    """A `comet_ml` experiment in the configured workspace and project, keyed as mlops-ci
    expects and tagged with the commit: online with an API key, else an offline archive.
    A restarted job (a SageMaker spot interruption) resumes the same experiment instead of
    failing on its existing key. Keyword arguments go to `comet_ml.ExperimentConfig`."""
    # comet_ml reports its own errors to a third-party service unless told not to: mlops-ci
    # talks only to the services the user configured.
    os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
    import comet_ml

    env = os.environ
    online = not offline(env)
    config: dict[str, object] = {
        "log_git_metadata": False,  # the job's directory is not the trained commit: it is logged below
        "log_git_patch": False,
    }
    if not online:
        directory = Path(env.get("COMET_OFFLINE_DIRECTORY") or Path(env.get("SM_OUTPUT_DATA_DIR", ".")) / "comet")
        directory.mkdir(parents=True, exist_ok=True)
        config["offline_directory"] = str(directory)
    config.update(kwargs)
    exp = comet_ml.start(
        api_key=env["COMET_API_KEY"] if online else None,
        workspace=env.get("COMET_WORKSPACE"),
        project_name=env.get("COMET_PROJECT_NAME"),
        experiment_key=env.get("MLOPS_CI_COMET_EXPERIMENT_KEY") or None,
        mode="get_or_create",  # comet_ml's start(): an existing key is resumed (ExistingExperiment)
        online=online,
        experiment_config=comet_ml.ExperimentConfig(**config),
    )
    link(exp, env)
    _log_model_on_end(exp, env)
    return exp


def _log_model_on_end(exp: CometExperiment, env: Mapping[str, str]) -> None:
    """With a Comet model registry configured, the model the job wrote (SM_MODEL_DIR) is logged
    as the experiment's model when the experiment ends, so that `mlops-ci promote` can register
    that exact model after the gate."""
    name, model_dir = env.get("MLOPS_CI_COMET_MODEL_NAME"), env.get("SM_MODEL_DIR")
    if not name or not model_dir:
        return
    end = exp.end

    def end_with_model(*args: object, **kwargs: object) -> object:
        directory = Path(model_dir)
        if directory.is_dir() and any(directory.iterdir()):
            exp.log_model(name, str(directory))
        return end(*args, **kwargs)

    exp.end = end_with_model


def link(exp: CometExperiment, env: Mapping[str, str] = os.environ) -> None:
    """Tag an experiment with the commit and log the job's hyperparameters."""
    for name, value in provenance(env).items():
        exp.log_other(name, value)
    t = tags(env)
    if t:
        exp.add_tags(t)
    hps = env.get("SM_HPS")
    if hps:
        with contextlib.suppress(ValueError):
            exp.log_parameters(json.loads(hps))

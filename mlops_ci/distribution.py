"""`training.distribution`: how a job spreads over its instances, written as the SageMaker SDK's
`distribution` argument, and the hyperparameters that argument becomes.

The SDK does not send `distribution` to SageMaker: its estimators turn it into `sagemaker_*`
hyperparameters of the CreateTrainingJob request, which the training toolkit in the container
reads to pick a launcher (torchrun, mpirun, a parameter server). Every trainer sends the same
ones: the SageMaker job, and the local emulation's hyperparameters.json, so a script and the
toolkit's `Environment()` see on the laptop what they see on SageMaker.

The names and the rules follow the SDK's `PyTorch._pytorch_distribution_configuration` and
`Framework._distribution_configuration` (sagemaker-python-sdk, src/sagemaker/pytorch/estimator.py
and src/sagemaker/estimator.py), and the names the toolkit reads (sagemaker-training-toolkit,
`Environment.get_distribution_instance_groups_from_resource_config`): tests/unit/test_distribution.py
holds both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# strategy → its options (the SDK's keys); smdistributed's are its two libraries'
STRATEGIES: dict[str, tuple[str, ...]] = {
    "torch_distributed": ("enabled",),
    "pytorchddp": ("enabled",),
    "mpi": ("enabled", "processes_per_host", "custom_mpi_options"),
    "smdistributed": ("dataparallel", "modelparallel"),
    "parameter_server": ("enabled",),
    "multi_worker_mirrored_strategy": ("enabled",),
}
SMDISTRIBUTED: dict[str, tuple[str, ...]] = {
    "dataparallel": ("enabled", "custom_mpi_options"),
    "modelparallel": ("enabled", "parameters"),
}
TORCH_LAUNCHERS = ("torch_distributed", "pytorchddp")  # the PyTorch (and Hugging Face) estimators' own

# the hyperparameters (sagemaker-python-sdk: the estimators' *_ENV_NAME constants)
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
PYTORCH_DDP = "sagemaker_pytorch_ddp_enabled"
MPI = "sagemaker_mpi_enabled"
MPI_PROCESSES_PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
MPI_OPTIONS = "sagemaker_mpi_custom_mpi_options"
SMDDP = "sagemaker_distributed_dataparallel_enabled"
SMDDP_OPTIONS = "sagemaker_distributed_dataparallel_custom_mpi_options"
PARAMETER_SERVER = "sagemaker_parameter_server_enabled"
MWMS = "sagemaker_multi_worker_mirrored_strategy_enabled"
INSTANCE_TYPE = "sagemaker_instance_type"
MP_PARAMETERS = "mp_parameters"  # not sagemaker_-prefixed: the SDK sends it so


@dataclass(frozen=True)
class Distribution:
    """`training.distribution` as written (checked by config.py): strategy → its options."""

    options: dict[str, dict[str, Any]]

    def enabled(self, strategy: str) -> bool:
        if "." in strategy:
            top, lib = strategy.split(".", 1)
            return bool(self.options.get(top, {}).get(lib, {}).get("enabled", False))
        return bool(self.options.get(strategy, {}).get("enabled", False))

    @property
    def launcher(self) -> str | None:
        """What starts the script on each host: 'torch_distributed', 'pytorchddp', 'mpi',
        'smdistributed.dataparallel', 'parameter_server', 'multi_worker_mirrored_strategy', or
        None (the script is run once per host, as without a distribution)."""
        return next((s for s in LAUNCHERS if self.enabled(s)), None)


# at most one of these is enabled (smdistributed.modelparallel rides on mpi)
LAUNCHERS = (
    "torch_distributed",
    "pytorchddp",
    "mpi",
    "smdistributed.dataparallel",
    "parameter_server",
    "multi_worker_mirrored_strategy",
)


def problems(options: dict[str, dict[str, Any]]) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong across strategies (each option's type is the parser's): (key path, message)."""
    d = Distribution(options)
    on = [s for s in LAUNCHERS if d.enabled(s)]
    out: list[tuple[tuple[str, ...], str]] = []
    if all(k in options for k in TORCH_LAUNCHERS):
        # the SDK reads pytorchddp first and, disabled, never looks at torch_distributed
        out.append(((), "names both pytorchddp and torch_distributed; keep the one you use"))
    elif len(on) > 1:
        out.append(((), f"enables {' and '.join(on)}; a job has one launcher: keep one (only "
                        "smdistributed.modelparallel goes with mpi)"))  # fmt: skip
    if d.enabled("smdistributed.modelparallel") and not d.enabled("mpi"):
        # the SDK's own refusal: "Cannot use Model Parallelism without MPI enabled!"
        out.append((("smdistributed", "modelparallel"), "model parallelism runs under MPI: add mpi: {enabled: true}"))
    return out


def hyperparameters(d: Distribution | None, instance_type: str) -> dict[str, Any]:
    """The hyperparameters the SDK adds for `d` (values before JSON encoding), as the PyTorch
    estimator does: its own launchers first, else the framework-wide ones. Other frameworks
    differ only in not knowing the PyTorch launchers, which config.py refuses for them."""
    if d is None:
        return {}
    o = d.options
    # pytorchddp is looked at before torch_distributed, and a disabled one falls through to the
    # framework-wide strategies (it does not look at the other)
    if "pytorchddp" in o:
        if o["pytorchddp"].get("enabled", False):
            return {PYTORCH_DDP: True, INSTANCE_TYPE: instance_type}
    elif "torch_distributed" in o and o["torch_distributed"].get("enabled", False):
        return {TORCH_DISTRIBUTED: True, INSTANCE_TYPE: instance_type}
    out: dict[str, Any] = {}
    if "parameter_server" in o:
        out[PARAMETER_SERVER] = bool(o["parameter_server"].get("enabled", False))
    if "mpi" in o:
        mpi = o["mpi"]
        out[MPI] = bool(mpi.get("enabled", False))
        if mpi.get("processes_per_host"):
            out[MPI_PROCESSES_PER_HOST] = mpi["processes_per_host"]
        out[MPI_OPTIONS] = mpi.get("custom_mpi_options", "")
        mp = o.get("smdistributed", {}).get("modelparallel", {})
        if mp.get("enabled", False) and mp.get("parameters"):
            out[MP_PARAMETERS] = dict(mp["parameters"])
    if "smdistributed" in o:
        dp = o["smdistributed"].get("dataparallel", {})
        out[SMDDP] = bool(dp.get("enabled", False))
        out[INSTANCE_TYPE] = instance_type
        if dp.get("enabled", False):
            out[SMDDP_OPTIONS] = dp.get("custom_mpi_options", "")
    if "multi_worker_mirrored_strategy" in o:
        out[MWMS] = bool(o["multi_worker_mirrored_strategy"].get("enabled", False))
    return out

"""What the local trainer can emulate of `training` (mlops_ci/kinds.py's local training entry
names TRAINING): several hosts as processes on this machine, each with the SageMaker layout and
its share of the data, and torchrun's rendezvous for `torch_distributed`. The launchers that need
mpirun and ssh between hosts (mpi, pytorchddp, smdistributed) or a parameter server are not
emulated, nor Pipe mode's FIFOs, nor a Hyperband search or early stopping: a config
asking for them fails here, before any run."""

from __future__ import annotations

from ..config import Config, KeyPath, Settings, TrainingConfig
from ..tuning import LOCAL_STRATEGIES

TYPE_CHECKING = False  # as in config.py: only the type checker needs `typing`
if TYPE_CHECKING:
    from ..config import _Reader

EMULATED_LAUNCHERS = ("torch_distributed",)
MAX_HOSTS = 64  # each host is a process on this machine, with its own copy of the data


def _parse(r: _Reader, t: dict[str, object], p: KeyPath, core: TrainingConfig) -> TrainingConfig:
    if core.instance_count > MAX_HOSTS:
        raise r.fail((*p, "instance_count"), f"the local trainer runs each host as a process on this machine: at "
                     f"most {MAX_HOSTS}; train with training.backend: sagemaker for more")  # fmt: skip
    launcher = core.distribution.launcher if core.distribution else None
    if launcher is not None and launcher not in EMULATED_LAUNCHERS:
        raise r.fail((*p, "distribution", launcher.split(".")[0]), f"{launcher} is not emulated by the local "
                     "trainer (it needs mpirun and ssh between hosts, or a parameter server): emulate with "
                     "torch_distributed: {enabled: true}, or train with training.backend: sagemaker")  # fmt: skip
    for name, ch in core.channel_settings.items():
        if ch.input_mode == "Pipe":
            raise r.fail((*p, "channels", name, "input_mode"), "Pipe mode is not emulated by the local trainer: "
                         "use File or FastFile locally (a script reading files works in both)")  # fmt: skip
    return core


def _check(r: _Reader, cfg: Config) -> None:
    """A search runs here only where its trials can be reproduced without an optimiser of our own."""
    t = cfg.tuning
    if t is None:
        return
    if t.strategy not in LOCAL_STRATEGIES:
        raise r.fail(("tuning", "strategy"), f"a {t.strategy} search is not run by the local trainer (it stops "
                     f"trials early, which is SageMaker's): use {', '.join(LOCAL_STRATEGIES)}")  # fmt: skip
    if t.early_stopping != "Off":
        raise r.fail(("tuning", "early_stopping"), "early stopping is SageMaker's: the local trainer runs every "
                     "trial to its end (use Off locally)")  # fmt: skip


TRAINING = Settings(parse=_parse, check=_check)

"""What the local trainer can emulate of `training` (mlops_ci/kinds.py's local training entry
names TRAINING): several hosts as processes on this machine, each with the SageMaker layout and
its share of the data, and torchrun's rendezvous for `torch_distributed`. The launchers that need
mpirun and ssh between hosts (mpi, pytorchddp, smdistributed) or a parameter server are not
emulated, nor Pipe mode's FIFOs: a config asking for them fails here, before any run."""

from __future__ import annotations

from ..config import KeyPath, Settings, TrainingConfig

TYPE_CHECKING = False  # as in config.py: only the type checker needs `typing`
if TYPE_CHECKING:
    from ..config import _Reader

EMULATED_LAUNCHERS = ("torch_distributed",)


def _parse(r: _Reader, t: dict[str, object], p: KeyPath, core: TrainingConfig) -> TrainingConfig:
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


TRAINING = Settings(parse=_parse)

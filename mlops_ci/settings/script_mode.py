"""The training script's contract, which every trainer keeps: SageMaker script mode (the local
trainer lays out the same container, `/opt/ml`, the `SM_*` variables and hyperparameters.json,
and adds the container's own hyperparameters)."""

from __future__ import annotations

RESERVED_PREFIX = "sagemaker_"  # the container's own hyperparameters: sagemaker_program, ...
RESERVED_BY = "SageMaker"

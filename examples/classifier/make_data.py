"""Regenerates the small, deterministic data set shipped in data/ (not needed to run the example)."""

from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification

X, y = make_classification(
    n_samples=800, n_features=8, n_informative=5, n_redundant=1, class_sep=0.9, flip_y=0.03, random_state=7
)
here = Path(__file__).parent / "data"
header = ",".join([f"f{i}" for i in range(X.shape[1])] + ["label"])
for name, rows in (("train", slice(0, 600)), ("test", slice(600, 800))):
    table = np.column_stack([X[rows], y[rows]])
    (here / name).mkdir(parents=True, exist_ok=True)
    np.savetxt(here / name / f"{name}.csv", table, delimiter=",", header=header, comments="", fmt="%.6f")

"""SageMaker scikit-learn serving hooks: model_fn is required by the SageMaker container;
input/predict/output use the defaults (JSON, CSV and NPY)."""

import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

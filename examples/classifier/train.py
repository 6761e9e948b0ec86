"""A SageMaker script-mode training script (scikit-learn). Runs unchanged on SageMaker and
under `mlops-ci train`: hyperparameters arrive as --name value arguments, data in
SM_CHANNEL_TRAIN / SM_CHANNEL_TEST, the model goes to SM_MODEL_DIR."""

import argparse
import json
import os
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss


def load(channel_dir):
    files = sorted(Path(channel_dir).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no CSV files in {channel_dir}")
    table = np.vstack([np.loadtxt(f, delimiter=",", skiprows=1) for f in files])
    return table[:, :-1], table[:, -1].astype(int)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_estimators", type=int, default=50)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--max_depth", type=int, default=3)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--test", default=os.environ.get("SM_CHANNEL_TEST"))
    parser.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    # known args only: a trial of a SageMaker tuning job also gets --_tuning_objective_metric
    args, _ = parser.parse_known_args()

    X_train, y_train = load(args.train)
    X_test, y_test = load(args.test)
    model = GradientBoostingClassifier(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        max_depth=args.max_depth,
        random_state=0,
    )
    model.fit(X_train, y_train)

    # One line per boosting stage: SageMaker-style MetricDefinitions turn these into curves.
    for stage, proba in enumerate(model.staged_predict_proba(X_test), start=1):
        print(f"stage={stage} val_loss={log_loss(y_test, proba, labels=[0, 1]):.6f}")

    pred = model.predict(X_test)
    accuracy = accuracy_score(y_test, pred)
    f1 = f1_score(y_test, pred, average="macro")
    print(f"final accuracy={accuracy:.6f} f1={f1:.6f}")

    joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
    if args.output_data_dir:
        with open(os.path.join(args.output_data_dir, "metrics.json"), "w") as fh:
            json.dump({"train_size": float(len(y_train))}, fh)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Installs mlops-ci from this action's own checkout, so the action's ref is exactly the CLI's
# version. Skips the install when that version is already on PATH (several actions in a job).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${MLOPS_CI_EXTRAS:-}"
if [[ ! "$extras" =~ ^[a-z][a-z,]*$|^$ ]]; then
  echo "::error::extras must be a comma-separated list of extra names (e.g. sagemaker,comet), got: ${extras}"
  exit 2
fi
want="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/mlops_ci/__init__.py")"
have="$(mlops-ci --version 2>/dev/null || true)"
if [[ "$have" == "mlops-ci $want" && -z "$extras" ]]; then
  echo "mlops-ci $want already installed"
  exit 0
fi
spec="$root"
if [[ -n "$extras" ]]; then
  spec="$root[$extras]"
fi
python -m pip install --disable-pip-version-check --quiet "$spec"
mlops-ci --version

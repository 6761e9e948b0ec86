#!/usr/bin/env bash
# Installs mlops-ci from this action's own checkout, so the action's ref is exactly the CLI's
# version (never a name on the package index). Extras: a comma-separated list, or "auto" (the
# default): the ones mlops-ci.yaml needs (boto3 for SageMaker or an S3 store, comet_ml for
# Comet). Several mlops-ci actions in one job install once.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${MLOPS_CI_EXTRAS-auto}"
if [[ ! "$extras" =~ ^[a-z][a-z0-9,-]*$|^$ ]]; then
  echo "::error::extras must be a comma-separated list of extra names (e.g. sagemaker,comet) or auto"
  exit 2
fi
want="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/mlops_ci/__init__.py")"
marker="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/mlops-ci-installed"

install() { # $1: extras
  local spec="$root"
  if [[ -n "$1" ]]; then spec="$root[$1]"; fi
  # from the action's own directory: `python -m` imports from the current directory first, and
  # the working directory may hold a pull request's files
  (cd "$root" && python -m pip install --disable-pip-version-check --quiet "$spec")
}

have="$(mlops-ci --version 2>/dev/null || true)"
if [[ "$have" != "mlops-ci $want" ]] || [[ "$(cat "$marker" 2>/dev/null)" != "$root"* ]]; then
  install ""
fi
if [[ "$extras" == auto ]]; then
  # a broken mlops-ci.yaml is reported by the verb's own step, with file:line
  extras="$(mlops-ci config extras 2>/dev/null || true)"
fi
key="$root [$extras]"
if [[ -n "$extras" && "$(cat "$marker" 2>/dev/null)" != "$key" ]]; then
  install "$extras"
fi
echo "$key" > "$marker"
echo "$(mlops-ci --version) from ${root}${extras:+ with extras $extras}"

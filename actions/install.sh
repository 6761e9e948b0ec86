#!/usr/bin/env bash
# Installs mlops-ci from this action's own checkout, so the action's ref is exactly the CLI's
# version (never a name on the package index). Extras: a comma-separated list, or "auto" (the
# default): the ones mlops-ci.yaml needs (boto3 for SageMaker or an S3 store, comet_ml for
# Comet). Several mlops-ci actions in one job install once.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${MLOPS_CI_EXTRAS-auto}"
known=" s3 sagemaker comet tuning example dev "
if [[ ! "$extras" =~ ^[a-z0-9,]*$ ]]; then
  extras="-" # not a list of names (a newline, a quote, a bracket): refused below, never echoed
fi
if [[ "$extras" != auto ]]; then
  IFS=, read -r -a wanted <<< "$extras"
  for extra in "${wanted[@]}"; do
    if [[ "$known" != *" $extra "* ]]; then
      # the value is not echoed: it is an input, and could carry a workflow command
      echo "::error::extras must be auto or a comma-separated list of:${known% }"
      exit 2
    fi
  done
fi
want="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/mlops_ci/__init__.py")"
marker="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/mlops-ci-installed"

wheel=""
wheel_dir=""
install() { # $1: extras
  # The action's checkout is built into a wheel once, so that installing the extras after the
  # package (which tells which extras the config needs) does not build it a second time.
  # From the action's own directory: `python -m` imports from the current directory first, and
  # the working directory may hold a pull request's files.
  if [[ -z "$wheel" ]]; then
    wheel_dir="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/mlops-ci-wheel.XXXXXX")"
    trap 'rm -rf "$wheel_dir"' EXIT
    (cd "$root" && python -m pip wheel --disable-pip-version-check --quiet --no-deps -w "$wheel_dir" "$root")
    wheel="$(find "$wheel_dir" -maxdepth 1 -name 'mlops_ci-*.whl' | head -n 1)"
  fi
  local spec="$wheel"
  if [[ -n "$1" ]]; then spec="$wheel[$1]"; fi
  (cd "$root" && python -m pip install --disable-pip-version-check --quiet "$spec")
}

have="$(mlops-ci --version 2>/dev/null || true)"
installed="$(cat "$marker" 2>/dev/null || true)"
if [[ "$have" != "mlops-ci $want" ]] || [[ "${installed% \[*}" != "$root" ]]; then
  install ""
fi
if [[ "$extras" == auto ]]; then
  # a broken mlops-ci.yaml is reported by the verb's own step, with file:line
  extras="$(mlops-ci config extras 2>/dev/null || true)"
fi
key="$root [$extras]"
if [[ -n "$extras" && "$installed" != "$key" ]]; then
  install "$extras"
fi
echo "$key" > "$marker"
echo "$(mlops-ci --version) from ${root}${extras:+ with extras $extras}"

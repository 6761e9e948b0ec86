#!/usr/bin/env bash
# Runs one mlops-ci verb with the action's inputs. Every input arrives through env: (INPUT_*),
# never inside the script text, and none of them is echoed: an input is data, not a command.
#   run.sh VERB   (VERB: train, report, gate, promote, deploy, comment, monitor)
set -euo pipefail

verb="${1:-}"
on() { [[ "${!1:-}" == "true" ]]; }
args=()
case "$verb" in
  train)
    args=(train)
    if on INPUT_FORCE; then args+=(--force); fi
    if on INPUT_CANCEL_SUPERSEDED; then args+=(--cancel-superseded); fi
    ;;
  report)
    args=(report --json --output "${RUNNER_TEMP:-/tmp}/mlops-ci-report.json" --html "${RUNNER_TEMP:-/tmp}/mlops-ci-report.html")
    if [[ -n "${INPUT_BASE:-}" ]]; then args+=(--base "$INPUT_BASE"); fi
    if on INPUT_POST; then args+=(--post); fi
    ;;
  gate)
    args=(gate)
    if [[ -n "${INPUT_BASE:-}" ]]; then args+=(--base "$INPUT_BASE"); fi
    if on INPUT_CHECK; then args+=(--check); fi
    ;;
  promote)
    args=(promote)
    ;;
  comment)
    args=(comment --from-artifact "${INPUT_ARTIFACT:-}")
    if [[ -n "${INPUT_PR:-}" ]]; then args+=(--pr "$INPUT_PR"); fi
    ;;
  deploy)
    args=(deploy)
    if [[ -n "${INPUT_ENDPOINT:-}" ]]; then args+=(--endpoint "$INPUT_ENDPOINT"); fi
    ;;
  monitor)
    args=(monitor --since "${INPUT_SINCE:-24h}")
    if on INPUT_POST; then args+=(--post); fi
    ;;
  *)
    echo "::error::the command input must be one of: train, report, gate, promote, deploy, comment, monitor"
    exit 2
    ;;
esac
if on INPUT_DRY_RUN && [[ "$verb" != comment ]]; then args+=(--dry-run); fi
if [[ -n "${INPUT_REF:-}" && "$verb" != comment && "$verb" != monitor ]]; then args+=(-- "$INPUT_REF"); fi
if [[ "$verb" == monitor ]]; then args+=(-- "${INPUT_ENDPOINT:-}"); fi

if [[ "$verb" == report ]]; then
  # the markdown goes to the PR comment and the step summary; the JSON is for the artifact
  mlops-ci "${args[@]}" > /dev/null
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
    echo "report-json=${RUNNER_TEMP:-/tmp}/mlops-ci-report.json" >> "$GITHUB_OUTPUT"
    echo "report-html=${RUNNER_TEMP:-/tmp}/mlops-ci-report.html" >> "$GITHUB_OUTPUT"
  fi
else
  mlops-ci "${args[@]}"
fi

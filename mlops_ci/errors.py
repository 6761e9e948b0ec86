"""One error hierarchy; every verb maps failures to the same exit codes.

The table below is the single source of truth for exit codes (docs/exit-codes.md is
generated from it by a test that keeps the two in step).
"""

from __future__ import annotations

OK = 0
GATE_FAILED = 1
USAGE = 2
INTERNAL = 3
NOT_FOUND = 4
REFUSED = 5
TRAINING_FAILED = 6
DEPLOY_FAILED = 7
BUSY = 8
TRANSIENT = 9
ENDPOINT_BROKEN = 10
GIT = 11
DRIFT = 12
PERMISSION = 13
INTEGRITY = 14
SERVICE = 15
MONITOR_ALERT = 16
INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    OK: "success",
    GATE_FAILED: "the gate ran and at least one rule of severity `fail` failed",
    USAGE: "bad command line or invalid configuration (mlops-ci.yaml)",
    INTERNAL: "unexpected internal error (a bug: re-run with -v and report it)",
    NOT_FOUND: "a run, baseline, model version, endpoint or git ref does not exist",
    REFUSED: "refused by policy: dirty tree, gate not passed, digest mismatch, "
    "provenance missing, deploy of a SHA that already failed",
    TRAINING_FAILED: "the training script failed (its output/failure text is shown); the run is recorded as failed",
    DEPLOY_FAILED: "rollout failed; the previous version is still serving",
    BUSY: "another process holds the lock (e.g. a deploy to the same endpoint)",
    TRANSIENT: "a service was unavailable or throttled; retry later",
    ENDPOINT_BROKEN: "the endpoint is in a failed state and nothing healthy is serving",
    GIT: "git repository problem (not a repository, shallow history, missing commit)",
    DRIFT: "`status --check` found live state different from the declared state",
    PERMISSION: "a service rejected the credentials or the token lacks a permission (the message names it)",
    INTEGRITY: "a record or the store failed verification (digest mismatch, broken link in the run → verdict → "
    "version → deployment chain, bad signature, damaged store file, missing artifact); nothing was changed",
    SERVICE: "a service (AWS, GitHub, Comet) refused the request for a reason not above; the message quotes its answer",
    MONITOR_ALERT: "`monitor` found drift, schema violations, errors or latency past the `monitoring:` thresholds "
    "(its report says which)",
    INTERRUPTED: "interrupted (Ctrl-C, or SIGTERM as a cancelled workflow sends)",
}


class MlopsCiError(Exception):
    """Base of every error a user can hit. The message says what happened and what to do."""

    exit_code: int = INTERNAL

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line


class ConfigError(MlopsCiError):
    exit_code = USAGE


class UsageError(MlopsCiError):
    exit_code = USAGE


class NotFound(MlopsCiError):
    exit_code = NOT_FOUND


class Refused(MlopsCiError):
    exit_code = REFUSED


class GateFailed(MlopsCiError):
    exit_code = GATE_FAILED


class TrainingFailed(MlopsCiError):
    exit_code = TRAINING_FAILED


class DeployFailed(MlopsCiError):
    exit_code = DEPLOY_FAILED


class Busy(MlopsCiError):
    exit_code = BUSY


class Transient(MlopsCiError):
    exit_code = TRANSIENT


class EndpointBroken(MlopsCiError):
    exit_code = ENDPOINT_BROKEN


class GitError(MlopsCiError):
    exit_code = GIT


class Drift(MlopsCiError):
    exit_code = DRIFT


class AlreadyExists(MlopsCiError):
    """A create-once record exists already: a lost race or a bug, never silently overwritten."""


class PermissionDenied(MlopsCiError):
    """The token may not do this (403): callers may degrade, e.g. fork PRs' read-only token."""

    exit_code = PERMISSION


class BadCredentials(PermissionDenied):
    """The token itself was rejected (401): a misconfiguration, never degraded."""


class IntegrityError(MlopsCiError):
    exit_code = INTEGRITY


class MonitorAlert(MlopsCiError):
    exit_code = MONITOR_ALERT


class ServiceRefused(MlopsCiError):
    """A service answered with an error none of the classes above describes (its words are quoted)."""

    exit_code = SERVICE

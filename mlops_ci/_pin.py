"""Where the starter workflows get mlops-ci from: this repository's composite actions at one
commit (never a package-index name the project does not control). `make pin` sets these after
a release tag; `mlops-ci init --action-ref` overrides them for one repository."""

ACTION_REPOSITORY = "mlops-ci/mlops-ci"
ACTION_SHA = "c2dfef460c9e2be72249d576008d9f7d3e625d3c"
ACTION_VERSION = "0.1.0"

"""Where the starter workflows get mlops-ci from: this repository's composite actions at one
commit (never a package-index name the project does not control). `make pin` sets these after
a release tag; `mlops-ci init --action-ref` overrides them for one repository."""

ACTION_REPOSITORY = "mlops-ci/mlops-ci"
ACTION_SHA = "f047f5090eee3b91664e8b4d0efe01b7871a2108"
ACTION_VERSION = "0.1.0"

"""Where the starter workflows get mlops-ci from: this repository's composite actions at one
commit (never a package-index name the project does not control). `make pin` sets these after
a release tag; `mlops-ci init --action-ref` overrides them for one repository."""

ACTION_REPOSITORY = "mlops-ci/mlops-ci"
ACTION_SHA = "f54519d97704d4b9cb2d8a97324b5dae5cc11e6e"
ACTION_VERSION = "0.1.0"

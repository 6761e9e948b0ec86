"""Where the starter workflows get mlops-ci from: this repository's composite actions at one
commit (never a package-index name the project does not control). `make pin` sets these after
a release tag; `mlops-ci init --action-ref` overrides them for one repository."""

ACTION_REPOSITORY = "mlops-ci/mlops-ci"
ACTION_SHA = "1ce23742c81bac13920f96a39ad86cc616560e43"
ACTION_VERSION = "0.1.0"

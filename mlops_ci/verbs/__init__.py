"""The verbs of mlops-ci, one module each, over a Workspace (docs/architecture.md)."""

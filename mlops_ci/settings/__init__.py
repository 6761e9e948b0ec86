"""The backends' own settings in mlops-ci.yaml: one module per backend that has keys of its own,
each holding the `config.Settings` its entries in mlops_ci/kinds.py name (`Kind.settings`).

Light on purpose: `config check` imports them, so they import neither an SDK (boto3, comet_ml)
nor the backends' implementations, only the core parser (mlops_ci/config.py) they extend.
"""

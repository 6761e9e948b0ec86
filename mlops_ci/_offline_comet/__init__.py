"""The directory of a `sitecustomize` that local training jobs get when Comet runs offline.

comet_ml's `Experiment()` needs an API key and has no setting that makes it offline (only
`comet_ml.start()` has one, COMET_START_ONLINE): a script that makes its own `Experiment()`
would fail without a key, on a fork's pull request for instance. With this directory first on
the job's PYTHONPATH (and MLOPS_CI_COMET_OFFLINE=1), `comet_ml.Experiment` is
`comet_ml.OfflineExperiment` in that job, which writes the archive mlops-ci keeps.
"""

"""Experiment trackers (the `tracker` config group): every run and sweep in MLflow or Weights &
Biases, through a Hydra callback so every launcher works. callback.py decides what is logged
and when (the config as parameters, run.json's identity as tags, metrics.json's numbers, the
rows as a table, live progress, a sweep as a parent run), keeps the tracker's run id in the
run directory so a resume continues it, and turns any tracker failure into one warning;
mlflow.py and wandb.py each speak to one tracker through its own client library (the `mlflow`
and `wandb` extras), behind the small Tracker interface of base.py.

May use: genrun.rundir (reading records), genrun.reports (the sweep summary), genrun.settings
(the schema), genrun.credentials, genrun.errors; mlflow and wandb, imported only when chosen.
"""

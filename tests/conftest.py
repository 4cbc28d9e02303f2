"""Shared test settings: every test talks to a throw-away MLflow store, CPU only."""

import os
import tempfile

# Set before any astrid/mlflow import so nothing writes into the workspace store.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
os.environ.setdefault("ASTRID_DEVICE", "auto")

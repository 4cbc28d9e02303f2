"""Shared test settings: every test talks to a throw-away MLflow store, CPU only."""

import os
import tempfile

# Set before any astrid/mlflow import so nothing writes into the workspace store.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
os.environ.setdefault("ASTRID_DEVICE", "auto")


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ZTF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ztf_alerts"
"""The shared real ZTF alerts (beside the repository, never inside it)."""
KOWALSKI = "kowalski/data/ztf_alerts"


@pytest.fixture(scope="session")
def ztf():
    """The shared ZTF alert folder (skips when it is not beside the repository)."""
    if not (ZTF / "labels.csv").is_file():
        pytest.skip("shared ZTF alert data not found beside the repository")
    return ZTF


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """A randomly initialised tiny U-Net bundle taking the four default channels."""
    from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet, save_model

    spec = UNetSpec.named("tiny", n_channels=4)
    model = TrainedModel(build_unet(4, spec=spec),
                         ModelConfig(spec, ("science", "reference", "difference", "score"), tile_size=32))
    return save_model(model, tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A throw-away SQLite MLflow store for one test module; yields its folder (``mlflow.db`` inside)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("ASTRID_MLFLOW_ARTIFACT_ROOT", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield root

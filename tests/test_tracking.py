"""MLflow tracking: runs, registry round trips, the model list, fallbacks, no leaked secrets."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from toy_data import make_dataset

from astrid import tracking
from astrid.model import predict_image, train_unet
from astrid.plots import show_training_curves

SECRET = "sekrit-value-98765"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    dataset = make_dataset(tmp_path_factory.mktemp("toy"))
    return train_unet(dataset, tile_size=32, epochs=2, model_size="tiny", batch_size=8,
                      tiles_per_epoch=32, seed=0, output_dir=tmp_path_factory.mktemp("run"),
                      progress=False)


@pytest.fixture(scope="module")
def tracked(store, result):
    figure = show_training_curves(result.history)
    return tracking.log_training(result, model_name="astrid-unet-test",
                                 figures={"training_curves": figure},
                                 extra_params={"notebook": "03_train_unet"})


def client():
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_run_lands_in_the_store_with_params_metrics_and_model(tracked, result, store):
    assert tracked.tracked and tracked.model_uri == "models:/astrid-unet-test/1"
    run = client().get_run(tracked.run_id)
    params = run.data.params
    assert params["dataset_hash"] == result.manifest.content_hash()
    assert params["synthetic_real_ratio"] == "1:0"
    assert params["channels"] == "science,reference,difference,score"
    assert params["model_size"] == "tiny" and params["architecture"] == "fastai.DynamicUnet"
    assert params["lr"] == "0.003" and params["epochs"] == "2" and "dice" in params["loss"]
    assert params["notebook"] == "03_train_unet"
    assert run.data.tags["survey"] == "ztf" and run.data.tags["dataset"] == "toy"
    assert run.info.status == "FINISHED"
    history = client().get_metric_history(tracked.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1]
    assert run.data.metrics["val_macro_dice"] == pytest.approx(result.best_metric)
    assert run.data.metrics["temperature"] == pytest.approx(result.temperature)
    assert run.data.metrics["val_nll"] <= run.data.metrics["val_nll_before"]
    files = {f.path for f in client().list_artifacts(tracked.run_id, "model")}
    assert files == {"model/config.json", "model/weights.pt"}
    logged = {f.path for folder in ("dataset", "records", "figures")
              for f in client().list_artifacts(tracked.run_id, folder)}
    assert {"dataset/manifest.json", "records/history.csv",
            "figures/training_curves.png"} <= logged
    assert (store / "artifacts" / "astrid-unet").is_dir()  # artifacts beside the database
    version = client().get_model_version("astrid-unet-test", "1")
    assert version.tags["survey"] == "ztf" and version.tags["dataset"] == "toy"
    assert float(version.tags["val_macro_dice"]) == pytest.approx(result.best_metric, rel=1e-5)


def test_registry_round_trip_gives_identical_outputs(tracked, result, tmp_path):
    image = np.random.default_rng(3).normal(100, 5, (4, 48, 48)).astype(np.float32)
    loaded = tracking.load_registered_model("astrid-unet-test", "latest", dst=tmp_path)
    again = tracking.load_model_uri(tracked.model_uri)
    expected = predict_image(result.model, image, tile_size=32, overlap=8).probabilities
    for model in (loaded, again):
        assert model.config.to_dict() == result.model.config.to_dict()
        got = predict_image(model, image, tile_size=32, overlap=8).probabilities
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="no version 7"):
        tracking.load_registered_model("astrid-unet-test", 7)
    with pytest.raises(ValueError, match="no registered model"):
        tracking.load_registered_model("nope")


def test_list_models(tracked, result):
    table = tracking.list_models()
    assert list(table.columns) == list(tracking.MODEL_COLUMNS)
    row = table[table.name == "astrid-unet-test"].iloc[0]
    assert row.version == 1 and row.survey == "ztf" and row.dataset == "toy"
    assert row.val_macro_dice == pytest.approx(result.best_metric, rel=1e-5)
    assert row.dataset_hash == result.manifest.content_hash()


def test_credentials_are_never_logged(store, result, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("R2_API_TOKEN", SECRET + "-token")
    run = tracking.log_training(
        result, model_name="astrid-unet-secrets", register=True,
        extra_params={"aws_secret_access_key": SECRET, "note": f"key={SECRET}",
                      "store": "https://alice:pa55word-xyz@example.org/mlflow",
                      "api_key": "abc123456"},
        tags={"auth_header": "Bearer zzz", "comment": f"token {SECRET}-token"},
    )
    assert run.tracked
    stored = client().get_run(run.run_id).data
    assert "aws_secret_access_key" not in stored.params and "api_key" not in stored.params
    assert "auth_header" not in stored.tags
    assert stored.params["note"] == "key=***"
    assert stored.params["store"] == "https://alice:***@example.org/mlflow"
    for path in [store / "mlflow.db", *store.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and b"pa55word-xyz" not in data, path


def test_redact():
    clean = tracking.redact({"lr": 0.1, "password": "x", "AWS_ACCESS_KEY_ID": "y",
                             "uri": "s3://k:v@bucket/x", "note": "hello secretvalue"},
                            environ={"MY_SECRET": "secretvalue"})
    assert clean == {"lr": 0.1, "uri": "s3://k:***@bucket/x", "note": "hello ***"}


def test_unreachable_store_warns_once_and_keeps_a_local_record(result, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tracking.log_training(result)
    assert [w.category for w in caught] == [tracking.TrackingWarning]
    assert "recorded locally" in str(caught[0].message)
    assert not run.tracked and run.model_uri == str(result.bundle)
    record = json.loads(Path(run.local_record).read_text())
    assert record["params"]["dataset_hash"] == result.manifest.content_hash()
    assert len(record["history"]) == len(result.history)
    with pytest.warns(tracking.TrackingWarning):
        assert tracking.list_models().empty


def test_unusable_sqlite_path_falls_back(result, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.warns(tracking.TrackingWarning, match="unavailable"):
        run = tracking.log_training(result)
    assert not run.tracked and Path(run.local_record).is_file()


def test_default_store_and_artifact_root(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ASTRID_MLFLOW_ARTIFACT_ROOT", raising=False)
    repo = Path(tracking.__file__).resolve().parent.parent
    uri = tracking.resolve_tracking_uri()
    assert uri == f"sqlite:///{repo.as_posix()}/mlruns/mlflow.db"
    assert tracking.artifact_location(uri, "e") == (repo / "mlruns" / "artifacts" / "e").as_uri()
    monkeypatch.setenv("ASTRID_MLFLOW_ARTIFACT_ROOT", "s3://bucket/astrid/")
    assert tracking.artifact_location(uri, "e") == "s3://bucket/astrid/e"
    assert tracking.artifact_location("http://server:5000", "e") == "s3://bucket/astrid/e"


def test_evaluation_joins_the_training_run(tracked, store, tmp_path):
    metrics = {"survey": "ztf", "n_images": 3,
               "models": {"unet": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "ece": None,
                                   "artifact_rejection": {"cosmic_ray": 1.0}}}}
    figure = show_training_curves([{"epoch": 0, "train_loss": 1.0, "valid_loss": 1.0}])
    run = tracking.log_evaluation(metrics, model_uri=tracked.model_uri, figures={"pr": figure})
    assert run.tracked and run.run_id == tracked.run_id
    data = client().get_run(run.run_id).data
    assert data.metrics["test/models/unet/f1"] == pytest.approx(0.85)
    assert data.metrics["test/models/unet/artifact_rejection/cosmic_ray"] == 1.0
    assert "test/models/unet/ece" not in data.metrics and "test/survey" not in data.metrics
    files = {f.path for f in client().list_artifacts(run.run_id, "evaluation")}
    assert "evaluation/metrics.json" in files
    version = client().get_model_version("astrid-unet-test", "1")
    assert version.tags["test_unet_f1"] == "0.85"
    alone = tracking.log_evaluation(metrics)
    assert alone.tracked and alone.run_id != tracked.run_id


def test_evaluation_falls_back_locally(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.warns(tracking.TrackingWarning, match="recorded locally"):
        run = tracking.log_evaluation({"models": {"unet": {"f1": 0.5}}}, output_dir=tmp_path)
    assert not run.tracked
    assert json.loads(Path(run.local_record).read_text())["metrics"] == {"test/models/unet/f1": 0.5}

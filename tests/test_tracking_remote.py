"""MLflow beyond a local file: a tracking server with an S3 (R2 stand-in) artifact store, and fallbacks.

The servers are real processes on loopback, started and stopped by the ``remote`` fixture:
``moto_server`` as the S3-compatible object store and ``mlflow server`` with a SQLite backend
whose artifacts go to the bucket. Credentials are fake and live only in the environment.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest
from toy_data import make_dataset

from astrid import tracking
from astrid.model import predict_image, train_unet
from astrid.plots import show_training_curves

KEY_ID = "AKIAASTRIDFAKE000042"
SECRET = "fake-r2-secret-Zq8x7w6v5u4t"
PASSWORD = "pa55-Hq2m9"
BUCKET = "astrid-test"


@dataclass
class Remote:
    uri: str
    endpoint: str
    backend: Path


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url, process, log):
    for _ in range(1200):  # readiness polling while a server starts (minutes on a busy machine)
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"no answer from {url}:\n{log.read_text()[-3000:]}")


def start(command, *, env, log, url):
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    wait_until_answering(url, process, log)
    return process


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and its workers
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)


def bucket_objects(remote, prefix=""):
    client = s3(remote.endpoint)
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """moto S3 + ``mlflow server`` (SQLite backend, artifacts proxied to ``s3://astrid-test/proxied``)."""
    root = tmp_path_factory.mktemp("servers")
    endpoint = f"http://127.0.0.1:{free_port()}"
    credentials = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "MLFLOW_")) and k != "ASTRID_MLFLOW_ARTIFACT_ROOT"}
    moto = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                 env=base, log=root / "moto.log", url=endpoint)
    mlflow = None
    try:
        s3(endpoint).create_bucket(Bucket=BUCKET)
        port = free_port()
        server_env = {**base, **credentials, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "auto",
                      "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                      "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
                      "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers: quicker start
        mlflow = start([str(Path(sys.executable).parent / "mlflow"), "server",
                        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                        "--artifacts-destination", f"s3://{BUCKET}/proxied",
                        "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                       env=server_env, log=root / "mlflow.log", url=f"http://127.0.0.1:{port}/health")
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "ASTRID_MLFLOW_ARTIFACT_ROOT",
                         "MLFLOW_REGISTRY_URI", "AWS_REQUEST_CHECKSUM_CALCULATION",
                         "AWS_RESPONSE_CHECKSUM_VALIDATION"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_CONFIG_FILE", str(root / "no-aws-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "no-aws-credentials"))
            mp.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
            mp.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
            for name, value in credentials.items():
                mp.setenv(name, value)
            yield Remote(f"http://127.0.0.1:{port}", endpoint, root / "mlflow.db")
    finally:
        if mlflow is not None:
            stop(mlflow)
        stop(moto)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    dataset = make_dataset(tmp_path_factory.mktemp("toy"), size=32)
    return train_unet(dataset, tile_size=32, epochs=1, model_size="tiny", batch_size=4, tiles_per_epoch=8,
                      seed=0, output_dir=tmp_path_factory.mktemp("run"), progress=False, device="cpu")


def probabilities(model):
    image = np.random.default_rng(4).normal(100, 5, (4, 40, 40)).astype(np.float32)
    return predict_image(model, image, tile_size=32, overlap=8).probabilities


@pytest.mark.slow
def test_run_and_model_land_on_the_server_and_in_the_bucket(remote, result, tmp_path):
    figure = show_training_curves(result.history)
    run = tracking.log_training(result, model_name="astrid-remote", figures={"curves": figure})
    assert run.tracked and run.model_uri == "models:/astrid-remote/1" and run.tracking_uri == remote.uri
    stored = bucket_objects(remote, "proxied/")
    artifacts = {key.split(f"{run.run_id}/artifacts/", 1)[1]: body for key, body in stored.items()
                 if f"{run.run_id}/artifacts/" in key}
    assert {"model/weights.pt", "model/config.json", "dataset/manifest.json", "records/history.csv",
            "figures/curves.png"} <= set(artifacts)
    assert artifacts["model/weights.pt"] == (result.bundle / "weights.pt").read_bytes()
    loaded = tracking.load_registered_model("astrid-remote", dst=tmp_path)
    np.testing.assert_array_equal(probabilities(loaded), probabilities(result.model))
    table = tracking.list_models()
    assert table[table.name == "astrid-remote"].version.tolist() == [1]


@pytest.mark.slow
def test_direct_s3_uploads_use_the_r2_settings(remote, result, monkeypatch):
    """With ``ASTRID_MLFLOW_ARTIFACT_ROOT=s3://...`` the client writes to the bucket itself."""
    from mlflow.store.artifact import s3_artifact_repo

    s3_artifact_repo._cached_get_s3_client.cache_clear()  # clients made before this test don't count
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", boto3.session.Session())
    sent = []
    boto3.DEFAULT_SESSION.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append({k.lower() for k in request.headers}))
    monkeypatch.setenv("ASTRID_MLFLOW_ARTIFACT_ROOT", f"s3://{BUCKET}/direct")
    run = tracking.log_training(result, experiment="astrid-direct", model_name="astrid-direct")
    assert run.tracked
    keys = set(bucket_objects(remote, "direct/astrid-direct/"))
    assert f"direct/astrid-direct/{run.run_id}/artifacts/model/weights.pt" in keys
    assert sent and not any(h & {"x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm", "x-amz-trailer"}
                            for h in sent)  # no CRC32 request checksums for R2
    client = s3_artifact_repo._get_s3_client()  # the cached client the uploads went through
    assert client.meta.region_name == "auto"
    assert "AWS_DEFAULT_REGION" not in os.environ  # set only while AstrID talked to MLflow
    control = []
    plain = boto3.DEFAULT_SESSION.client("s3", endpoint_url=remote.endpoint, region_name="us-east-1")
    plain.meta.events.register("before-send.s3.PutObject",
                               lambda request, **_: control.append({k.lower() for k in request.headers}))
    plain.put_object(Bucket=BUCKET, Key="control.txt", Body=b"x")
    assert "x-amz-checksum-crc32" in control[0]  # what boto3 sends when nobody sets when_required
    evaluation = tracking.log_evaluation({"models": {"unet": {"f1": 0.75}}}, model_uri=run.model_uri)
    assert evaluation.tracked and evaluation.run_id == run.run_id
    metrics = bucket_objects(remote, f"direct/astrid-direct/{run.run_id}/artifacts/evaluation/")
    assert json.loads(next(iter(metrics.values()))) == {"models": {"unet": {"f1": 0.75}}}
    np.testing.assert_array_equal(probabilities(tracking.load_model_uri(run.model_uri)),
                                  probabilities(result.model))


@pytest.mark.slow
def test_unreachable_artifact_store_keeps_a_local_record_and_creates_no_run(remote, result, monkeypatch):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=remote.uri)
    experiment_id = client.create_experiment("astrid-direct-down",
                                             artifact_location=f"s3://{BUCKET}/direct/astrid-direct-down")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tracking.log_training(result, experiment="astrid-direct-down", register=False)
    assert [w.category for w in caught] == [tracking.TrackingWarning]
    message = str(caught[0].message)
    assert "artifact store" in message and "recorded locally" in message
    assert SECRET not in message and KEY_ID not in message
    assert not run.tracked and Path(run.local_record).is_file()
    assert client.search_runs([experiment_id]) == []


@pytest.mark.slow
def test_no_secret_reaches_params_tags_artifacts_or_the_database(remote, result):
    from mlflow.tracking import MlflowClient

    run = tracking.log_training(result, model_name="astrid-secrets",
                                extra_params={"note": f"key {SECRET}", "aws_secret_access_key": SECRET},
                                tags={"comment": f"id {KEY_ID}"})
    assert run.tracked
    client = MlflowClient(tracking_uri=remote.uri)
    texts = []
    for experiment in client.search_experiments():
        for found in client.search_runs([experiment.experiment_id]):
            texts += [json.dumps(found.data.params), json.dumps(found.data.tags), found.info.artifact_uri]
    for model in client.search_registered_models():
        texts += [json.dumps(model.tags), model.description or ""]
        for version in client.search_model_versions(f"name='{model.name}'"):
            texts += [json.dumps(version.tags), version.source]
    assert any('"note": "key ***"' in t for t in texts)
    blobs = [t.encode() for t in texts] + list(bucket_objects(remote).values())
    blobs.append(remote.backend.read_bytes())
    for blob in blobs:
        assert SECRET.encode() not in blob and KEY_ID.encode() not in blob


def test_unreachable_server_warns_once_keeps_everything_and_leaks_nothing(result, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}")
    figure = show_training_curves(result.history)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tracking.log_training(result, figures={"curves": figure}, extra_params={"note": SECRET})
    assert [w.category for w in caught] == [tracking.TrackingWarning]
    with pytest.warns(tracking.TrackingWarning, match="recorded locally") as evaluation_warnings:
        evaluation = tracking.log_evaluation({"models": {"unet": {"f1": 0.5, "note": "x"}}},
                                             figures={"pr": figure}, output_dir=tmp_path)
    messages = [str(w.message) for w in [*caught, *evaluation_warnings]]
    assert all("alice:***@127.0.0.1" in m and PASSWORD not in m and SECRET not in m for m in messages)
    assert not run.tracked and not evaluation.tracked
    record = json.loads(Path(run.local_record).read_text())
    assert record["params"]["note"] == "***" and len(record["history"]) == len(result.history)
    assert Path(record["figures"]["curves"]).is_file() and Path(record["records"]["history"]).is_file()
    local = json.loads(Path(evaluation.local_record).read_text())
    assert local["evaluation"] == {"models": {"unet": {"f1": 0.5, "note": "x"}}}
    assert local["metrics"] == {"test/models/unet/f1": 0.5} and (tmp_path / "figures" / "pr.png").is_file()
    with pytest.raises(ConnectionError, match="unavailable") as err:
        tracking.load_registered_model("astrid-remote")
    assert PASSWORD not in str(err.value)
    for folder in (Path(run.local_record).parent, tmp_path):
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes() and PASSWORD.encode() not in path.read_bytes()


def test_remote_defaults_fill_only_what_the_user_left_unset(tmp_path, monkeypatch):
    endpoint = {"MLFLOW_S3_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com"}
    http = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
            "MLFLOW_HTTP_REQUEST_TIMEOUT"}
    assert set(tracking.remote_defaults({}, aws_config={})) == http
    r2 = tracking.remote_defaults(endpoint, aws_config={})
    assert r2["AWS_DEFAULT_REGION"] == "auto"
    assert r2["AWS_REQUEST_CHECKSUM_CALCULATION"] == r2["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"
    assert "AWS_DEFAULT_REGION" not in tracking.remote_defaults({**endpoint, "AWS_REGION": "x"},
                                                                aws_config={})
    mine = tracking.remote_defaults({**endpoint, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"},
                                    aws_config={"region": "weur",
                                                "request_checksum_calculation": "when_supported"})
    assert set(mine) == {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                         "AWS_RESPONSE_CHECKSUM_VALIDATION"}
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n")
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_REQUEST_CHECKSUM_CALCULATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint["MLFLOW_S3_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_supported")
    assert "AWS_DEFAULT_REGION" not in tracking.remote_defaults()  # the config file's region wins
    config.write_text("")
    with tracking._quiet():
        client = boto3.session.Session().client("s3", endpoint_url=endpoint["MLFLOW_S3_ENDPOINT_URL"],
                                                aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        assert os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_supported"
    assert client.meta.region_name == "auto"
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_supported"
    assert "AWS_REQUEST_CHECKSUM_CALCULATION" not in os.environ and "AWS_DEFAULT_REGION" not in os.environ

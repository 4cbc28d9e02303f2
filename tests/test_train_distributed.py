"""Data-parallel training: two gloo CPU processes train one model, logged as one MLflow run."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import make_dataset

from astrid import tracking
from astrid.model import load_model, predict_image, train_unet
from astrid.model.distributed import DistributedEnv, distributed_env, rank_seed

TINY = {"tile_size": 32, "epochs": 1, "model_size": "tiny", "batch_size": 4, "tiles_per_epoch": 16,
        "seed": 0, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"), size=32)


@pytest.fixture(scope="module")
def two_process(dataset, tmp_path_factory):
    return train_unet(dataset, processes=2, output_dir=tmp_path_factory.mktemp("ddp"), **TINY)


def weights_sha256(bundle):
    return json.loads((Path(bundle) / "config.json").read_text())["weights"]["sha256"]


def test_two_processes_share_the_work_and_end_with_one_model(two_process):
    ranks = two_process.summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    # 16 tiles per epoch in batches of 4 per process: each process takes half of the 4 steps
    assert [r["train_batches"] for r in ranks] == [2, 2]
    # the ranks drew different tiles yet ended with identical weights: gradients were all-reduced
    assert rank_seed(0, 0) != rank_seed(0, 1)
    assert {r["weights_sha256"] for r in ranks} == {weights_sha256(two_process.bundle)}
    assert two_process.params["processes"] == 2 and two_process.rank == 0
    assert two_process.learner is None
    on_disk = json.loads(two_process.paths["summary"].read_text())
    assert on_disk["ranks"] == ranks and on_disk["params"]["processes"] == 2
    assert len(two_process.history) == 1
    row = two_process.history[0]
    assert np.isfinite([row["train_loss"], row["valid_loss"], row["macro_dice"]]).all()
    assert two_process.best_metric == pytest.approx(row["macro_dice"])
    # the returned model is the best checkpoint rank 0 saved, calibrated
    best = torch.load(two_process.paths["checkpoint"], weights_only=True)
    for name, tensor in two_process.model.net.state_dict().items():
        torch.testing.assert_close(tensor, best[name], rtol=0, atol=0)
    assert two_process.temperature == load_model(two_process.bundle).config.temperature != 1.0


def test_two_process_training_is_logged_as_one_run(two_process, store):
    from mlflow.tracking import MlflowClient

    run = tracking.log_training(two_process, experiment="astrid-ddp", model_name="astrid-unet-ddp")
    assert run.tracked and run.model_uri == "models:/astrid-unet-ddp/1"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db", registry_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("astrid-ddp")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run.run_id]
    data = runs[0].data
    assert data.params["processes"] == "2"
    assert data.metrics["val_macro_dice"] == pytest.approx(two_process.best_metric)
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [0]
    image = np.random.default_rng(5).normal(100, 5, (4, 40, 40)).astype(np.float32)
    loaded = tracking.load_registered_model("astrid-unet-ddp", "latest")
    expected = predict_image(two_process.model, image, tile_size=32, overlap=8).probabilities
    np.testing.assert_array_equal(predict_image(loaded, image, tile_size=32, overlap=8).probabilities,
                                  expected)


def test_distributed_env_reads_the_launcher_variables():
    assert distributed_env({}) == DistributedEnv(0, 0, 1)
    env = distributed_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert env == DistributedEnv(3, 1, 4) and env.distributed


def test_bad_distributed_options_fail_before_any_process_starts(dataset, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="times the number of processes"):
        train_unet(dataset, processes=2, output_dir=tmp_path, **{**TINY, "tiles_per_epoch": 4})
    with pytest.raises(ValueError, match="processes must be >= 1"):
        train_unet(dataset, processes=0, output_dir=tmp_path, **TINY)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="leave processes=1"):
        train_unet(dataset, processes=2, output_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="output_dir is required"):
        train_unet(dataset, **TINY)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_launch_trains_every_rank_and_rank0_logs(dataset, tmp_path, store):
    """The documented ``torchrun --nproc_per_node 2`` route: each launched process calls train_unet."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from astrid.model import train_unet
        from astrid.tracking import log_training
        result = train_unet({str(dataset.path)!r}, output_dir={str(tmp_path / "run")!r}, **{TINY!r})
        if result.rank == 0:
            log_training(result, experiment="astrid-torchrun", model_name="astrid-unet-torchrun")
        print("RESULT", json.dumps({{"rank": result.rank, "history": result.history,
                                     "batches": result.learner.train_iter}}))
    """))
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(script)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted((json.loads(line.split("RESULT", 1)[1]) for line in done.stdout.splitlines()
                      if line.startswith("RESULT")), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1] and [r["batches"] for r in reports] == [2, 2]
    scores = [[{k: v for k, v in row.items() if k != "seconds"} for row in r["history"]] for r in reports]
    assert scores[0] == scores[1]  # replicated validation: every rank has the same losses and Dice
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("astrid-torchrun").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["processes"] == "2"

"""Batch phases on Dask: same bytes as the serial path, killed workers, resume, grids."""

import json
import os
import shutil
import signal
import sys
import threading
import time

import cloudpickle
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import Client, KilledWorker, WorkerPlugin
from distributed.client import FutureCancelledError
from distributed.utils import key_split

from astrid import cli, cluster, runs
from astrid.differencing import difference_dataset
from astrid.evaluate import collect_candidates
from astrid.manifest import MANIFEST_NAME, Manifest, sha256_file
from astrid.simulate import generate_dataset
from astrid.simulate.dataset import PARTIAL_NAME

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

SMALL = dict(n_fields=3, n_epochs=1, image_size=64, seed=2, n_cosmic_rays=1, n_hot_pixels=1)


@pytest.fixture(scope="module")
def client():
    with cluster.local_cluster(2, dashboard_address=None) as local, Client(local) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def serial_dataset(tmp_path_factory):
    """The reference: generated and differenced in this process."""
    manifest = generate_dataset(tmp_path_factory.mktemp("serial") / "ds", scheduler="serial", **SMALL)
    return difference_dataset(manifest, scheduler="serial")


PRODUCTS = ("difference", "score", "psf_difference", "diff_mask")


def _content(manifest):
    return manifest.samples, manifest.files


def _generated(manifest):
    """Samples and files of the generation phase alone (differencing products left out)."""
    samples = [{k: v for k, v in s.items() if k not in PRODUCTS} for s in manifest.samples]
    products = {s[k] for s in manifest.samples for k in PRODUCTS if k in s}
    return samples, {rel: d for rel, d in manifest.files.items() if rel not in products}


class KillOnce(WorkerPlugin):
    """Kill this worker's process ``delay`` seconds after a task of ``prefix`` starts, once.

    A marker file remembers the kill (the plugin stays registered, harmless, afterwards);
    with ``index``, only task number ``index`` is hit.
    """

    def __init__(self, marker, prefix, *, index=None, delay=0.0):
        self.marker, self.prefix, self.index, self.delay = str(marker), prefix, index, delay

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or key_split(key) != self.prefix or os.path.exists(self.marker):
            return
        if self.index is not None and not str(key).endswith(f"-{self.index}"):
            return
        open(self.marker, "w").close()
        threading.Thread(target=self._kill, daemon=True).start()

    def _kill(self):
        time.sleep(self.delay)
        os.kill(os.getpid(), signal.SIGKILL)


def _unrecorded(manifest):
    on_disk = {p.relative_to(manifest.root).as_posix() for p in manifest.root.rglob("*") if p.is_file()}
    return on_disk - set(manifest.files) - {MANIFEST_NAME}


def test_resolve_scheduler(monkeypatch):
    monkeypatch.delenv(cluster.ENV_SCHEDULER, raising=False)
    assert cluster.resolve_scheduler(None) == "serial"
    assert cluster.resolve_scheduler("local") == "local"
    assert cluster.resolve_scheduler("tls://10.0.0.1:8786") == "tls://10.0.0.1:8786"
    assert cluster.resolve_scheduler("/shared/scheduler.json") == "/shared/scheduler.json"
    monkeypatch.setenv(cluster.ENV_SCHEDULER, "tcp://10.0.0.2:8786")
    assert cluster.resolve_scheduler(None) == "tcp://10.0.0.2:8786"
    assert cluster.resolve_scheduler("serial") == "serial"  # an explicit choice wins
    monkeypatch.setenv(cluster.ENV_SCHEDULER, "lokal")
    with pytest.raises(ValueError, match="ASTRID_DASK_SCHEDULER='lokal'"):
        cluster.resolve_scheduler(None)
    with pytest.raises(ValueError, match="scheduler must be"):
        cluster.resolve_scheduler(8786)
    assert cluster.worker_threads() is None


def test_map_items_keeps_order_and_reports_failures(client):
    seen, saved = [], []
    for scheduler in ("serial", client):
        out = cluster.map_items(int, ["10", "11", "111"], scheduler=scheduler, shared={"base": 2},
                                on_result=lambda i, r: seen.append((i, r)))
        assert out == [2, 3, 7]
    assert sorted(seen) == sorted(2 * [(0, 2), (1, 3), (2, 7)])
    with pytest.raises(ValueError, match="invalid literal"):
        cluster.map_items(int, ["1", "12"], scheduler=client, shared={"base": 2}, retries=0,
                          checkpoint=lambda: saved.append(True))
    assert cluster.map_items(int, [], scheduler=client) == []


def test_generation_and_differencing_match_serial_bytes(client, serial_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.ENV_SCHEDULER, client.scheduler.address)  # scheduler=None -> the env
    dask_made = generate_dataset(tmp_path / "ds", **SMALL)
    assert not (tmp_path / "ds" / PARTIAL_NAME).exists()
    dask_made = difference_dataset(dask_made, threads=None)
    assert _content(dask_made) == _content(serial_dataset)
    assert dask_made.verify() == [] and _unrecorded(dask_made) == set()
    saved = json.loads(dask_made.path.read_text())
    assert saved["samples"] == serial_dataset.samples and saved["generator"] == serial_dataset.generator


def test_cli_builds_the_committed_tiny_dataset_on_the_cluster(client, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert cli.main(["data", "build", "tiny", "--out", str(out), "--scheduler",
                     client.scheduler.address]) == 0  # regenerate() checks every recorded sha256
    assert "dashboard" in capsys.readouterr().out
    assert cli.main(["data", "build", "tiny", "--out", str(out), "--resume"]) == 0  # nothing to do
    assert cli.main(["data", "build", "tiny", "--out", str(out)]) == 2  # never overwrites


def test_candidates_match_serial(client, serial_dataset):
    import torch

    from astrid.metrics import StageTimer
    from astrid.model.bundle import ModelConfig, TrainedModel
    from astrid.model.net import UNetSpec, build_unet

    torch.manual_seed(0)
    spec = UNetSpec.named("tiny", n_channels=2)
    model = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("difference", "score")))
    samples = serial_dataset.samples
    timers = {"serial": StageTimer(), "dask": StageTimer()}
    serial = collect_candidates(serial_dataset, samples, model, device="cpu", scheduler="serial",
                                timer=timers["serial"])
    spread = collect_candidates(serial_dataset, samples, model, device="cpu", scheduler=client,
                                timer=timers["dask"])
    assert sum(len(image.baseline) for image in serial) > 0
    for one, other, sample in zip(serial, spread, samples, strict=True):
        assert one.sample is sample and other.sample is sample
        pd.testing.assert_frame_equal(one.unet, other.unet)
        pd.testing.assert_frame_equal(one.baseline, other.baseline)
        assert np.array_equal(one.segmentation, other.segmentation)
        assert np.array_equal(one.unusable, other.unusable)
    for timer in timers.values():
        assert timer.calls == {"inference": 3, "candidates": 3, "features": 3}


def test_grid_combinations_run_concurrently_in_their_own_folders(client, tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('output_dir = ""\nscale = 1')
    params.metadata["tags"] = ["parameters"]
    notebook.cells = [params, nbformat.v4.new_code_cell(
        "import os\nfrom astrid.runs import record_outputs\n"
        "assert scale != 3, 'unlucky scale'\n"
        "record_outputs(output_dir, value=21 * scale, worker=os.getppid())")]
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"preset": str(tmp_path / "nb.ipynb"), "grid": {"scale": [1, 2, 3]}}))
    client.wait_for_workers(2)
    batch, rows = runs.run_grid(grid, out=tmp_path / "batch", progress=False, scheduler=client)
    assert [r["run"] for r in rows] == ["000", "001", "002"]
    assert [r["status"] for r in rows[:2]] == ["succeeded", "succeeded"]
    assert "unlucky scale" in rows[2]["status"]
    outputs = [runs.read_outputs(batch / r["run"] / "nb") for r in rows[:2]]
    assert [o["value"] for o in outputs] == [21, 42]
    worker_pids = set(client.run(os.getpid).values())
    assert {o["worker"] for o in outputs} <= worker_pids  # kernels were started by the workers
    summary = pd.read_csv(batch / "summary.csv")
    assert list(summary["scale"]) == [1, 2, 3]


def test_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(client, serial_dataset, tmp_path):
    marker = tmp_path / "killed"
    client.wait_for_workers(2)
    client.register_plugin(KillOnce(marker, "generate_field", delay=0.05), name="kill")
    made = generate_dataset(tmp_path / "ds", scheduler=client, **SMALL)
    assert marker.exists()  # a worker did die mid-run
    assert _generated(made) == _generated(serial_dataset) and made.verify() == []
    ids = [s["id"] for s in made.samples]
    assert len(ids) == len(set(ids)) == SMALL["n_fields"] * SMALL["n_epochs"]
    assert all(rel.split("/")[-1].startswith(".") for rel in _unrecorded(made))  # only temp files


def test_interrupted_generation_resumes_skipping_finished_fields(client, serial_dataset, tmp_path):
    out = tmp_path / "ds"
    client.restart(wait_for_workers=True)  # fresh workers: none still dying from the kill test before
    client.wait_for_workers(2)
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    client.register_plugin(KillOnce(tmp_path / "killed", "generate_field", index=2), name="kill")
    try:  # the killed task fails; results that lived only on the dead worker may be lost with it
        with pytest.raises((KilledWorker, FutureCancelledError)):
            generate_dataset(out, scheduler=client, **SMALL)
    finally:
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 3))
    assert not (out / MANIFEST_NAME).exists()
    partial = Manifest.load(out / PARTIAL_NAME)  # what had arrived before the failure
    assert 2 not in {s["field"] for s in partial.samples} and partial.verify() == []
    before = {rel: (out / rel).stat().st_mtime_ns for rel in partial.files}
    (out / "f0002").mkdir(exist_ok=True)
    (out / "f0002" / "reference.fits").write_bytes(b"half a file")  # what a dead worker may leave
    with pytest.raises(FileExistsError, match="resume"):
        generate_dataset(out, scheduler=client, **SMALL)
    with pytest.raises(FileExistsError, match="other settings"):
        generate_dataset(out, scheduler=client, resume=True, **{**SMALL, "seed": 3})
    done = generate_dataset(out, scheduler=client, resume=True, **SMALL)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in partial.files} == before  # not redone
    assert _generated(done) == _generated(serial_dataset) and done.verify() == []
    assert len(done) == 3 and not (out / PARTIAL_NAME).exists()
    again = generate_dataset(out, resume=True, **SMALL)  # finished: returned as it is
    assert again.info == done.info


def test_differencing_resume_redoes_only_missing_or_damaged_samples(serial_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(serial_dataset.root, root)
    manifest = Manifest.load(root)
    first, second, third = manifest.samples
    for key in ("difference", "score", "psf_difference", "diff_mask"):
        del manifest.files[third.pop(key)]  # never finished
    manifest.save()
    (root / second["score"]).write_bytes(b"torn")  # damaged after being recorded
    kept = (root / first["difference"]).stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="resume=True"):
        difference_dataset(manifest)
    with pytest.raises(ValueError, match="cannot resume"):
        difference_dataset(manifest, resume=True, psf_source="moffat")
    done = difference_dataset(manifest, resume=True)
    assert (root / first["difference"]).stat().st_mtime_ns == kept
    assert _content(done) == _content(serial_dataset) and done.verify() == []
    assert sha256_file(root / second["score"]) == serial_dataset.files[second["score"]]


def test_serial_generation_resume_keeps_intact_fields(serial_dataset, tmp_path):
    """An interrupted dataset: field 2 never recorded, field 1 damaged after it was recorded."""
    out = tmp_path / "ds"
    made = generate_dataset(out, scheduler="serial", **SMALL)
    made.samples = [s for s in made.samples if s["field"] != 2]
    made.files = {rel: d for rel, d in made.files.items() if not rel.startswith("f0002/")}
    made.save(out / PARTIAL_NAME)
    (out / MANIFEST_NAME).unlink()
    (out / "f0001" / "e00_science.fits").write_bytes(b"torn")
    kept = {rel: (out / rel).stat().st_mtime_ns for rel in made.files if rel.startswith("f0000/")}
    done = generate_dataset(out, scheduler="serial", resume=True, **SMALL)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in kept} == kept
    assert _generated(done) == _generated(serial_dataset) and done.verify() == []

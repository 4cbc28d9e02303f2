"""Monitoring: input statistics, drift against the training data, scoring runs dated by their data."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.time import Time

import astrid
from astrid import cli, monitor, tracking
from astrid.alerts import AlertTable, read_alerts
from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet, save_model

ZTF = Path(astrid.__file__).parents[1].parent / "shared" / "data" / "ztf_alerts"
ALERTS = ["kowalski/data/ztf_alerts/20200202/1105522281015015000.avro",
          "kowalski/data/ztf_alerts/20200202/1127495406315015005.avro",
          "kowalski/data/ztf_alerts/20231012/2475433850315015003.avro"]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A throw-away SQLite store for this module (tests use model names of their own)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("ASTRID_MLFLOW_ARTIFACT_ROOT", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield uri


def _alerts(n_exposures, per_exposure, *, noise=5.0, fwhm=2.0, jd0=2459000.5, seed=0):
    """Alert stamps: sky 100 DN, one star of width ``fwhm``; science noise varies by exposure, the
    reference is a deeper coadd of fixed noise 2 DN."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((63, 63))
    stamps, rows = [], []
    for e in range(n_exposures):
        sigma = noise * rng.lognormal(0.0, 0.1)
        seeing = fwhm * rng.lognormal(0.0, 0.1)
        jd = jd0 + e * 0.01
        star = 500 * np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * (seeing / 2.3548) ** 2))
        for k in range(per_exposure):
            science = 100 + star + rng.normal(0, sigma, (63, 63))
            reference = 100 + star + rng.normal(0, 2.0, (63, 63))
            stamps.append(np.stack([science, reference, science - reference]))
            rows.append({"candid": 1000 * e + k, "jd": jd, "field": 600, "rcid": 3,
                         "fwhm": seeing * rng.lognormal(0.0, 0.05)})
    return AlertTable(np.asarray(stamps, np.float32), pd.DataFrame(rows))


# --------------------------------------------------------------------------- statistics and drift


def test_input_statistics_measure_noise_dates_and_exposures():
    table = _alerts(4, 3, noise=5.0, seed=1)
    stats = monitor.input_statistics(table, scores=pd.DataFrame({"candid": [0, 1001], "score": [0.2, 0.9]}))
    assert stats.n_items == 12 and stats.summary["n_exposures"] == 4
    assert stats.mjd_start == pytest.approx(2459000.5 - 2400000.5)
    assert stats.mjd_end == pytest.approx(stats.mjd_start + 0.03)
    assert stats.summary["science_background/median"] == pytest.approx(100, abs=0.5)
    assert stats.summary["science_noise/median"] == pytest.approx(5.0, rel=0.15)
    assert stats.summary["reference_noise/median"] == pytest.approx(2.0, rel=0.1)
    # science minus reference: independent noises add in quadrature
    assert stats.summary["difference_noise/median"] == pytest.approx(np.hypot(5.0, 2.0), rel=0.15)
    scored = stats.features.set_index("id")["score"]
    assert scored[0] == 0.2 and scored[1001] == 0.9 and scored.isna().sum() == 10


def test_drift_flags_a_shifted_batch_and_not_an_unshifted_one():
    reference = monitor.input_statistics(_alerts(30, 4, seed=0))
    same = monitor.drift_report(reference, monitor.input_statistics(_alerts(15, 4, seed=1)))
    assert not same.shifted and same.shifted_features == ()
    noisier = monitor.drift_report(reference, monitor.input_statistics(_alerts(15, 4, noise=8.0, seed=2)))
    # the science noise changed; the sky, the reference coadd and the seeing did not
    assert noisier.shifted_features == ("science_noise", "difference_noise")
    row = noisier.table.set_index("feature").loc["science_noise"]
    assert row.unit == "exposure" and row.n_new == 15 and row.n_reference == 30
    assert row.psi > monitor.PSI_THRESHOLD and row.ks_pvalue < monitor.KS_ALPHA
    blurred = monitor.drift_report(reference, monitor.input_statistics(_alerts(15, 4, fwhm=3.5, seed=3)))
    assert "psf_fwhm" in blurred.shifted_features and "science_noise" not in blurred.shifted_features
    flat = blurred.metrics()
    assert flat["shifted"] == 1.0 and flat["psf_fwhm/shifted"] == 1.0
    assert "score/psi" not in flat  # no scores given: not tested


def test_items_of_few_exposures_are_not_mistaken_for_a_shift():
    """Forty alerts from two ordinary exposures: per item they would differ, per exposure they cannot."""
    reference = monitor.input_statistics(_alerts(30, 4, seed=0))
    clustered = monitor.input_statistics(_alerts(2, 20, seed=5))
    report = monitor.drift_report(reference, clustered)
    assert not report.shifted
    assert set(report.table.loc[report.table.unit == "exposure", "n_new"]) == {2}
    # Counted per item, the same data would be flagged: why exposures are the unit.
    items = clustered.features.drop(columns="exposure")
    per_item = monitor.drift_report(reference.features.drop(columns="exposure"), items)
    assert per_item.shifted


def test_score_distribution_shift_is_flagged_per_item():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"id": range(400), "score": rng.beta(2, 5, 400)})
    steady = pd.DataFrame({"id": range(200), "score": rng.beta(2, 5, 200)})
    bolder = pd.DataFrame({"id": range(200), "score": rng.beta(5, 2, 200)})
    assert not monitor.drift_report(reference, steady, features=["score"]).shifted
    report = monitor.drift_report(reference, bolder, features=["score"])
    assert report.shifted_features == ("score",)
    assert report.table.loc[0, "bins"] == 10


def test_population_stability_index_properties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert monitor.population_stability_index(a, a) == pytest.approx(0.0, abs=1e-12)
    small, large = (monitor.population_stability_index(a, a + d) for d in (0.2, 1.0))
    assert 0 < small < 0.1 < monitor.PSI_THRESHOLD < large
    assert np.isnan(monitor.population_stability_index(a, [np.nan]))
    with pytest.raises(ValueError, match="bins"):
        monitor.population_stability_index(a, a, bins=1)
    with pytest.raises(ValueError, match="unknown feature"):
        monitor.drift_report(pd.DataFrame(), pd.DataFrame(), features=["colour"])


def test_scoring_metrics_against_truth_and_skips():
    scores = pd.DataFrame({"candid": [1, 2, 3, 4, 5], "score": [0.9, 0.8, 0.3, 0.6, np.nan],
                           "skipped_reason": ["", "", "", "", "bad_shape: 62x63"]})
    meta = pd.DataFrame({"candid": [1, 2, 3, 4], "label_real": [1, 1, 1, 0]})
    out = monitor.scoring_metrics(scores, meta)
    assert out["n_scored"] == 4 and out["n_skipped"] == 1 and out["n_labelled"] == 4
    assert (out["precision"], out["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert out["auc_vs_truth"] == pytest.approx(2 / 3)  # the bogus alert outranks one of three real ones
    assert out["real_fraction"] == 0.75
    with pytest.raises(ValueError, match="threshold"):
        monitor.scoring_metrics(scores, meta, threshold=1.0)


def test_split_by_date_orders_and_partitions():
    table = _alerts(6, 2, seed=0)
    table.meta["jd"] = np.repeat([2459003.7, 2459000.6, 2459001.2, 2459000.7, 2459005.1, 2459001.9], 2)
    batches = monitor.split_by_date(table, n_batches=3)
    assert [len(b) for b in batches] == [4, 4, 4]
    ends = [(b.meta.jd.min(), b.meta.jd.max()) for b in batches]
    assert all(e0[1] <= e1[0] for e0, e1 in zip(ends, ends[1:], strict=False))
    nights = monitor.split_by_date(table, days=1.0)  # UTC days: a JD day starts at noon, an MJD day at 0h
    assert [sorted(set(b.meta.jd)) for b in nights] == [
        [2459000.6, 2459000.7, 2459001.2], [2459001.9], [2459003.7], [2459005.1]]
    with pytest.raises(ValueError, match="exactly one"):
        monitor.split_by_date(table)


# --------------------------------------------------------------------------- tracking over time


def _log(mjd, *, model="astrid-unet-test", value=0.5, **options):
    return tracking.log_scoring_run({"auc_vs_truth": value}, mjd_start=mjd, mjd_end=mjd + 0.4,
                                    model_name=model, statistics={"science_noise/median": 5.0},
                                    drift={"shifted": 0.0}, **options)


def test_history_is_ordered_by_observation_date(store):
    from mlflow.tracking import MlflowClient

    for mjd, value in ((59010.0, 0.7), (59000.0, 0.9), (59005.0, 0.8)):
        done = _log(mjd, value=value)
        assert done.tracked
    _log(59001.0, model="another-model")
    history = tracking.performance_history("astrid-unet-test")
    assert history["mjd_start"].tolist() == [59000.0, 59005.0, 59010.0]
    assert history["auc_vs_truth"].tolist() == [0.9, 0.8, 0.7]
    assert history["mjd"].tolist() == pytest.approx([59000.2, 59005.2, 59010.2])
    assert history.loc[0, "date_start"] == "2020-05-31T00:00:00+00:00"
    assert {"input/science_noise/median", "drift/shifted"} <= set(history.columns)
    assert {"astrid-unet-test", "another-model"} <= set(tracking.performance_history()["model_name"])
    run = MlflowClient(tracking_uri=store).get_run(history.loc[0, "run_id"])
    assert run.info.start_time == (59000.0 - 40587.0) * 86_400_000  # the observation, not the scoring
    metric = MlflowClient(tracking_uri=store).get_metric_history(run.info.run_id, "auc_vs_truth")[0]
    assert metric.step == 59000 and run.data.tags["observation_mjd_end"] == "59000.400000"


def test_logging_falls_back_when_the_store_is_unreachable(tmp_path):
    with pytest.warns(tracking.TrackingWarning, match="recorded locally"):
        late = _log(59020.0, tracking_uri=UNREACHABLE, output_dir=tmp_path, value=0.6)
    with pytest.warns(tracking.TrackingWarning):
        _log(59002.0, tracking_uri=UNREACHABLE, output_dir=tmp_path, value=0.95)
    assert not late.tracked and Path(late.local_record).is_file()
    with pytest.warns(tracking.TrackingWarning, match="cannot read scoring runs"):
        history = tracking.performance_history("astrid-unet-test", tracking_uri=UNREACHABLE,
                                               local_records=tmp_path)
    assert history["mjd_start"].tolist() == [59002.0, 59020.0]
    assert history["auc_vs_truth"].tolist() == [0.95, 0.6] and not history["tracked"].any()
    with pytest.raises(ValueError, match="mjd_start <= mjd_end"):
        tracking.log_scoring_run({}, mjd_start=2.0, mjd_end=1.0, model_name="m")


def test_record_scoring_logs_statistics_metrics_and_drift(store, tmp_path):
    reference = monitor.input_statistics(_alerts(20, 3, seed=0))
    batch = _alerts(10, 3, noise=9.0, seed=4)
    scores = pd.DataFrame({"candid": batch.meta.candid, "score": np.linspace(0, 1, len(batch))})
    record = monitor.record_scoring(batch, scores=scores, reference=reference, model_name="m",
                                    model_version="2", label="night-1")
    assert record.tracked.tracked and record.drift.shifted and record.metrics["n_scored"] == 30
    row = tracking.performance_history("m").iloc[0]
    assert row.model_version == "2" and row.source == "night-1"
    assert row["drift/science_noise/shifted"] == 1.0 and row["input/n_exposures"] == 10
    assert row["mjd_start"] == pytest.approx(batch.meta.jd.min() - 2400000.5, abs=1e-6)
    undated = AlertTable(batch.triplets[:2], batch.meta.drop(columns="jd").iloc[:2])
    with pytest.raises(ValueError, match="observation date"):
        monitor.record_scoring(undated, model_name="m")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two simulated ZTF fields, one epoch each, with ZOGY products."""
    from astrid.differencing import difference_dataset
    from astrid.simulate import generate_dataset

    manifest = generate_dataset(tmp_path_factory.mktemp("sim") / "d", n_fields=2, n_epochs=1, image_size=64,
                                seed=2, n_cosmic_rays=2, n_hot_pixels=2, split_fractions=(0.5, 0.0, 0.5))
    difference_dataset(manifest)
    return manifest


def test_synthetic_alerts_carry_truth_and_dates(dataset):
    sample = dataset.samples[0]
    table = monitor.synthetic_alerts(dataset, samples=[sample])
    truth = pd.read_csv(dataset.file(sample, "truth"))
    assert len(table) == len(truth) and table.triplets.shape[1:] == (3, 63, 63)
    assert (table.meta.label_real == table.meta.kind.isin(["supernova", "variable", "moving"])).all()
    assert (table.meta.jd == sample["mjd"] + 2400000.5).all()
    noise = monitor.input_statistics(table).features["difference_noise"]
    bright = table.meta.index[(table.meta.kind == "supernova") & (table.meta.snr > 20)]
    for i in bright:  # a bright supernova sits at the centre of its difference stamp
        assert table.triplets[i, 2, 30:33, 30:33].mean() > 5 * noise[i]
    header_sigma = float(fits.getheader(dataset.file(sample, "science"))["SKYSIG"])
    assert noise.size and monitor.input_statistics(table).summary["science_noise/median"] == pytest.approx(
        header_sigma, rel=0.3)  # the stamps keep the image's sky noise (mirrored, not padded flat)
    assert len(monitor.synthetic_alerts(dataset, max_per_sample=3)) == 3 * len(dataset)


def test_a_study_on_images_is_logged_with_the_test_split_dates(store, dataset):
    """How the study logs itself: image features of the test split, the study's nested metrics."""
    study = {"unet": {"precision": 0.9, "artifact_rejection": {"cosmic_ray": 1.0}}}
    record = monitor.record_scoring(dataset, splits=("test",), metrics=study, model_name="study-model",
                                    reference=monitor.input_statistics(dataset, splits=("train",)))
    test = [s for s in dataset.samples if s["split"] == "test"]
    assert record.statistics.n_items == len(test) and record.statistics.mjd_start == test[0]["mjd"]
    assert not record.drift.shifted  # one image per side: too few exposures to test
    row = tracking.performance_history("study-model").iloc[0]
    assert row["unet/precision"] == 0.9 and row["unet/artifact_rejection/cosmic_ray"] == 1.0
    assert row["input/psf_fwhm/median"] == pytest.approx(
        fits.getheader(dataset.file(test[0], "science"))["FWHMPIX"])


def test_score_alerts_cli_logs_a_scoring_run_dated_by_the_alerts(store, tmp_path, capsys):
    if not (ZTF / "labels.csv").is_file():
        pytest.skip("shared ZTF alert data not found beside the repository")
    folder = tmp_path / "in"
    folder.mkdir()
    for rel in ALERTS:
        shutil.copy(ZTF / rel, folder)
    spec = UNetSpec.named("tiny", n_channels=2)
    bundle = save_model(TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("science", "difference"))),
                        tmp_path / "model")
    out = tmp_path / "scores.csv"
    assert cli.main(["score-alerts", str(folder), "--bundle", str(bundle), "--out", str(out)]) == 0
    assert "logged the scoring run" in capsys.readouterr().out
    jd = read_alerts(folder).meta["jd"]
    history = tracking.performance_history(str(bundle))
    assert len(history) == 1 and history.loc[0, "n_scored"] == 3
    assert history.loc[0, "mjd_start"] == pytest.approx(jd.min() - 2400000.5, abs=1e-6)
    assert history.loc[0, "mjd_end"] == pytest.approx(jd.max() - 2400000.5, abs=1e-6)
    assert history.loc[0, "date_start"][:16] == Time(jd.min(), format="jd").isot[:16]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # --no-tracking: nothing logged, nothing to warn about
        assert cli.main(["score-alerts", str(folder), "--bundle", str(bundle), "--out", str(out),
                         "--no-tracking"]) == 0
    assert len(tracking.performance_history(str(bundle))) == 1

"""Cross-validated real-data study: folds never share an object, every alert is scored out of fold."""

import numpy as np
import pandas as pd
import pytest
from conftest import KOWALSKI

from astrid.alert_study import META_FEATURES, alert_features, crossval_alerts, fold_assignment
from astrid.alerts import alerts_to_manifest
from astrid.model import load_model
from astrid.realdata import load_alerts, resolve_model


def test_folds_never_split_an_object_and_balance():
    rng = np.random.default_rng(0)
    objects = rng.integers(0, 40, 200)
    meta = pd.DataFrame({"objectId": [f"o{i}" for i in objects],
                         "jd": 2459000.2 + objects // 8 + rng.random(200) * 0.4})  # 5 nights
    folds = fold_assignment(meta, folds=5, seed=1)
    assert meta.assign(fold=folds).groupby("objectId")["fold"].nunique().max() == 1
    assert np.bincount(folds).min() >= 20  # 40 objects dealt largest first: no empty or tiny fold
    assert (fold_assignment(meta, folds=5, seed=1) == folds).all()  # seeded
    # one object seen on nights 0 and 1 ties those nights together
    linked = pd.concat([meta, pd.DataFrame({"objectId": ["o0"], "jd": [2459001.3]})], ignore_index=True)
    by_night = fold_assignment(linked, folds=2, by="night")
    nights = np.floor(linked["jd"])
    assert linked.assign(fold=by_night, night=nights).groupby("night")["fold"].nunique().max() == 1
    assert by_night[nights == 2459000].tolist() == [by_night[-1]] * int((nights == 2459000).sum())


def test_fold_assignment_errors_name_the_problem():
    meta = pd.DataFrame({"objectId": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="by must be one of"):
        fold_assignment(meta, by="moon")
    with pytest.raises(ValueError, match="lacks \\['jd'\\]"):
        fold_assignment(meta, by="night")
    with pytest.raises(ValueError, match="only 3 independent group"):
        fold_assignment(meta, folds=4)


@pytest.fixture(scope="module")
def mixed_alerts(ztf, tmp_path_factory):
    """Real alerts with both drb classes: kowalski (mostly real) and fink's negative-heavy set."""
    paths = [ztf / KOWALSKI, ztf / "fink-broker/datasim/basic_alerts/local"]
    return alerts_to_manifest(paths, tmp_path_factory.mktemp("mixed") / "alerts", max_nan_fraction=0.05,
                              labels_csv=ztf / "labels.csv", seed=0, max_alerts=40)


def test_alert_features_are_finite_and_keep_ztf_scores_out(mixed_alerts):
    table = load_alerts(mixed_alerts, max_alerts=12)
    features = alert_features(table)
    assert len(features) == 12 and np.isfinite(features.drop(columns="candid").to_numpy()).all()
    assert {"zogy_peak_score", "zogy_psf_snr", *META_FEATURES} <= set(features.columns)
    assert not {"rb", "drb"} & set(features.columns)
    positive = table.meta["isdiffpos"].isin(["t", "1"]).to_numpy()
    assert (features["positive"].to_numpy() == positive).all()


def test_crossval_scores_every_alert_out_of_fold(mixed_alerts, bundle, tmp_path):
    before = load_model(bundle).net.state_dict()
    cv = crossval_alerts(bundle, mixed_alerts, output_dir=tmp_path, folds=3, real_fractions=(1.0,),
                         epochs=1, tiles_per_epoch=16, batch_size=8, calibrate=False, track=True,
                         model_name="test-crossval-finetuned")
    n = len(mixed_alerts.samples)
    assert set(cv.scores["method"]) == {"unet_synthetic", "unet_r1", "traditional", "ensemble"}
    for _, part in cv.scores.groupby("method"):
        assert len(part) == n and part["candid"].is_unique
        assert part.groupby("objectId")["fold"].nunique().max() == 1
        assert part["score"].between(0, 1).all()
    assert len(cv.runs) == 3 and cv.runs["real_fraction"].eq(1.0).all()
    summary = cv.summary.set_index("method")
    assert summary.loc["unet_synthetic", "delta_auc_vs_drb_label"] == 0
    assert summary["n"].eq(n).all()
    scores = cv.scores.pivot(index="candid", columns="method", values="score")
    assert not np.allclose(scores["unet_r1"], scores["unet_synthetic"])  # fine-tuning changed the model
    assert (tmp_path / "crossval_summary.csv").is_file()
    tuned = load_model(cv.runs["bundle"].iloc[0])
    assert tuned.config.training["real_fraction"] == 1.0 and tuned.config.tile_size == 32
    changed = [k for k, v in tuned.net.state_dict().items() if v.is_floating_point()
               and not np.allclose(v.numpy(), before[k].numpy())]
    assert changed, "fine-tuning left every weight as it was"
    assert cv.runs["model_uri"].str.startswith("models:/test-crossval-finetuned/").all()
    model, name, version = resolve_model("test-crossval-finetuned")
    assert int(version) == 3 and model.config.training["finetuned"] is True  # one version per fold


def test_crossval_refuses_bad_options(mixed_alerts, bundle, tmp_path):
    with pytest.raises(ValueError, match="folds must be an integer >= 3"):
        crossval_alerts(bundle, mixed_alerts, output_dir=tmp_path, folds=2)
    with pytest.raises(ValueError, match="real_fractions must be in"):
        crossval_alerts(bundle, mixed_alerts, output_dir=tmp_path, real_fractions=(0.0,))

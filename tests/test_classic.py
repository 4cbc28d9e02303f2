import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from astrid.classic import EnsembleScorer, RealBogusClassifier
from astrid.metrics import average_precision, expected_calibration_error


def _clusters(n, seed):
    """Two overlapping Gaussian clusters in three features (one of them noise)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    x = rng.normal(0, 1, (n, 3))
    x[:, 0] += 2.0 * y
    x[:, 1] -= 1.5 * y
    return pd.DataFrame(x, columns=["sharpness", "dipole_ratio", "noise"]), y


def test_classifier_separates_clusters_with_calibrated_probabilities():
    x, y = _clusters(800, 0)
    x_test, y_test = _clusters(3000, 1)
    clf = RealBogusClassifier(calibration="sigmoid", n_threads=1).fit(x, y)
    p = clf.predict_proba(x_test)
    assert p.shape == (3000,) and np.all((p >= 0) & (p <= 1))
    assert clf.feature_names_ == ("sharpness", "dipole_ratio", "noise")
    accuracy = np.mean((p > 0.5) == y_test)
    assert accuracy > 0.85
    assert expected_calibration_error(p, y_test) < 0.05
    iso = RealBogusClassifier(model="random_forest", n_threads=1).fit(x, y)
    assert expected_calibration_error(iso.predict_proba(x_test), y_test) < 0.06


def test_classifier_save_load_roundtrip(tmp_path):
    x, y = _clusters(200, 2)
    clf = RealBogusClassifier(features=("sharpness", "dipole_ratio"), cv=3, n_threads=1)
    clf.fit(x, y)
    path = clf.save(tmp_path / "rb.skops")
    again = RealBogusClassifier.load(path)
    assert again.features == ("sharpness", "dipole_ratio") and again.cv == 3
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))
    # the column order of the table does not matter, names do
    np.testing.assert_array_equal(again.predict_proba(x[x.columns[::-1]]), clf.predict_proba(x))


class _Gadget:
    def __init__(self):
        self.payload = "anything"


def test_load_refuses_untrusted_types_and_foreign_files(tmp_path):
    evil = tmp_path / "evil.skops"
    sio.dump({"format": "astrid.RealBogusClassifier", "version": 1, "estimator": _Gadget()}, evil)
    with pytest.raises(ValueError, match="refusing to load untrusted types .*_Gadget"):
        RealBogusClassifier.load(evil)
    foreign = tmp_path / "foreign.skops"
    sio.dump({"format": "something else"}, foreign)
    with pytest.raises(ValueError, match="is not a saved astrid.RealBogusClassifier"):
        RealBogusClassifier.load(foreign)
    with pytest.raises(FileNotFoundError):
        RealBogusClassifier.load(tmp_path / "missing.skops")


def test_classifier_bad_inputs():
    x, y = _clusters(60, 3)
    clf = RealBogusClassifier(cv=3, n_threads=1)
    bad = x.copy()
    bad.loc[3, "noise"] = np.nan
    with pytest.raises(ValueError, match=r"features contains NaN or infinite values in \['noise'\]"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="labels must be 1-D with 60 entries"):
        clf.fit(x, y[:10])
    with pytest.raises(ValueError, match="at least 3 real and 3 bogus"):
        clf.fit(x, np.zeros(60, bool))
    with pytest.raises(ValueError, match="features is empty"):
        clf.fit(x.iloc[:0], y[:0])
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict_proba(x)
    clf.fit(x, y)
    with pytest.raises(ValueError, match=r"features lacks columns \['noise'\]"):
        clf.predict_proba(x.drop(columns="noise"))
    with pytest.raises(ValueError, match="model must be one of"):
        RealBogusClassifier(model="svm")
    with pytest.raises(ValueError, match="calibration must be one of"):
        RealBogusClassifier(calibration="beta")


def _two_views(n, seed):
    """Two calibrated but independently noisy probabilities of the same label."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    logit_a = 1.2 * (2 * y - 1) + rng.normal(0, 1.3, n)
    logit_b = 1.0 * (2 * y - 1) + rng.normal(0, 1.3, n)
    return pd.DataFrame({"unet": 1 / (1 + np.exp(-logit_a)), "rb": 1 / (1 + np.exp(-logit_b))}), y


def test_ensemble_beats_its_parts_and_is_calibrated():
    val, y_val = _two_views(2000, 10)
    test, y_test = _two_views(4000, 11)
    ens = EnsembleScorer(columns=("unet", "rb")).fit(val, y_val)
    p = ens.predict_proba(test)
    n = int(y_test.sum())
    ap = {name: average_precision(test[name], y_test, n) for name in ("unet", "rb")}
    ap_ens = average_precision(p, y_test, n)
    assert ap_ens >= max(ap.values())
    assert np.all(ens.coef_ > 0)
    assert expected_calibration_error(p, y_test) < 0.03
    # a JSON round trip reproduces the scores exactly
    again = EnsembleScorer.from_dict(json.dumps(ens.to_dict()))
    np.testing.assert_array_equal(again.predict_proba(test), p)


def test_ensemble_bad_inputs():
    val, y = _two_views(100, 12)
    with pytest.raises(ValueError, match="not fitted"):
        EnsembleScorer().predict_proba(val)
    with pytest.raises(ValueError, match=r"scores must be probabilities in \[0, 1\]"):
        EnsembleScorer().fit(val * 2, y)
    with pytest.raises(ValueError, match=r"scores contains NaN or infinite values in \['rb'\]"):
        EnsembleScorer().fit(val.assign(rb=np.nan), y)
    with pytest.raises(ValueError, match="at least 1 real and 1 bogus"):
        EnsembleScorer().fit(val, np.ones(100, bool))
    with pytest.raises(ValueError, match="C must be positive"):
        EnsembleScorer(C=0)
    ens = EnsembleScorer().fit(val.to_numpy(), y)
    with pytest.raises(ValueError, match="scores has 1 columns, expected 2"):
        ens.predict_proba(val.to_numpy()[:, :1])

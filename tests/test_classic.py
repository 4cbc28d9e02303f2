import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from astrid.classic import EnsembleScorer, RealBogusClassifier, feature_ablation
from astrid.metrics import average_precision, expected_calibration_error, macro_f1


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


def _kind_table(n, rng):
    """Candidates whose shape tells bogus from real, colour supernovae from variables, history movers.

    A supernova is blue, a variable red, a moving object absent from the night's
    other bands (so shape and colour alone confuse it with a faint supernova);
    only the context column (a partner detection nearby) shows it moving.
    Colour is missing for a fifth of the rows, context for a third (no
    earlier epoch).
    """
    kinds = rng.choice(["supernova", "variable", "moving", "cosmic_ray", "hot_pixel", "background"], n)
    real = np.isin(kinds, ["supernova", "variable", "moving"])
    table = pd.DataFrame({
        "kind": kinds,
        "peak_score": rng.normal(8, 1, n) + 4 * ~real,
        "sharpness": rng.normal(0.3, 0.05, n) + 0.5 * np.isin(kinds, ["cosmic_ray", "hot_pixel"])
        + 0.3 * (kinds == "hot_pixel"),
        "colour_g_r": np.select([kinds == "supernova", kinds == "variable"], [-0.2, 0.8], -0.2)
        + rng.normal(0, 0.05, n),
        "motion_rate": np.where(kinds == "moving", rng.uniform(5, 100, n), np.nan),
    })
    table.loc[rng.random(n) < 0.2, "colour_g_r"] = np.nan
    table.loc[rng.random(n) < 0.3, "motion_rate"] = np.nan
    return table


def test_feature_ablation_compares_base_with_each_extra_set():
    rng = np.random.default_rng(1)
    train, test = _kind_table(900, rng), _kind_table(600, rng)
    result = feature_ablation(
        train, test, base_columns=["peak_score", "sharpness"],
        extra={"colour": ["colour_g_r"], "context": ["motion_rate"],
               "colour+context": ["colour_g_r", "motion_rate"]}, max_iter=50,
    )
    s = result.summary
    assert list(s.columns) == ["base", "colour", "context", "colour+context", "delta_colour",
                               "delta_context", "delta_colour+context", "n"]
    kinds = sorted(set(test.kind))
    assert list(s.index) == ["type_macro_f1", "type_macro_f1_all", *[f"recall/{k}" for k in kinds],
                             "bogus_rejection", "real_recall"]
    for variant in ("colour", "context", "colour+context"):
        assert np.allclose(s[f"delta_{variant}"], s[variant] - s["base"], equal_nan=True)
    # counts behind each row
    real = test.kind.isin(["supernova", "variable", "moving"])
    assert s.loc["type_macro_f1", "n"] == real.sum() and s.loc["type_macro_f1_all", "n"] == len(test)
    assert s.loc["recall/hot_pixel", "n"] == (test.kind == "hot_pixel").sum()
    assert s.loc["bogus_rejection", "n"] == (~real).sum()
    # shape alone rejects the bogus; colour types supernovae and variables; context finds the movers
    assert s.loc["bogus_rejection", "base"] > 0.95 and s.loc["real_recall", "base"] > 0.95
    assert s.loc["recall/variable", "colour"] > max(0.8, s.loc["recall/variable", "base"] + 0.4)
    assert s.loc["recall/moving", "context"] > s.loc["recall/moving", "colour"] + 0.2
    assert s.loc["type_macro_f1", "colour+context"] > max(s.loc["type_macro_f1", ["base", "colour",
                                                                                     "context"]]) + 0.02
    assert s.loc["type_macro_f1", "colour+context"] > 0.75
    # the study's type macro-F1 is over true transients called a transient, the other over all
    pred = result.predictions["colour+context"].to_numpy()
    typed = real.to_numpy() & np.isin(pred, ["supernova", "variable", "moving"])
    assert s.loc["type_macro_f1", "colour+context"] == pytest.approx(
        macro_f1(test.kind[typed], pred[typed], ["supernova", "variable", "moving"]))
    assert list(result.predictions.columns) == ["kind", "base", "colour", "context", "colour+context"]
    assert list(result.predictions.index) == list(test.index)
    assert result.columns["colour+context"] == ("peak_score", "sharpness", "colour_g_r", "motion_rate")
    # a test table whose extra columns are missing everywhere still gets predictions
    blind = test.assign(colour_g_r=np.nan, motion_rate=np.nan)
    assert len(result.classifiers["colour+context"].predict(blind)) == len(blind)


def test_feature_ablation_refuses_bad_input():
    table = _kind_table(60, np.random.default_rng(2))
    base = ["peak_score", "sharpness"]
    with pytest.raises(ValueError, match=r"test_table lacks columns \['motion_rate'\]"):
        feature_ablation(table, table.drop(columns="motion_rate"), base_columns=base,
                         extra={"context": ["motion_rate"]})
    with pytest.raises(ValueError, match="repeats base columns"):
        feature_ablation(table, table, base_columns=base, extra={"x": ["sharpness"]})
    with pytest.raises(ValueError, match="other than 'base'"):
        feature_ablation(table, table, base_columns=base, extra={"base": ["motion_rate"]})
    with pytest.raises(ValueError, match="names no columns"):
        feature_ablation(table, table, base_columns=base, extra={"context": []})
    with pytest.raises(ValueError, match="at least one variant"):
        feature_ablation(table, table, base_columns=base, extra={})
    with pytest.raises(ValueError, match="base_columns"):
        feature_ablation(table, table, base_columns=[], extra={"context": ["motion_rate"]})
    with pytest.raises(ValueError, match="train_table must be a non-empty DataFrame"):
        feature_ablation(table.iloc[:0], table, base_columns=base, extra={"context": ["motion_rate"]})
    with pytest.raises(ValueError, match="two different kinds"):
        feature_ablation(table.assign(kind="supernova"), table, base_columns=base,
                         extra={"context": ["motion_rate"]})


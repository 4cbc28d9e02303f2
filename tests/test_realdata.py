"""Real ZTF alerts through AstrID: cutout ZOGY vs ZTF, scoring (and its CLI), agreement, weak labels,
fine-tuning and curated catalogs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KOWALSKI

from astrid import cli
from astrid.alerts import AlertTable, alerts_to_manifest, read_alerts
from astrid.classes import CLASS_CODES, TRANSIENT_KINDS
from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet
from astrid.model.data import Normalisation, load_split
from astrid.realdata import (
    CATALOG_COLUMNS,
    SCORE_COLUMNS,
    AlertInputs,
    alert_inputs,
    compare_with_ztf,
    curate_catalogs,
    cutout_zogy,
    finetune_on_alerts,
    load_alerts,
    resolve_model,
    score_alerts,
    summarise_zogy,
    weak_label,
    weak_label_manifest,
    weak_label_map,
    zogy_on_alerts,
)

# Bright, clearly positive alerts (drb ~ 1, isdiffpos t) and one clearly negative (isdiffpos f).
POSITIVE = [f"{KOWALSKI}/20200202/1105522281015015000.avro",  # ZTF20aaelulu
            f"{KOWALSKI}/20200202/1127495406315015005.avro",  # ZTF20aajcdad
            f"{KOWALSKI}/20200202/1127561440015015001.avro",  # ZTF20aahgyet
            f"{KOWALSKI}/20231012/2475433850315015003.avro"]  # ZTF23abjjncy (asteroid)
NEGATIVE = f"{KOWALSKI}/20231012/2475433850015010009.avro"  # ZTF17aadcvhq, a fading variable


@pytest.fixture(scope="module")
def alerts_manifest(ztf, tmp_path_factory):
    folder = ztf / KOWALSKI / "20231012"
    return alerts_to_manifest(folder, tmp_path_factory.mktemp("alerts") / "alerts",
                              labels_csv=ztf / "labels.csv", max_alerts=8, seed=0)


def _stamp_triplet(*, sci_peak=300.0, ref_peak=0.0, sign=1.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((63, 63))
    blob = np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.1**2))
    sci = 100 + rng.normal(0, 5, (63, 63)) + sci_peak * blob
    ref = 100 + rng.normal(0, 1.5, (63, 63)) + ref_peak * blob
    return np.stack([sci, ref, sign * np.abs(sci - ref)]).astype(np.float32)


# --------------------------------------------------------------------------- cutout ZOGY


def test_zogy_on_alerts_agrees_with_ztf_on_clear_alerts(ztf):
    table = read_alerts([ztf / p for p in [*POSITIVE, NEGATIVE]])
    assert len(table) == 5
    frame = zogy_on_alerts(table)
    assert (frame["error"] == "").all()
    assert np.isfinite(frame[["correlation", "correlation_raw", "snr_ours"]].to_numpy()).all()
    assert (frame["correlation"] > 0.8).all(), frame[["objectId", "correlation"]]
    assert frame["sign_agrees"].all()
    assert frame.set_index("objectId").loc["ZTF17aadcvhq", "sign_ours"] == -1
    ratio = frame["snr_ours"] / frame["scorr_ztf"]
    assert ((ratio > 1 / 3) & (ratio < 3)).all(), ratio
    summary = summarise_zogy(frame)
    assert summary["n_alerts"] == 5 and summary["sign_agreement"] == 1.0
    assert summary["median_correlation"] > 0.9


def test_cutout_zogy_checks_its_inputs():
    stamps = _stamp_triplet()
    out = cutout_zogy(stamps, fwhm=float("nan"), psf="fwhm")
    assert out.fwhm_science == out.fwhm_reference == 2.5 and not out.psf_matched
    assert out.result.score_corr[31, 31] > 10
    with pytest.raises(ValueError, match="psf"):
        cutout_zogy(stamps, psf="gaussian")
    with pytest.raises(ValueError, match="non-finite"):
        cutout_zogy(np.full((3, 63, 63), np.nan))
    with pytest.raises(ValueError, match="constant"):
        cutout_zogy(np.ones((3, 63, 63)))


def test_zogy_failure_is_a_row_not_an_exception():
    table = AlertTable(np.ones((1, 3, 63, 63), np.float32),
                       pd.DataFrame([{"candid": 7, "objectId": "x", "isdiffpos": "t", "sigmapsf": 0.1}]))
    frame = zogy_on_alerts(table)
    assert "constant" in frame.loc[0, "error"] and np.isnan(frame.loc[0, "correlation"])
    assert summarise_zogy(frame)["n_failed"] == 1


# --------------------------------------------------------------------------- scoring and the CLI


def test_score_alerts_cli_writes_scores_and_skips_a_corrupt_file(ztf, bundle, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for rel in POSITIVE[:3]:
        shutil.copy(ztf / rel, folder)
    (folder / "corrupt.avro").write_bytes(b"Obj\x01 truncated junk")
    out = tmp_path / "scores.csv"
    assert cli.main(["score-alerts", str(folder), "--bundle", str(bundle), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "scored 3 alerts" in printed.out and "unreadable_file" in printed.err
    scores = pd.read_csv(out)
    assert list(scores.columns) == [c for c in SCORE_COLUMNS if c != "skipped_reason"]
    assert scores["candid"].dtype == np.int64  # exact: candids exceed 2**53
    assert set(scores["candid"]) == {int(Path(p).stem) for p in POSITIVE[:3]}
    assert scores["score"].between(0, 1).all() and scores["kind"].isin(TRANSIENT_KINDS).all()
    assert (scores["model_name"] == str(bundle)).all()
    skipped = pd.read_csv(tmp_path / "scores.skipped.csv")
    assert len(skipped) == 1 and skipped.loc[0, "skipped_reason"].startswith("unreadable_file")


def test_score_alerts_table_options_and_channels():
    stamps = np.stack([_stamp_triplet(seed=s) for s in range(3)])
    meta = pd.DataFrame({"candid": [2**62 + 1, 2**62 + 2, 2**62 + 3], "objectId": list("abc"),
                         "fwhm": [2.5, None, 3.0]})
    spec = UNetSpec.named("tiny", n_channels=2)
    model = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("science", "difference")))
    scores = score_alerts(AlertTable(stamps, meta), model, max_alerts=2, model_name="m", model_version="3")
    assert len(scores) == 2 and scores["candid"].tolist() == [2**62 + 1, 2**62 + 2]
    assert (scores["model_version"] == "3").all() and (scores["skipped_reason"] == "").all()
    assert scores["score_uncertainty"].between(0, 1).all()
    with pytest.raises(ValueError, match="difference"):
        score_alerts(AlertTable(stamps, meta), model, difference="mine")


def test_alert_inputs_score_like_the_table_and_subset_by_candid():
    stamps = np.stack([_stamp_triplet(seed=s) for s in range(3)])
    meta = pd.DataFrame({"candid": [11, 12, 13], "objectId": list("abc"), "fwhm": [2.5, 2.8, 3.0]})
    spec = UNetSpec.named("tiny", n_channels=2)
    model = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("difference", "score")))
    inputs = alert_inputs(AlertTable(stamps, meta), model.config.channels)
    assert isinstance(inputs, AlertInputs) and inputs.stacks.shape == (3, 2, 63, 63)
    direct = score_alerts(AlertTable(stamps, meta), model)
    pd.testing.assert_frame_equal(score_alerts(inputs, model), direct)
    part = score_alerts(inputs.subset([13, 11]), model)
    assert part["candid"].tolist() == [11, 13]
    np.testing.assert_allclose(part["score"], direct["score"].to_numpy()[[0, 2]])
    other = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("science", "difference")))
    with pytest.raises(ValueError, match="channels"):
        score_alerts(inputs, other)
    with pytest.raises(ValueError, match="channels"):
        alert_inputs(AlertTable(stamps, meta), ("difference", "colour"))


def test_resolve_model_errors_name_the_problem(bundle, tmp_path):
    empty = f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(ValueError, match="no registered model"):
        resolve_model(tracking_uri=empty)
    with pytest.raises(ValueError, match="either"):
        resolve_model("name", bundle=bundle)
    model, name, version = resolve_model(bundle=bundle)
    assert model.config.channels[-1] == "score" and version == ""


# --------------------------------------------------------------------------- agreement with ZTF


def test_compare_with_ztf_on_a_hand_made_case():
    scores = pd.DataFrame({"candid": [1, 2, 3, 4, 5, 6], "score": [0.9, 0.7, 0.6, 0.2, 0.1, np.nan],
                           "kind": ["moving"] * 6})
    meta = pd.DataFrame({"candid": [1, 2, 3, 4, 5, 6], "objectId": list("abcdef"),
                         "drb": [0.99, 0.9, 0.1, 0.8, 0.05, 0.9],
                         "ssdistnr": [0.2, -999.0, 0.8, 5.0, -999.0, 0.1],
                         "label_tns_class": ["", "SN Ia", "", "", "", ""]})
    out = compare_with_ztf(scores, meta)
    assert out["n_scored"] == 5  # the NaN score is left out
    # drb_label: 1, 1, 0, 1, 0 -> positive scores 0.9, 0.7, 0.2 vs negatives 0.6, 0.1: 5 of 6 pairs
    assert out["auc_vs_drb_label"] == pytest.approx(5 / 6)
    # asteroids 1 and 3 (0.9, 0.6) vs 0.7, 0.2, 0.1: 5 of 6 pairs
    assert out["auc_vs_asteroid"] == pytest.approx(5 / 6)
    assert out["drb_auc_vs_asteroid"] == pytest.approx(4 / 6)  # 0.99 beats all three, 0.1 beats 0.05
    assert out["asteroid_real_fraction"] == 1.0 and out["drb_asteroid_real_fraction"] == 0.5
    assert out["tns_real_fraction"] == 1.0
    assert out["agreement_with_drb"] == pytest.approx(3 / 5)
    assert out["disagreements"]["candid"].tolist()[:2] == [4, 3]
    assert set(out["auc"]["scorer"] + "/" + out["auc"]["label"]) == {
        "astrid/drb_label", "astrid/label_asteroid", "ztf_drb/label_asteroid"}


def test_compare_with_ztf_without_both_classes_gives_nan():
    scores = pd.DataFrame({"candid": [1, 2], "score": [0.9, 0.8]})
    meta = pd.DataFrame({"candid": [1, 2], "drb": [0.9, 0.95], "drb_label": [1, 1], "label_asteroid": [0, 0]})
    out = compare_with_ztf(scores, meta)
    assert np.isnan(out["auc_vs_drb_label"]) and np.isnan(out["asteroid_real_fraction"])
    with pytest.raises(ValueError, match="threshold"):
        compare_with_ztf(scores, meta, threshold=1.5)
    with pytest.raises(ValueError, match="score"):
        compare_with_ztf(scores.drop(columns="score"), meta)


# --------------------------------------------------------------------------- catalogs


def test_curate_catalogs_bands_and_evidence(tmp_path):
    meta = pd.DataFrame({
        "candid": [1, 2, 3, 4, 5, 6, 7, 8],
        "objectId": list("abcdefgh"),
        "drb": [0.99, 0.02, 0.5, 0.95, 0.3, np.nan, np.nan, 0.97],
        "ssdistnr": [-999.0, -999.0, -999.0, -999.0, 0.4, 0.5, -999.0, -999.0],
        "label_tns_class": ["", "", "", "SN II", "", "", "", ""],
        "source_file": [f"f{i}.avro" for i in range(8)],
    })
    scores = pd.DataFrame({"candid": range(1, 9), "score": [0.9, 0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.1],
                           "kind": ["supernova"] * 8})
    paths = curate_catalogs(scores, meta, tmp_path / "cat")
    tp, fp, amb = (pd.read_csv(paths[k]) for k in ("true_positives", "false_positives", "ambiguous"))
    for frame in (tp, fp, amb):
        assert list(frame.columns) == list(CATALOG_COLUMNS)
    assert dict(zip(tp["candid"], tp["labeller"], strict=True)) == {1: "ztf-drb", 4: "tns", 6: "ssdistnr"}
    assert tp.set_index("candid").loc[4, "kind"] == "supernova"
    assert tp.set_index("candid").loc[6, "kind"] == "moving"
    assert fp["candid"].tolist() == [2] and fp.loc[0, "confidence"] == pytest.approx(0.98)
    # 3: drb mid-band; 5: asteroid with drb <= 0.5; 8: our score and drb disagree
    assert sorted(amb["candid"]) == [3, 5, 8]
    assert 7 not in set(tp["candid"]) | set(fp["candid"]) | set(amb["candid"])  # no evidence at all
    summary = json.loads(paths["summary"].read_text())
    assert summary["counts"] == {"true_positives": 3, "false_positives": 1, "ambiguous": 3}
    with pytest.raises(ValueError, match="low"):
        curate_catalogs(scores, meta, tmp_path, low=0.9, high=0.1)


# --------------------------------------------------------------------------- weak labels


def test_weak_label_evidence_order_and_bands():
    assert weak_label({"drb": 0.9}) == ("real", "", "ztf-drb")
    assert weak_label({"drb": 0.1}) == ("bogus", "background", "ztf-drb")
    assert weak_label({"drb": 0.5}) is None and weak_label({}) is None
    assert weak_label({"drb": 0.1, "label_asteroid": 1}) == ("real", "moving", "ssdistnr")
    tns = weak_label({"drb": 0.1, "label_tns_class": "SN Ia", "label_asteroid": 1})
    assert tns[1:] == ("supernova", "tns")
    assert weak_label({"drb": 0.9, "label_tns_class": "CV"})[1] == "variable"
    assert weak_label({"drb": 0.99, "label_real": 0, "human_kind": "dipole"}) == ("bogus", "dipole", "human")
    assert weak_label({"drb": 0.4}, low=0.5, high=0.6) == ("bogus", "background", "ztf-drb")
    with pytest.raises(ValueError, match="low"):
        weak_label({"drb": 0.4}, low=0.7, high=0.6)


def test_weak_label_map_kinds_and_extent():
    new = _stamp_triplet(sci_peak=300.0)
    labels, kind = weak_label_map(new, label="real", fwhm=2.6)
    assert kind == "supernova" and labels[31, 31] == CLASS_CODES["supernova"]
    assert 5 <= np.count_nonzero(labels) <= 80 and labels[0, 0] == 0 and labels[31, 40] == 0
    _, kind = weak_label_map(_stamp_triplet(sci_peak=600.0, ref_peak=300.0), label="real", fwhm=2.6)
    assert kind == "variable"  # a source already in the reference
    _, kind = weak_label_map(_stamp_triplet(sign=-1.0), label="real", fwhm=2.6)
    assert kind == "variable"  # a fading candidate
    labels, kind = weak_label_map(new, label="real", kind="moving")
    assert kind == "moving" and labels[31, 31] == CLASS_CODES["moving"]
    labels, kind = weak_label_map(new, label="bogus")
    assert kind == "background" and not labels.any()
    with pytest.raises(ValueError, match="label"):
        weak_label_map(new, label="maybe")
    with pytest.raises(ValueError, match="kind"):
        weak_label_map(new, label="real", kind="dipole")


def test_weak_label_manifest_reads_like_a_training_set(alerts_manifest, tmp_path):
    weak = weak_label_manifest(alerts_manifest, tmp_path / "weak")
    assert weak.verify() == [] and weak.kind == "ztf_alerts_weak"
    assert len(weak) + len(weak.skipped) == len(alerts_manifest)
    for sample in weak.samples:
        labels = weak.read(sample, "labels")
        assert labels.shape == (63, 63) and (labels[31, 31] > 0) == (sample["weak_label"] == "real")
        if sample["label_asteroid"]:
            assert sample["weak_kind"] == "moving"
    split = load_split(weak, "train", channels=("science", "reference", "difference", "score"),
                       normalisation=Normalisation())
    assert len(split) == len(weak.split("train")) > 0
    table = load_alerts(weak, splits=["train"])
    assert len(table) == len(split) and table.triplets.shape[1:] == (3, 63, 63)


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_needs_synthetic_tiles_below_ratio_one(alerts_manifest, bundle):
    with pytest.raises(ValueError, match="synthetic_manifest"):
        finetune_on_alerts(bundle, alerts_manifest, real_fraction=0.5, epochs=1)
    with pytest.raises(ValueError, match="real_fraction"):
        finetune_on_alerts(bundle, alerts_manifest, real_fraction=1.5, epochs=1)


def test_candidate_sign_falls_back_to_aperture_flux_when_scorr_is_not_significant():
    rng = np.random.default_rng(3)
    yy, xx = np.indices((63, 63))
    blob = np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.1**2))
    rows = []
    for sign in (1.0, -1.0):
        sci = 100 + rng.normal(0, 5, (63, 63)) + max(sign, 0) * 8 * blob
        ref = 100 + rng.normal(0, 1.5, (63, 63)) + max(-sign, 0) * 8 * blob
        stamps = np.stack([sci, ref, sign * (sci - ref)]).astype(np.float32)[None]
        meta = pd.DataFrame([{"candid": 1, "objectId": "x", "isdiffpos": "t" if sign > 0 else "f",
                              "fwhm": 2.6, "sigmapsf": 0.3, "diff_sign_flipped": sign < 0}])
        rows.append(zogy_on_alerts(AlertTable(stamps, meta), psf="fwhm").iloc[0])
    for row, sign in zip(rows, (1, -1), strict=True):
        assert row.sign_from == "aperture" and abs(row.scorr_ours) < 5
        assert np.sign(row.flux_aperture) == sign and row.sign_agrees

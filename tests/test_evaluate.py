import json

import pandas.testing as pd_testing
import pytest

from astrid import cli, detect, evaluate, runs

REQUIRED = {"precision", "recall", "f1", "fp_per_image", "iou", "centroid_error_px",
            "artifact_rejection", "type_macro_f1", "ece", "brier", "snr50", "seconds_per_image"}


def _models(**overrides):
    base = {"precision": 0.99, "recall": 0.97, "f1": 0.98, "fp_per_image": 0.01,
            "precision_snr6": 0.99, "precision_snr5": 0.97, "fp_per_megapixel_image": 0.1,
            "artifact_rejection": {k: 1.0 for k in ("cosmic_ray", "hot_pixel", "dipole",
                                                    "satellite_trail", "bleed_trail")},
            "type_macro_f1": 0.95, "ece": 0.01, "snr50": 5.0}
    worse = dict(base, f1=0.5, fp_per_image=3.0, precision=0.5)
    return {"unet": dict(base, **overrides), "ensemble": dict(worse, f1=0.4),
            "baseline": worse, "traditional": worse}


def test_quality_bars_met_and_failed():
    bars = evaluate.quality_bars({"models": _models()})
    assert bars.met.all() and set(bars.method) == {"unet"}
    bars = evaluate.quality_bars({"models": _models(ece=0.05, snr50=None)})
    failed = set(bars.loc[~bars.met, "bar"])
    assert failed == {"expected calibration error", "S/N at 50% completeness"}
    cross = {"models": {m: dict(v, precision=v["precision"] - 0.2) for m, v in _models().items()}}
    bars = evaluate.quality_bars({"models": _models(), "cross_survey": cross})
    row = bars.set_index("bar").loc["cross-survey drop of precision and recall"]
    assert not row.met and row.value == pytest.approx(0.2)


def test_kind_bars_read_the_colour_and_context_model():
    summary = [{"metric": "type_macro_f1", "base": 0.9, "context": 0.95, "colour+context": 0.975},
               {"metric": "recall/moving", "base": 0.8, "context": 0.99, "colour+context": 0.95}]
    bars = evaluate.quality_bars({"models": _models(), "kind_ablation": {"summary": summary}})
    kind = bars[bars.method == "kind classifier, colour+context"].set_index("bar")
    assert list(kind.index) == [text for text, _, _ in evaluate.KIND_BARS]
    assert kind.met.tolist() == [True, False] and kind.value.tolist() == [0.975, 0.95]
    single_band = [{k: v for k, v in row.items() if k != "colour+context"} for row in summary]
    bars = evaluate.quality_bars({"models": _models(), "kind_ablation": {"summary": single_band}})
    assert bars[bars.method == "kind classifier, context"].met.tolist() == [False, True]


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, capsys):
    """The whole study (01 -> 04) headlessly on tiny parameters, as `make run` does on quick."""
    code = cli.main(["run", "tiny", "--out", str(tmp_path / "run"), "--no-progress"])
    printed, errors = capsys.readouterr()
    assert code == 0, errors
    assert "ensemble" in printed and "report:" in printed
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert [s["notebook"][:2] for s in record["steps"]] == ["01", "02", "03", "04"]
    result = json.loads((tmp_path / "run" / "04_evaluate" / "metrics.json").read_text())
    assert set(result["models"]) == set(evaluate.METHODS)
    for summary in result["models"].values():
        assert REQUIRED <= set(summary)
        assert "threshold" in summary
    assert result["manifest_hash"] and result["cross_survey"]["survey"] == "decam"
    filtered = result["quality_filter"]  # notebook 02 scored every pair's quality
    assert filtered["n_images"] + filtered["n_skipped"] == result["n_images"]
    assert sum(filtered["skipped_reasons"].values()) == filtered["n_skipped"]
    ablation = result["kind_ablation"]  # tiny has two epochs per field: context can be measured
    assert ablation["n_test"] > 0 and {r["metric"] for r in ablation["summary"]} >= {
        "type_macro_f1", "bogus_rejection", "recall/supernova"}
    assert all("delta_context" in r for r in ablation["summary"])
    assert (tmp_path / "run" / "04_evaluate.html").stat().st_size > 10_000
    assert runs.read_outputs(tmp_path / "run" / "04_evaluate")["headline"]


def test_match_handles_an_image_without_unet_candidates():
    import numpy as np
    import pandas as pd

    truth = pd.DataFrame({"instance": [1], "x": [5.0], "y": [5.0], "kind": ["supernova"],
                          "snr": [10.0], "ambiguous": [False]})
    empty = pd.DataFrame({"x": [], "y": [], "label": [], "kind": [], "score": []})
    image = evaluate.ImageCandidates(
        sample={"id": "x"}, truth=truth, unet=empty, baseline=empty,
        segmentation=np.zeros((10, 10), int), instances=np.zeros((10, 10), int),
        unusable=np.zeros((10, 10), bool))
    table = evaluate.match_candidates(image, "unet", "score")
    assert table.score.size == 0 and table.n_truth == 1


def test_candidates_without_a_model_are_the_baseline_peaks_alone(tmp_path, bundle):
    from astrid.manifest import Manifest
    from astrid.model import load_model

    manifest = Manifest.load(runs.demo_manifest(tmp_path, differenced=True))
    samples = manifest.samples[:2]
    alone = evaluate.collect_candidates(manifest, samples, None)
    both = evaluate.collect_candidates(manifest, samples, load_model(bundle))
    for a, b in zip(alone, both, strict=True):
        assert a.unet.empty and not a.segmentation.any()
        assert len(a.baseline) > 0
        # the same peaks and features; with a model, also the U-Net's class probabilities at each
        assert not set(detect.UNET_COLUMNS) & set(a.baseline)
        pd_testing.assert_frame_equal(a.baseline, b.baseline.drop(columns=list(detect.UNET_COLUMNS)))
        probabilities = b.baseline[list(detect.UNET_COLUMNS)]
        assert probabilities.notna().all().all() and probabilities.stack().between(0, 1).all()
        assert evaluate.match_candidates(a, "baseline", "peak_score").truth_index.tolist() == \
            evaluate.match_candidates(b, "baseline", "peak_score").truth_index.tolist()

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from astrid import metrics as m

# --------------------------------------------------------------------------- matching


def test_match_perfect_and_empty():
    xy = [[1.0, 2.0], [10.0, 12.0], [20.0, 5.0]]
    res = m.match_candidates(xy, xy)
    assert res.pairs.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert (res.tp, res.fp, res.fn) == (3, 0, 0)
    assert np.all(res.distances == 0)
    empty = m.match_candidates(np.zeros((0, 2)), xy)
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 3)
    assert empty.unmatched_truth.tolist() == [0, 1, 2]
    none = m.match_candidates([], [])
    assert (none.tp, none.fp, none.fn) == (0, 0, 0)


def test_match_is_one_to_one_and_optimal():
    # candidate 0 lies between both truths; Hungarian must still match both
    cand = [[5.0, 0.0], [8.0, 0.0]]
    truth = [[3.0, 0.0], [6.0, 0.0]]
    res = m.match_candidates(cand, truth, radius=2.5)
    assert res.pairs.tolist() == [[0, 0], [1, 1]]
    np.testing.assert_allclose(res.distances, [2.0, 2.0])
    assert res.candidate_to_truth().tolist() == [0, 1]
    # greedy by score: the high-score candidate 1 takes its nearest truth first
    greedy = m.match_candidates(cand, truth, radius=2.5, scores=[0.1, 0.9])
    assert greedy.pairs.tolist() == [[0, 0], [1, 1]]
    # duplicates: the second candidate on the same object is a false positive
    dup = m.match_candidates([[3.0, 0.0], [3.5, 0.0]], [[3.0, 0.0]], scores=[0.2, 0.9])
    assert dup.pairs.tolist() == [[1, 0]] and dup.unmatched_candidates.tolist() == [0]


def test_match_by_mask_overlap_beyond_radius():
    seg = np.zeros((16, 16), np.int32)
    seg[2:12, 5] = 7  # a long candidate segment, centroid far from the truth centroid
    inst = np.zeros((16, 16), np.int32)
    inst[1:4, 4:7] = 3
    res = m.match_candidates(
        [[5.0, 6.5]],
        [[5.0, 2.0]],
        radius=2.0,
        cand_labels=[7],
        segmentation=seg,
        truth_instances=[3],
        instance_map=inst,
    )
    assert res.pairs.tolist() == [[0, 0]]
    # overlap = 2 pixels, union = 10 + 9 - 2
    assert res.ious[0] == pytest.approx(2 / 17)
    # a candidate far from the centroid of a long trail, but on its mask, matches it
    trail = np.zeros((16, 16), np.int32)
    trail[8, :] = 2
    on_trail = m.match_candidates(
        [[1.2, 8.4], [14.0, 3.0]], [[7.5, 8.0]], truth_instances=[2], instance_map=trail
    )
    assert on_trail.pairs.tolist() == [[0, 0]] and np.isnan(on_trail.ious[0])
    no_masks = m.match_candidates([[5.0, 6.5]], [[5.0, 2.0]], radius=2.0)
    assert no_masks.tp == 0 and np.isnan(m.match_candidates([[0, 0]], [[0, 0]]).ious[0])


def test_match_bad_inputs():
    with pytest.raises(ValueError, match=r"cand_xy must have shape \(N, 2\)"):
        m.match_candidates([[1, 2, 3]], [[1, 2]])
    with pytest.raises(ValueError, match="truth_xy contains NaN"):
        m.match_candidates([[1, 2]], [[np.nan, 2]])
    with pytest.raises(ValueError, match="radius must be positive"):
        m.match_candidates([[1, 2]], [[1, 2]], radius=0)
    with pytest.raises(ValueError, match="segmentation and cand_labels go together"):
        m.match_candidates([[1, 2]], [[1, 2]], cand_labels=[1])
    with pytest.raises(ValueError, match="segmentation needs instance_map"):
        m.match_candidates([[1, 2]], [[1, 2]], cand_labels=[1], segmentation=np.ones((4, 4), int))
    with pytest.raises(ValueError, match="truth_instances has 2 entries for 1 truth objects"):
        m.match_candidates([[1, 2]], [[1, 2]], truth_instances=[1, 2],
                           instance_map=np.ones((4, 4), int))
    with pytest.raises(ValueError, match="scores has 2 entries for 1 candidates"):
        m.match_candidates([[1, 2]], [[1, 2]], scores=[1, 2])


# --------------------------------------------------------------------------- detection counts


def test_precision_recall_f1_known_values():
    assert m.precision_recall_f1(5, 0, 0) == (1.0, 1.0, 1.0)
    assert m.precision_recall_f1(0, 0, 5) == (0.0, 0.0, 0.0)  # empty prediction
    assert m.precision_recall_f1(4, 1, 0) == (0.8, 1.0, pytest.approx(8 / 9))  # one FP
    p, r, f = m.precision_recall_f1(0, 0, 0, zero_division=math.nan)
    assert math.isnan(p) and math.isnan(r) and math.isnan(f)
    with pytest.raises(ValueError, match="fp must be a non-negative count"):
        m.precision_recall_f1(1, -1, 0)


def test_pr_curve_and_average_precision_match_sklearn():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 2)  # ties included
    is_true = rng.random(60) < 0.4
    p, r, t = m.pr_curve(scores, is_true, int(is_true.sum()))
    assert np.all(np.diff(t) < 0) and np.all(np.diff(r) >= 0)
    assert m.average_precision(scores, is_true, int(is_true.sum())) == pytest.approx(
        average_precision_score(is_true, scores)
    )
    # missed transients (never candidates) lower recall and AP
    half = m.average_precision(scores, is_true, 2 * int(is_true.sum()))
    assert half == pytest.approx(average_precision_score(is_true, scores) / 2)
    assert m.average_precision([], [], 3) == 0.0
    assert math.isnan(m.average_precision([0.5], [False], 0))
    with pytest.raises(ValueError, match="n_truth .* smaller than the number of true"):
        m.pr_curve([0.5, 0.6], [True, True], 1)
    with pytest.raises(ValueError, match="scores contains NaN"):
        m.pr_curve([np.nan], [True], 1)


def test_operating_point_choices():
    scores = [0.9, 0.8, 0.7, 0.6, 0.2]
    is_true = [True, True, False, True, False]
    best = m.operating_point(scores, is_true, 4)
    assert (best.threshold, best.tp, best.fp, best.fn) == (0.6, 3, 1, 1)
    strict = m.operating_point(scores, is_true, 4, min_precision=1.0)
    assert (strict.threshold, strict.precision, strict.recall) == (0.8, 1.0, 0.5)
    reach = m.operating_point(scores, is_true, 4, target_recall=0.7)
    assert reach.threshold == 0.6 and reach.recall == 0.75
    never = m.operating_point([0.3], [False], 1, min_precision=0.5)
    assert never.threshold == math.inf and never.tp == 0 and never.fn == 1
    with pytest.raises(ValueError, match="not both"):
        m.operating_point(scores, is_true, 4, min_precision=0.5, target_recall=0.5)
    with pytest.raises(ValueError, match=r"target_recall must lie in \(0, 1\]"):
        m.operating_point(scores, is_true, 4, target_recall=1.5)


def test_false_positive_rates():
    assert m.fp_per_image(3, 2) == 1.5
    # 100 x 100 px at 36 arcsec/px = 1 deg x 1 deg
    assert m.fp_per_deg2(8, 2, (100, 100), 36.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="n_images must be positive"):
        m.fp_per_image(1, 0)
    with pytest.raises(ValueError, match="pixel_scale_arcsec must be positive"):
        m.fp_per_deg2(1, 1, (10, 10), 0.0)


# --------------------------------------------------------------------------- localisation, types


def test_mask_iou_and_centroid_error():
    a = np.zeros((8, 8), bool)
    a[2:4, 2:4] = True
    assert m.mask_iou(a, a) == 1.0
    assert m.mask_iou(a, np.roll(a, 4, axis=0)) == 0.0
    assert math.isnan(m.mask_iou(np.zeros((2, 2)), np.zeros((2, 2))))
    with pytest.raises(ValueError, match="differ in shape"):
        m.mask_iou(a, a[:4])
    assert m.centroid_error([[0, 0], [3, 4]], [[0, 0], [0, 0]]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in m.centroid_error([], []))


def test_artifact_rejection():
    out = m.artifact_rejection(
        ["hot_pixel", "dipole", "hot_pixel", "hot_pixel"],
        [False, True, False, True],
        kinds=["hot_pixel", "dipole", "satellite_trail"],
    )
    assert out["hot_pixel"] == pytest.approx(2 / 3) and out["dipole"] == 0.0
    assert math.isnan(out["satellite_trail"])
    with pytest.raises(ValueError, match="flagged_as_transient has 1 entries, expected 2"):
        m.artifact_rejection(["a", "b"], [True])


def test_confusion_and_macro_f1():
    labels = ["supernova", "variable", "moving"]
    true = ["supernova", "supernova", "variable", "variable", "moving", "moving"]
    pred = ["supernova", "variable", "variable", "variable", "moving", "supernova"]
    cm = m.confusion_matrix(true, pred, labels)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # supernova 2/4, variable 4/5, moving 2/3
    assert m.macro_f1(true, pred, labels) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m.macro_f1(true, pred, labels) == pytest.approx(
        f1_score(true, pred, labels=labels, average="macro")
    )
    assert m.macro_f1(true, true, labels) == 1.0
    # a transient typed as an artifact is a miss of its kind
    assert m.macro_f1(["moving"], ["cosmic_ray"], labels) == 0.0
    assert math.isnan(m.macro_f1([], [], labels))
    with pytest.raises(ValueError, match="differ in length"):
        m.macro_f1(["a"], [], labels)


# --------------------------------------------------------------------------- calibration


def test_calibration_known_values():
    outcomes = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    assert m.expected_calibration_error(outcomes.astype(float), outcomes) == 0.0  # perfect
    assert m.expected_calibration_error(np.full(8, 0.8), outcomes) == pytest.approx(0.3)
    assert m.brier_score(np.full(8, 0.8), outcomes) == pytest.approx((0.04 + 0.64) / 2)
    assert m.brier_score(outcomes.astype(float), outcomes) == 0.0
    # two bins: 0.2 (1 of 4 true) and 0.9 (3 of 4 true): ECE = 0.5*0.05 + 0.5*0.15
    probs = np.r_[np.full(4, 0.2), np.full(4, 0.9)]
    hits = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert m.expected_calibration_error(probs, hits, n_bins=10) == pytest.approx(0.1)
    centers, acc, conf, counts = m.reliability_curve(probs, hits, n_bins=10)
    assert counts.sum() == 8 and counts[2] == 4 and counts[9] == 4
    assert acc[2] == 0.25 and conf[9] == pytest.approx(0.9) and np.isnan(acc[0])
    np.testing.assert_allclose(centers[:2], [0.05, 0.15])


def test_calibration_bad_inputs():
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        m.expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="probs is empty"):
        m.brier_score([], [])
    with pytest.raises(ValueError, match="probs contains NaN"):
        m.brier_score([np.nan], [1])
    with pytest.raises(ValueError, match="outcomes has 1 entries, expected 2"):
        m.brier_score([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        m.reliability_curve([0.1], [1], n_bins=0)


# --------------------------------------------------------------------------- completeness


def test_completeness_step_and_logistic():
    snr = np.geomspace(1, 100, 41)
    step = snr >= 10
    # the step lies between two samples: isotonic gives their geometric mean
    below, above = snr[~step].max(), snr[step].min()
    assert m.snr_at_completeness(snr, step) == pytest.approx(math.sqrt(below * above))
    centers, comp, counts = m.completeness_curve(snr, step, [1, 10, 100])
    assert comp.tolist() == [0.0, 1.0] and counts.sum() == snr.size
    # a smooth logistic in ln S/N with its 50 % point at S/N 7
    rng = np.random.default_rng(0)
    s = np.exp(rng.uniform(0, np.log(100), 4000))
    p = 1 / (1 + np.exp(-(np.log(s) - np.log(7.0)) / 0.15))
    detected = rng.random(s.size) < p
    assert m.snr_at_completeness(s, detected, method="logistic") == pytest.approx(7.0, rel=0.03)
    assert m.snr_at_completeness(s, detected) == pytest.approx(7.0, rel=0.08)
    assert m.snr_at_completeness(
        s, detected, level=0.9, method="logistic"
    ) == pytest.approx(7.0 * math.exp(0.15 * math.log(9)), rel=0.05)
    assert math.isnan(m.snr_at_completeness([1, 2], [True, True]))
    with pytest.raises(ValueError, match="snr must be positive"):
        m.snr_at_completeness([0, 1], [0, 1])
    with pytest.raises(ValueError, match="unknown method"):
        m.snr_at_completeness([1, 2], [0, 1], method="spline")
    with pytest.raises(ValueError, match="bins edges must be increasing"):
        m.completeness_curve([1, 2], [0, 1], [3, 1])


# --------------------------------------------------------------------------- timing


def test_stage_timer_accumulates():
    ticks = []
    timer = m.StageTimer(sync=lambda: ticks.append(1))
    for _ in range(2):
        with timer("zogy"):
            pass
    with timer("unet"):
        pass
    assert timer.calls == {"zogy": 2, "unet": 1} and len(ticks) == 6
    timer.seconds.update({"zogy": 4.0, "unet": 2.0})
    assert timer.per_image(2) == {"zogy": 2.0, "unet": 1.0, "total": 3.0}
    with pytest.raises(ValueError, match="n_images must be positive"):
        timer.per_image(0)


# --------------------------------------------------------------------------- tables and summary


def _truth():
    xy = [[5.0, 5.0], [20.0, 20.0], [40.0, 10.0], [50.0, 50.0], [30.0, 40.0]]
    kinds = ["supernova", "variable", "moving", "cosmic_ray", "dipole"]
    return np.array(xy), kinds, np.array([5.0, 10.0, 20.0, np.nan, np.nan])


def test_summary_perfect_prediction():
    xy, kinds, snr = _truth()
    table = m.match_table(
        xy[:3], [1.0, 1.0, 1.0], xy, kinds, cand_kind=kinds[:3], truth_snr=snr
    )
    s = m.summarize(table, image_shape=(64, 64), pixel_scale_arcsec=1.0)
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert s["fp"] == 0 and s["fp_per_image"] == 0.0 and s["fp_per_deg2"] == 0.0
    assert s["centroid_error_px"] == 0.0 and s["type_macro_f1"] == 1.0
    assert s["ece"] == 0.0 and s["brier"] == 0.0 and s["average_precision"] == 1.0
    assert s["artifact_rejection"]["cosmic_ray"] == 1.0
    assert s["artifact_rejection"]["hot_pixel"] is None  # no hot pixel in the truth
    assert s["snr50"] is None  # complete already at the faintest transient
    assert s["iou"] is None  # no masks given
    json.dumps(s, allow_nan=False)


def test_summary_empty_prediction_and_one_false_positive():
    xy, kinds, snr = _truth()
    empty = m.summarize(
        m.match_table(np.zeros((0, 2)), [], xy, kinds, truth_snr=snr),
        image_shape=(64, 64),
        pixel_scale_arcsec=1.0,
    )
    assert empty["recall"] == 0.0 and empty["tp"] == 0 and empty["fn"] == 3
    assert empty["threshold"] is None and empty["ece"] is None
    json.dumps(empty, allow_nan=False)
    # the three transients found with scores 0.9 and the cosmic ray flagged at 0.6
    cand = np.r_[xy[:4], [[60.0, 2.0]]]
    table = m.match_table(cand, [0.9, 0.9, 0.9, 0.6, 0.1], xy, kinds, truth_snr=snr)
    s = m.summarize(table, image_shape=(64, 64), pixel_scale_arcsec=1.0, threshold=0.5)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 1, 0)
    assert s["precision"] == 0.75 and s["recall"] == 1.0
    assert s["artifact_rejection"]["cosmic_ray"] == 0.0
    assert s["artifact_rejection"]["dipole"] == 1.0
    assert s["fp_per_deg2"] == pytest.approx(1 / (64 * 64 / 3600**2))
    best = m.summarize(table, image_shape=(64, 64), pixel_scale_arcsec=1.0)
    assert best["threshold"] == 0.9 and best["precision"] == 1.0
    flat = m.flatten_metrics(s)
    assert flat["artifact_rejection/cosmic_ray"] == 0.0 and "iou" not in flat


def test_match_table_concat_and_ignore():
    xy, kinds, snr = _truth()
    ignore = np.array([False, True, False, False, False])
    one = m.match_table(xy[:2], [0.8, 0.7], xy, kinds, truth_snr=snr, truth_ignore=ignore)
    assert one.is_true.tolist() == [True, False] and one.is_ignored.tolist() == [False, True]
    two = m.match_table([[40.0, 11.0]], [0.9], xy, kinds, truth_snr=snr)
    both = m.MatchTable.concat([one, two])
    assert both.n_images == 2 and both.truth_kind.size == 10
    assert both.truth_index.tolist() == [0, 1, 7] and both.image.tolist() == [0, 0, 1]
    assert both.n_truth == 5  # 3 + 3 transients, one ignored
    s = m.summarize(both, image_shape=(64, 64), pixel_scale_arcsec=1.0, threshold=0.5)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 3)  # the ignored match counts nowhere
    assert s["centroid_error_px"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tables is empty"):
        m.MatchTable.concat([])
    with pytest.raises(ValueError, match="at most one of threshold"):
        m.summarize(both, image_shape=(8, 8), pixel_scale_arcsec=1.0, threshold=0.1,
                    min_precision=0.5)


def test_summary_with_masks_gives_iou():
    seg = np.zeros((16, 16), np.int32)
    inst = np.zeros((16, 16), np.int32)
    seg[2:5, 2:5] = 1
    inst[2:5, 3:6] = 4
    table = m.match_table(
        [[3.0, 3.0]], [0.9], [[4.0, 3.0]], ["supernova"],
        cand_labels=[1], segmentation=seg, truth_instances=[4], instance_map=inst,
    )
    s = m.summarize(table, image_shape=(16, 16), pixel_scale_arcsec=1.0, threshold=0.5)
    assert s["iou"] == pytest.approx(6 / 12) and s["centroid_error_px"] == 1.0


def test_summary_without_kinds_or_probabilities():
    xy, kinds, snr = _truth()
    table = m.match_table(xy[:3], [7.0, 9.0, 12.0], xy, kinds, truth_snr=snr)  # S_corr peaks
    s = m.summarize(table, image_shape=(64, 64), pixel_scale_arcsec=1.0, threshold=8.0)
    assert s["type_macro_f1"] is None and s["ece"] is None and s["brier"] is None
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["snr50"] == pytest.approx(math.sqrt(5.0 * 10.0))

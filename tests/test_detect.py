import numpy as np
import pandas as pd
import pytest
from scipy.signal import fftconvolve

from astrid import detect
from astrid.classes import CLASS_CODES, CLASS_NAMES
from astrid.metrics import match_candidates

SIGMA = 1.5


def _gauss(size=15, sigma=SIGMA, dx=0.0, dy=0.0):
    h = size // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    g = np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * sigma**2))
    return g / g.sum()


def _add(img, flux, x, y):
    ix, iy = int(x), int(y)
    img[iy - 7 : iy + 8, ix - 7 : ix + 8] += flux * _gauss(dx=x - ix, dy=y - iy)


def _scene(seed=0, snr=15.0):
    """A 64x64 unit-noise difference image with a point source, a hot pixel and a dipole."""
    psf = _gauss()
    sumsq = (psf**2).sum()
    flux = snr / np.sqrt(sumsq)  # matched-filter S/N = snr
    d = np.random.default_rng(seed).normal(0, 1, (64, 64))
    _add(d, flux, 16, 16)  # genuine point source
    d[48, 16] += 40.0  # hot pixel
    _add(d, 3 * flux, 48.0, 16.0)  # dipole: a badly subtracted star
    _add(d, -3 * flux, 49.5, 16.0)
    score = fftconvolve(d, psf[::-1, ::-1], mode="same") / np.sqrt(sumsq)
    return d, score, psf


def _near(table, x, y, r=2.5):
    return table[np.hypot(table["x"] - x, table["y"] - y) < r]


# --------------------------------------------------------------------------- U-Net candidates


def _probability_map():
    p = np.zeros((len(CLASS_NAMES), 32, 32))
    p[0] = 1.0
    sn, cr = CLASS_CODES["supernova"], CLASS_CODES["cosmic_ray"]
    yy, xx = np.mgrid[:32, :32]
    blob_a = np.exp(-((xx - 8) ** 2 + (yy - 10) ** 2) / 4.0)
    blob_b = np.exp(-((xx - 22) ** 2 + (yy - 24) ** 2) / 2.0)
    p[sn] = 0.95 * blob_a
    p[cr] = 0.9 * blob_b
    p[0] = 1 - p[sn] - p[cr]
    return p


def test_two_blobs_give_two_candidates_of_the_right_kind():
    p = _probability_map()
    unc = np.full((32, 32), 0.1)
    t = detect.candidates_from_probabilities(p, uncertainty=unc)
    assert len(t) == 2
    assert list(t.columns[: len(detect.PROBABILITY_COLUMNS)]) == list(detect.PROBABILITY_COLUMNS)
    assert "p_supernova" in t.columns and "p_background" not in t.columns
    t = t.sort_values("x").reset_index(drop=True)
    assert t["kind"].tolist() == ["supernova", "cosmic_ray"]
    np.testing.assert_allclose(t[["x", "y"]].to_numpy(), [[8, 10], [22, 24]], atol=1e-9)
    assert t.loc[0, "score"] == pytest.approx(0.95) and t.loc[1, "score"] < 0.01
    assert t.loc[0, "real_score"] == pytest.approx(1.0)
    assert t.loc[1, "real_score"] == pytest.approx(0.0)
    assert t.loc[0, "detection_score"] == pytest.approx(0.95)
    np.testing.assert_allclose(t["uncertainty"], 0.1)
    assert (t["bbox_xmin"] <= t["x"]).all() and (t["x"] <= t["bbox_xmax"]).all()
    mean_score = detect.candidates_from_probabilities(p, score_method="mean")
    assert mean_score["score"].max() < t["score"].max()


def test_segmentation_masks_and_mask_matching():
    p = _probability_map()
    seg = detect.segment_probabilities(p)
    t = detect.candidates_from_probabilities(p, segmentation=seg)
    masks = detect.candidate_masks(seg, t["label"])
    assert masks.shape == (2, 32, 32)
    assert masks.sum(axis=(1, 2)).tolist() == t["area"].tolist()
    # the truth instance map overlaps the first segment: mask matching works on it
    inst = np.zeros((32, 32), np.int32)
    inst[9:12, 7:11] = 5  # the 3x3 segment plus one column
    res = match_candidates(
        t[["x", "y"]], [[8.0, 10.0]], cand_labels=t["label"], segmentation=seg,
        truth_instances=[5], instance_map=inst,
    )
    assert res.pairs.tolist() == [[int(np.argmin(t["x"])), 0]]
    assert res.ious[0] == pytest.approx(9 / 12)


def test_transient_touching_an_artifact_stays_separate():
    p = np.zeros((len(CLASS_NAMES), 16, 16))
    p[0] = 1.0
    sn, trail = CLASS_CODES["supernova"], CLASS_CODES["satellite_trail"]
    p[0, 6:9, 2:5], p[sn, 6:9, 2:5] = 0.1, 0.9
    p[0, 7, 5:], p[trail, 7, 5:] = 0.05, 0.95
    split = detect.candidates_from_probabilities(p)
    assert sorted(split["kind"]) == ["satellite_trail", "supernova"]
    assert split.set_index("kind").loc["supernova", "score"] == pytest.approx(0.9)
    merged = detect.candidates_from_probabilities(p, segmentation=detect.segment_probabilities(
        p, transient_kinds=None))
    assert len(merged) == 1 and merged["kind"].iloc[0] == "satellite_trail"


def test_below_threshold_gives_no_candidates():
    p = np.zeros((len(CLASS_NAMES), 16, 16))
    p[0] = 0.7
    p[1] = 0.3
    t = detect.candidates_from_probabilities(p)
    assert t.empty and "kind" in t.columns and "p_dipole" in t.columns
    assert detect.segment_probabilities(p).max() == 0
    # a region smaller than min_pixels is dropped
    p[0, 5, 5], p[1, 5, 5] = 0.1, 0.9
    assert detect.candidates_from_probabilities(p, min_pixels=2).empty
    assert len(detect.candidates_from_probabilities(p, min_pixels=1)) == 1


def test_probability_inputs_are_checked():
    p = _probability_map()
    with pytest.raises(ValueError, match="probabilities has 3 channels for 9 classes"):
        detect.candidates_from_probabilities(p[:3])
    with pytest.raises(ValueError, match=r"probabilities must have shape \(C, H, W\)"):
        detect.candidates_from_probabilities(p[0])
    bad = p.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="probabilities contains NaN"):
        detect.candidates_from_probabilities(bad)
    with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\]"):
        detect.candidates_from_probabilities(p * 2)
    with pytest.raises(ValueError, match="uncertainty has shape"):
        detect.candidates_from_probabilities(p, uncertainty=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="score_method"):
        detect.candidates_from_probabilities(p, score_method="median")
    with pytest.raises(ValueError, match="threshold must lie"):
        detect.segment_probabilities(p, threshold=1.0)


# --------------------------------------------------------------------------- cutouts


def test_probabilities_at_reads_each_class_near_the_candidate():
    probs = np.zeros((len(CLASS_NAMES), 20, 20))
    probs[CLASS_CODES["background"]] = 1.0
    for k, (x, y) in {"moving": (11, 10), "cosmic_ray": (3, 3)}.items():  # one-pixel regions
        probs[:, y, x] = 0.0
        probs[CLASS_CODES[k], y, x] = 0.9
        probs[CLASS_CODES["background"], y, x] = 0.1
    table = pd.DataFrame({"x": [10.0, 10.0, 25.0], "y": [10.0, 10.4, 5.0]}, index=[4, 5, 6])
    near = detect.probabilities_at(probs, table, radius=1.5)
    assert list(near.index) == [4, 5, 6] and list(near.columns) == list(detect.UNET_COLUMNS)
    assert near.loc[4, "unet_moving"] == pytest.approx(0.9)  # one pixel away
    assert near.loc[4, "unet_cosmic_ray"] == 0.0 and near.loc[4, "unet_background"] == 1.0
    assert near.loc[6].isna().all()  # off the image
    assert detect.probabilities_at(probs, table, radius=0.0).loc[4, "unet_moving"] == 0.0
    # a model with fewer classes leaves the others NaN
    two = detect.probabilities_at(probs[:2], table, classes=CLASS_NAMES[:2])
    assert two[["unet_moving"]].isna().all().all() and two["unet_background"].notna().iloc[0]
    with pytest.raises(ValueError, match="K = 9 classes"):
        detect.probabilities_at(probs[:3], table)
    with pytest.raises(ValueError, match="unknown class"):
        detect.probabilities_at(probs[:1], table, classes=("star",))
    with pytest.raises(ValueError, match="radius"):
        detect.probabilities_at(probs, table, radius=-1.0)


def test_cutout_triplet_pads_with_nan():
    sci = np.arange(64.0).reshape(8, 8)
    stamp = detect.cutout_triplet(sci, sci + 100, sci + 200, 7.2, 0.4, size=5)
    assert stamp.shape == (3, 5, 5)
    assert stamp[0, 2, 2] == sci[0, 7] and stamp[2, 2, 2] == sci[0, 7] + 200
    assert np.isnan(stamp[:, :2, :]).all() and np.isnan(stamp[:, :, 3:]).all()
    assert np.isfinite(stamp[:, 2:, :3]).all()
    many = detect.cutout_triplets(sci, sci, sci, np.array([[3, 3], [100, 100]]), size=3)
    assert many.shape == (2, 3, 3, 3) and np.isnan(many[1]).all()
    with pytest.raises(ValueError, match="size must be a positive odd integer"):
        detect.cutout_triplet(sci, sci, sci, 3, 3, size=4)
    with pytest.raises(ValueError, match=r"reference has shape \(4, 4\)"):
        detect.cutout_triplet(sci, sci[:4, :4], sci, 3, 3)


# --------------------------------------------------------------------------- S_corr baseline


def test_baseline_finds_a_blob_in_a_noise_score_map():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:48, :48]
    score = rng.normal(0, 1, (48, 48))
    score = fftconvolve(score, _gauss(), mode="same") / np.sqrt((_gauss() ** 2).sum())
    score += 12 * np.exp(-((xx - 30) ** 2 + (yy - 17) ** 2) / (4 * SIGMA**2))
    t = detect.candidates_from_score(score)
    assert list(t.columns) == list(detect.SCORE_COLUMNS)
    assert len(t) >= 1 and abs(t.loc[0, "x"] - 30) < 1 and abs(t.loc[0, "y"] - 17) < 1
    assert t.loc[0, "passes_cuts"] and t.loc[0, "score"] == t.loc[0, "peak_score"]
    assert t[["sharpness", "elongation"]].isna().all().all()  # no difference image given
    none = detect.candidates_from_score(np.zeros((16, 16)))
    assert none.empty and list(none.columns) == list(detect.SCORE_COLUMNS)


def test_baseline_rejects_dipole_and_hot_pixel():
    d, score, psf = _scene()
    t = detect.candidates_from_score(score, difference=d, psf=psf)
    real = _near(t, 16, 16)
    hot = _near(t, 16, 48)
    dipole = _near(t, 48.5, 16)
    assert len(real) == 1 and real["passes_cuts"].all()
    assert real["score"].iloc[0] == pytest.approx(real["peak_score"].iloc[0])
    assert len(hot) == 1 and not hot["passes_cuts"].any() and hot["score"].iloc[0] == 0
    assert hot["sharpness"].iloc[0] > 3 * real["sharpness"].iloc[0] + 2
    assert hot["dipole_ratio"].iloc[0] < 0.3  # rejected by sharpness alone
    assert len(dipole) >= 1 and not dipole["passes_cuts"].any()
    assert (dipole["dipole_ratio"] > 0.3).all() and (dipole["sharpness"] < 1).all()
    assert t["passes_cuts"].sum() == 1
    assert t["peak_score"].is_monotonic_decreasing
    # masked pixels are never candidates
    mask = np.zeros(d.shape, bool)
    mask[10:22, 10:22] = True
    masked = detect.candidates_from_score(score, difference=d, psf=psf, mask=mask)
    assert _near(masked, 16, 16).empty


def test_baseline_inputs_are_checked():
    d, score, psf = _scene()
    with pytest.raises(ValueError, match=r"difference has shape \(8, 8\)"):
        detect.candidates_from_score(score, difference=d[:8, :8])
    inf_d = d.copy()
    inf_d[0, 0] = np.inf
    with pytest.raises(ValueError, match="difference contains infinite values"):
        detect.candidates_from_score(score, difference=inf_d)
    # NaN pixels (masked in D) are left out of the measures, not fatal
    nan_d = d.copy()
    nan_d[15, 17] = np.nan
    nan_s = score.copy()
    nan_s[40:, 40:] = np.nan
    t = detect.candidates_from_score(nan_s, difference=nan_d, psf=psf)
    assert _near(t, 16, 16)["passes_cuts"].all()
    assert not ((t["x"] > 39.5) & (t["y"] > 39.5)).any()
    with pytest.raises(ValueError, match="psf must be a centred stamp with odd sides"):
        detect.candidates_from_score(score, difference=d, psf=np.ones((4, 4)))
    with pytest.raises(ValueError, match="score must be a non-empty 2-D image"):
        detect.candidates_from_score(np.zeros((0, 3)))


# --------------------------------------------------------------------------- features


def test_candidate_features_are_finite_and_informative():
    d, score, psf = _scene()
    yy, xx = np.mgrid[:64, :64]
    reference = 100 + np.random.default_rng(1).normal(0, 1, (64, 64))
    reference += 500 * np.exp(-((xx - 40) ** 2 + (yy - 40) ** 2) / (2 * SIGMA**2))
    science = reference + d
    cands = pd.DataFrame({"x": [16.0, 16.0, 48.0, 40.0, 0.0], "y": [16.0, 48.0, 16.0, 40.0, 63.0]})
    f = detect.candidate_features(
        cands, score=score, difference=d, science=science, reference=reference, psf_difference=psf
    )
    assert list(f.columns) == list(detect.FEATURE_COLUMNS) and f.index.equals(cands.index)
    assert np.isfinite(f.to_numpy()).all()
    real, hot, dipole, star = (f.iloc[i] for i in range(4))
    assert real["peak_score"] > 10 and abs(real["psf_snr"] - real["peak_score"]) < 3
    assert real["psf_chi2"] < 2 < hot["psf_chi2"]
    assert hot["sharpness"] > 3 > real["sharpness"]
    assert dipole["dipole_ratio"] > 0.3 > real["dipole_ratio"]
    assert star["star_distance"] < 1 < real["star_distance"]
    assert star["reference_snr"] > 50 and abs(real["reference_snr"]) < 5
    assert 0.7 < real["local_noise"] < 1.3
    # an array of positions and explicit stars / noise work too
    g = detect.candidate_features(
        np.array([[16.0, 16.0]]), score=score, difference=d, science=science,
        reference=reference, psf_difference=psf, stars=[[16.0, 19.0]], noise=1.0,
    )
    assert g["star_distance"].iloc[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"candidates lacks columns \['y'\]"):
        detect.candidate_features(cands[["x"]], score=score, difference=d, science=science,
                                  reference=reference)
    with pytest.raises(ValueError, match=r"stars must be a finite \(K, 2\) array"):
        detect.candidate_features(cands, score=score, difference=d, science=science,
                                  reference=reference, stars=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"science has shape \(8, 8\)"):
        detect.candidate_features(cands, score=score, difference=d, science=science[:8, :8],
                                  reference=reference)


def test_find_stars():
    yy, xx = np.mgrid[:48, :48]
    img = 50 + np.random.default_rng(4).normal(0, 1, (48, 48))
    for x, y in [(10, 12), (30, 35)]:
        img += 300 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA**2))
    stars = detect.find_stars(img, fwhm=3.5)
    assert sorted(np.round(stars).tolist()) == [[10.0, 12.0], [30.0, 35.0]]
    assert detect.find_stars(np.full((16, 16), 3.0)).shape == (0, 2)

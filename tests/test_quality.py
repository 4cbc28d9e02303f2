import math
import shutil

import numpy as np
import pytest

from astrid.differencing import difference_dataset
from astrid.manifest import Manifest, read_fits
from astrid.quality import (
    DEFAULT_THRESHOLD,
    degrade_pair,
    degrade_sample,
    filtered_manifest,
    measure_pair_quality,
    nominal_limiting_mag,
    passing,
    quality_dataset,
    quality_table,
)
from astrid.simulate import generate_dataset

# Epoch -> deliberate degradation (epoch 0 stays clean); the term that should flag it.
PLAN = {1: "registration", 2: "cloudy", 3: "psf_mismatch", 4: "noisy"}
OWN_TERM = {"registration": "registration_rms_px", "cloudy": "zero_point_offset_mag",
            "psf_mismatch": "psf_mismatch", "noisy": "depth_loss_mag"}
STRENGTH = {"registration": 1.5, "cloudy": 0.4, "psf_mismatch": 1.5, "noisy": 4.5}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One 128 px ZTF-like field, five epochs scored clean, then four of them degraded and rescored."""
    root = tmp_path_factory.mktemp("quality") / "pairs"
    manifest = generate_dataset(root, n_fields=1, n_epochs=5, image_size=128, seed=11, n_stars=60)
    difference_dataset(manifest)
    quality_dataset(manifest)
    before = {s["id"]: dict(s["quality"]) for s in manifest.samples}
    rng = np.random.default_rng(0)
    for epoch, kind in PLAN.items():
        degrade_sample(manifest, manifest.samples[epoch], kind=kind, rng=rng, strength=STRENGTH[kind])
    manifest.save()
    difference_dataset(manifest, overwrite=True)
    quality_dataset(manifest)
    return Manifest.load(root), before


def test_clean_pairs_pass_with_physical_measurements(scored):
    manifest, before = scored
    clean = manifest.samples[0]
    q = clean["quality"]
    header = read_fits(manifest.file(clean, "science"))[1]
    assert clean["quality_flag"] == "passed" and q["score"] >= DEFAULT_THRESHOLD
    assert all(b["score"] >= DEFAULT_THRESHOLD for b in before.values())  # all five were clean
    assert q["seeing_science_arcsec"] == pytest.approx(header["SEEING"], rel=0.15)
    assert q["sky_science_adu"] == pytest.approx(header["SKYLEVEL"], rel=0.05)
    assert q["noise_science_adu"] == pytest.approx(header["SKYSIG"], rel=0.15)
    assert abs(q["zero_point_offset_mag"]) < 0.1
    assert q["registration_rms_px"] < 0.4 and q["n_matched_stars"] >= 3
    assert q["psf_mismatch"] < 0.1
    assert q["limiting_mag_reference"] > q["limiting_mag_science"]  # the coadd is deeper
    assert q["n_5sigma_blobs_expected"] < 1.0
    assert 0.0 < q["masked_fraction"] < 0.5


@pytest.mark.parametrize("epoch", sorted(PLAN))
def test_degraded_pair_scores_lower_for_its_named_reason(scored, epoch):
    manifest, before = scored
    kind = PLAN[epoch]
    sample = manifest.samples[epoch]
    q = sample["quality"]
    assert sample["degradation"] == {"kind": kind, "strength": STRENGTH[kind]}
    assert q["score"] < DEFAULT_THRESHOLD
    assert q["score"] < before[sample["id"]]["score"]
    assert q["score"] < manifest.samples[0]["quality"]["score"]
    assert q["reasons"][0].startswith(OWN_TERM[kind])
    assert sample["quality_flag"].startswith(f"skipped: {OWN_TERM[kind]}")


def test_measurements_recover_the_size_of_each_degradation(scored):
    manifest, before = scored
    q = {PLAN[e]: manifest.samples[e]["quality"] for e in PLAN}
    assert q["registration"]["registration_rms_px"] == pytest.approx(1.5, abs=0.3)
    assert q["cloudy"]["zero_point_offset_mag"] == pytest.approx(-2.5 * math.log10(0.4), abs=0.15)
    assert q["psf_mismatch"]["psf_mismatch"] == pytest.approx(math.log(1.5), abs=0.1)
    noisy_id = manifest.samples[4]["id"]
    lost = q["noisy"]["limiting_mag_science"] - before[noisy_id]["limiting_mag_science"]
    assert lost == pytest.approx(-2.5 * math.log10(4.5), abs=0.25)


def test_flags_are_recorded_and_nothing_is_dropped(scored):
    manifest, _ = scored
    assert len(manifest.samples) == 5
    assert manifest.info["quality"]["n_passed"] == 1 and manifest.info["quality"]["n_skipped"] == 4
    kept = passing(manifest.samples)
    assert [s["id"] for s in kept] == [manifest.samples[0]["id"]]
    view = filtered_manifest(manifest)
    assert [s["id"] for s in view.samples] == [manifest.samples[0]["id"]]
    assert sorted(s["reason"].split(":")[0] for s in view.skipped) == ["skipped"] * 4
    assert len(Manifest.load(manifest.root).samples) == 5  # the view was not saved
    table = quality_table(manifest.samples)
    assert list(table.degradation) == ["none", *PLAN.values()]
    assert (table.quality_flag == "passed").sum() == 1


def test_threshold_flags_and_unmeasurable_samples_are_kept_with_reasons(scored, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(scored[0].root, root)
    manifest = Manifest.load(root)
    bare = {k: v for k, v in manifest.samples[1].items()
            if k not in {"difference", "score", "psf_difference", "diff_mask", "quality", "quality_flag"}}
    manifest.samples.append({**bare, "id": "undifferenced"})
    manifest.samples[2]["psf_science"] = manifest.samples[2]["truth"]  # not FITS: cannot be read
    manifest = quality_dataset(manifest, threshold=1.0)
    reloaded = Manifest.load(root)
    assert [s["id"] for s in reloaded.samples] == [s["id"] for s in manifest.samples]
    assert len(reloaded.samples) == 6 and passing(reloaded.samples) == []
    flags = [s["quality_flag"] for s in reloaded.samples]
    assert flags[-1] == "skipped: not differenced"
    assert flags[2].startswith("skipped: not measured") and "quality" not in reloaded.samples[2]
    # Even the clean pair fails a threshold of 1, with its weakest terms as the reason.
    assert flags[0].startswith("skipped: ") and ("tolerance" in flags[0] or "weakest term" in flags[0])
    assert reloaded.info["quality"]["threshold"] == 1.0 and reloaded.info["quality"]["n_skipped"] == 6


def test_expected_blob_count_matches_smoothed_gaussian_noise():
    from scipy import ndimage

    from astrid.quality import _expected_blobs

    rng = np.random.default_rng(1)
    counts, expected = [], []
    for _ in range(4):
        field = ndimage.gaussian_filter(rng.standard_normal((256, 256)), 1.5, mode="wrap")
        field /= field.std()
        ok = np.ones(field.shape, bool)
        counts.append(sum(ndimage.label(sel)[1] for sel in (field >= 3.0, field <= -3.0)))
        expected.append(_expected_blobs(field, ok, 3.0))
    assert np.mean(counts) == pytest.approx(np.mean(expected), rel=0.3)
    assert _expected_blobs(field, ok, 5.0) < 0.1


def test_nominal_depth_follows_exposure_time():
    # Background-limited: four times the exposure is 2.5 log10(2) = 0.75 mag deeper.
    gain = nominal_limiting_mag("ztf", band="r", exposure_time=120.0) - nominal_limiting_mag("ztf", band="r")
    assert gain == pytest.approx(0.75, abs=0.05)
    assert nominal_limiting_mag("decam", band="r") > nominal_limiting_mag("ztf", band="r")


def _star_pair(size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    stars = sum(5e3 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.9)
                for x, y in [(14, 14), (48, 15), (15, 49), (47, 48), (31, 32)])
    sci = 100 + stars + rng.normal(0, 3, (size, size))
    ref = 100 + stars + rng.normal(0, 3, (size, size))
    psf = np.exp(-((np.mgrid[:9, :9] - 4) ** 2).sum(0) / 2.9)
    return sci, ref, sci - ref, rng.normal(0, 1, (size, size)), psf


def test_bad_input_errors():
    sci, ref, diff, score, psf = _star_pair()
    zp = {"zero_point_science": 25.0, "zero_point_reference": 25.0}
    with pytest.raises(ValueError, match="science must be a 2-D"):
        measure_pair_quality(sci[None], ref, diff, score, psf, psf, **zp)
    with pytest.raises(ValueError, match="reference shape"):
        measure_pair_quality(sci, ref[:-1], diff, score, psf, psf, **zp)
    with pytest.raises(ValueError, match="psf_reference"):
        measure_pair_quality(sci, ref, diff, score, psf, np.full((5, 5), np.nan), **zp)
    with pytest.raises(ValueError, match="zero_point_science"):
        measure_pair_quality(sci, ref, diff, score, psf, psf, zero_point_science=math.nan,
                             zero_point_reference=25.0)
    with pytest.raises(ValueError, match="unknown tolerance"):
        measure_pair_quality(sci, ref, diff, score, psf, psf, tolerances={"seeing": 1.0}, **zp)
    with pytest.raises(ValueError, match="every pixel is masked"):
        measure_pair_quality(sci, ref, diff, score, psf, psf, mask=np.ones(sci.shape, bool), **zp)
    with pytest.raises(ValueError, match="all NaN"):
        measure_pair_quality(sci, ref, np.full(sci.shape, np.nan), score, psf, psf, **zp)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind must be one of"):
        degrade_pair(sci, psf, {}, kind="foggy", rng=rng)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        degrade_pair(sci, psf, {}, kind="noisy", rng=0)
    with pytest.raises(ValueError, match="below 1"):
        degrade_pair(sci, psf, {}, kind="cloudy", rng=rng, strength=1.2)
    with pytest.raises(ValueError, match="FWHMPIX"):
        degrade_pair(sci, psf, {}, kind="psf_mismatch", rng=rng)
    with pytest.raises(ValueError, match="no quality_flag"):
        passing([{"id": "a"}])


def test_dataset_level_errors(tmp_path):
    manifest = generate_dataset(tmp_path / "raw", n_fields=1, n_epochs=1, image_size=32, seed=0)
    with pytest.raises(ValueError, match="no differenced sample"):
        quality_dataset(manifest)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        quality_dataset(manifest, threshold=1.5)
    with pytest.raises(ValueError, match="unknown tolerance"):
        quality_dataset(manifest, tolerances={"bogus": 1.0})

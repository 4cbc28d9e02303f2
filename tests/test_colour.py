"""Colour features of candidates: forced photometry in the other bands of the night, and alerts."""

import math

import numpy as np
import pandas as pd
import pytest

from astrid import colour
from astrid.manifest import Manifest, write_fits
from astrid.simulate.psf import MoffatPSF, point_stamps

AB_MICROJANSKY = 23.9


def _difference_sample(manifest, sid, *, field, band, mjd, flux_adu, xy, fwhm, zp, fd, rng,
                       size=48):
    """A sample whose difference image holds one PSF source of ``flux_adu`` (science ADU) in unit noise."""
    psf = MoffatPSF(fwhm)
    stamps, x0, y0 = point_stamps(psf, np.array([xy[0]]), np.array([xy[1]]))
    image = rng.normal(0.0, 1.0, (size, size))
    h, w = stamps.shape[1:]
    image[y0[0]:y0[0] + h, x0[0]:x0[0] + w] += fd * flux_adu * stamps[0]
    sample = {"id": sid, "field": field, "band": band, "mjd": mjd, "survey": "ztf", "split": "test"}
    header = {"FD": fd, "ZP": zp}
    for key, data in (("difference", image.astype(np.float32)), ("psf_difference", psf.stamp()),
                      ("diff_mask", np.zeros((size, size), np.uint8))):
        write_fits(manifest.root / f"{sid}_{key}.fits", data, header)
        manifest.add_product(sample, key, f"{sid}_{key}.fits")
    manifest.samples.append(sample)
    return sample


def _microjansky(flux_adu, zp):
    return flux_adu * 10 ** (-0.4 * (zp - AB_MICROJANSKY))


def test_forced_photometry_recovers_an_injected_colour(tmp_path):
    rng = np.random.default_rng(4)
    manifest = Manifest(root=tmp_path, name="colour")
    xy = (23.3, 24.6)
    zp = {"g": 26.5, "r": 26.2}
    flux = {"g": 900.0, "r": 1500.0}  # ADU of each science image
    det = _difference_sample(manifest, "f0_g", field=0, band="g", mjd=100.00, flux_adu=flux["g"], xy=xy,
                             fwhm=2.4, zp=zp["g"], fd=0.2, rng=rng)
    _difference_sample(manifest, "f0_r", field=0, band="r", mjd=100.03, flux_adu=flux["r"], xy=xy,
                       fwhm=2.0, zp=zp["r"], fd=0.25, rng=rng)
    # same band a week later and another field the same night: neither is this night's r
    _difference_sample(manifest, "f0_r_late", field=0, band="r", mjd=107.0, flux_adu=50.0, xy=xy,
                       fwhm=2.0, zp=zp["r"], fd=0.25, rng=rng)
    _difference_sample(manifest, "f1_r", field=1, band="r", mjd=100.01, flux_adu=50.0, xy=xy,
                       fwhm=2.0, zp=zp["r"], fd=0.25, rng=rng)
    table = pd.DataFrame({"x": [xy[0], 10.0], "y": [xy[1], 36.0], "sign": [1, 1]}, index=[7, 9])
    out = colour.colour_features(manifest, det, table)
    assert list(out.columns) == list(colour.COLOUR_COLUMNS) and list(out.index) == [7, 9]
    row = out.loc[7]
    for band in ("g", "r"):
        truth = _microjansky(flux[band], zp[band])
        assert abs(row[f"flux_{band}"] - truth) < 3 * row[f"flux_err_{band}"]
        assert row[f"snr_{band}"] > 20
    expected = -2.5 * math.log10(_microjansky(flux["g"], zp["g"]) / _microjansky(flux["r"], zp["r"]))
    assert abs(row["colour_g_r"] - expected) < 3 * row["colour_err_g_r"]
    assert 0.005 < row["colour_err_g_r"] < 0.1
    assert np.isnan(row["snr_i"]) and np.isnan(row["colour_r_i"])  # no i band that night
    # an empty patch: fluxes consistent with zero and a finite (asinh) colour
    empty = out.loc[9]
    assert abs(empty["snr_g"]) < 4 and abs(empty["snr_r"]) < 4 and np.isfinite(empty["colour_g_r"])
    # a fading candidate measures the same change with the sign turned
    fading = colour.colour_features(manifest, det, table.assign(sign=[-1, -1]))
    assert fading.loc[7, "flux_g"] == pytest.approx(-row["flux_g"])


def test_colour_features_without_other_bands_are_nan(tmp_path):
    rng = np.random.default_rng(0)
    manifest = Manifest(root=tmp_path, name="one band")
    det = _difference_sample(manifest, "f0_r", field=0, band="r", mjd=5.0, flux_adu=500.0, xy=(20, 20),
                             fwhm=2.0, zp=26.0, fd=0.2, rng=rng)
    out = colour.colour_features(manifest, det, np.array([[20.0, 20.0]]))
    assert out.loc[0, "snr_r"] > 10
    assert out[["snr_g", "snr_i", "colour_g_r", "colour_r_i"]].isna().all(axis=None)
    assert colour.colour_features(manifest, det, np.zeros((0, 2))).empty
    with pytest.raises(ValueError, match="max_gap"):
        colour.colour_features(manifest, det, np.array([[20.0, 20.0]]), max_gap=-1)
    with pytest.raises(ValueError, match="bands"):
        colour.colour_features(manifest, det, np.array([[20.0, 20.0]]), bands=("r",))


def test_simulated_supernova_colour_survives_zogy(tmp_path):
    from astrid.differencing import difference_dataset
    from astrid.simulate import generate_dataset

    quiet = dict(n_stars=0, n_galaxies=0, n_variables=0, n_moving=0, n_cosmic_rays=0, n_hot_pixels=0,
                 n_supernovae=1, host_fraction=0.0, registration_sigma=0.0, rotation_sigma=0.0)
    manifest = generate_dataset(tmp_path / "d", n_fields=2, n_epochs=3, image_size=64,
                                bands=("g", "r", "i"), seed=5, **quiet)
    assert {s["band"] for s in manifest.samples} == {"g", "r", "i"}
    assert all(s["reference"].endswith(f"reference_{s['band']}.fits") for s in manifest.samples)
    manifest = difference_dataset(manifest)
    checked = 0
    for sample in manifest.samples:
        truth = pd.read_csv(manifest.file(sample, "truth"))
        sn = truth[(truth.kind == "supernova") & (truth.snr > 15)]
        if sn.empty:
            continue
        out = colour.colour_features(manifest, sample, sn[["x", "y"]])
        for (_, row), (_, feat) in zip(sn.iterrows(), out.iterrows(), strict=True):
            for b1, b2 in (("g", "r"), ("r", "i")):
                if feat[f"snr_{b1}"] > 10 and feat[f"snr_{b2}"] > 10:
                    true_colour = row[f"mag_{b1}"] - row[f"mag_{b2}"]
                    error = math.hypot(feat[f"colour_err_{b1}_{b2}"], 0.02)  # 2 % flux-scale systematics
                    assert abs(feat[f"colour_{b1}_{b2}"] - true_colour) < 4 * error
                    checked += 1
    assert checked >= 2


def _alert(fid, jd, mag, *, isdiffpos="t", history=()):
    return {"candid": 1, "objectId": "ZTF00aaaaaaa",
            "candidate": {"fid": fid, "jd": jd, "magpsf": mag, "sigmapsf": 0.05, "isdiffpos": isdiffpos},
            "prv_candidates": list(history)}


def test_alert_colour_features_use_the_latest_entry_of_each_filter():
    history = [
        {"fid": 1, "jd": 2459000.70, "magpsf": 18.5, "sigmapsf": 0.05, "isdiffpos": "t", "candid": 2},
        # too old
        {"fid": 1, "jd": 2458997.0, "magpsf": 20.0, "sigmapsf": 0.1, "isdiffpos": "t", "candid": 3},
        {"fid": 3, "jd": 2459000.60, "magpsf": None, "sigmapsf": None, "diffmaglim": 20.5,
         "isdiffpos": None, "candid": None},  # an upper limit
    ]
    out = colour.alert_colour_features(_alert(2, 2459000.75, 18.8, history=history))
    assert set(out) == set(colour.COLOUR_COLUMNS)
    assert out["colour_g_r"] == pytest.approx(-0.3, abs=0.01)
    assert out["flux_r"] == pytest.approx(10 ** (-0.4 * (18.8 - AB_MICROJANSKY)), rel=1e-9)
    assert out["flux_i"] == 0.0 and out["snr_i"] == 0.0
    assert out["flux_err_i"] == pytest.approx(10 ** (-0.4 * (20.5 - AB_MICROJANSKY)) / 5)
    assert out["colour_r_i"] < -2  # seen in r, nothing in i: very blue in asinh magnitudes
    # a fading alert: a g detection fading as well counts as the same change
    g_fading = {"fid": 1, "jd": 2459000.7, "magpsf": 18.5, "sigmapsf": 0.05, "isdiffpos": "f", "candid": 4}
    fading = colour.alert_colour_features(_alert(2, 2459000.75, 18.8, isdiffpos="f", history=[g_fading]))
    assert fading["flux_g"] > 0 and fading["flux_r"] > 0
    assert math.isnan(fading["snr_i"])
    # no history at all: only the alert's own band
    alone = colour.alert_colour_features(_alert(1, 2459000.75, 19.0))
    assert alone["snr_g"] > 10 and math.isnan(alone["colour_g_r"])
    with pytest.raises(ValueError, match="fid"):
        colour.alert_colour_features({"candidate": {"jd": 2459000.0}})

"""Physics and labels of one simulated field (small images, fast)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from astrid.classes import CLASS_CODES, CLASS_NAMES
from astrid.simulate import CATALOG_COLUMNS, MoffatPSF, simulate_field
from astrid.simulate.scene import sky_image
from astrid.simulate.transients import bazin
from astrid.surveys import get_survey

QUIET = dict(
    n_stars=0, n_galaxies=0, n_supernovae=0, n_variables=0, n_moving=0, n_cosmic_rays=0,
    n_hot_pixels=0, n_satellites=0, n_bad_columns=0, n_saturated=0,
)
BUSY = dict(
    n_supernovae=3, n_variables=3, n_moving=2, n_cosmic_rays=6, n_hot_pixels=4, n_satellites=1,
    n_bad_columns=1, n_saturated=1,
)


@pytest.fixture(scope="module")
def busy():
    return simulate_field("ztf", image_size=128, n_epochs=2, seed=11, **BUSY)


def _sn_field(seed, **kw):
    params = {**QUIET, "n_supernovae": 6, "host_fraction": 0.0, "registration_sigma": 0.0,
              "rotation_sigma": 0.0, "min_snr": 3.0, **kw}
    return simulate_field("ztf", image_size=96, n_epochs=1, seed=seed, **params)


def test_psf_stamp_is_normalised_and_centred():
    stamp = MoffatPSF(2.3, beta=3.0, ellipticity=0.1, angle=0.4).stamp()
    assert stamp.shape[0] % 2 == 1 and stamp.shape[0] == stamp.shape[1]
    assert stamp.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(stamp.argmax(), stamp.shape) == (stamp.shape[0] // 2,) * 2


def test_injected_psf_source_flux_matches_catalog():
    field = _sn_field(3)
    ep = field.epochs[0]
    surv = field.survey
    assert len(ep.objects) >= 3
    for obj in ep.objects:
        rows, cols = obj.slices
        assert obj.kind == "supernova"
        if obj.signal.shape != obj.signal.T.shape:  # cut by the edge: flux partly outside
            continue
        # the ideal difference holds exactly the catalogue flux of the source
        assert ep.ideal_difference[rows, cols].sum() == pytest.approx(obj.flux, rel=0.01)
        # and so does the noisy science image, within its noise
        sky = sky_image(ep.conditions, ep.science.shape)[rows, cols]
        measured = float((ep.science[rows, cols] * surv.gain - sky).sum())
        noise = math.sqrt(float(ep.variance[rows, cols].sum()))
        assert abs(measured - obj.flux) < 5 * noise


def test_pixel_noise_matches_the_noise_model():
    field = simulate_field("ztf", image_size=128, n_epochs=1, seed=5, **QUIET)
    surv, ep = field.survey, field.epochs[0]
    t = surv.exposure_time
    sky = sky_image(ep.conditions, ep.science.shape)
    resid = ep.science.astype(np.float64) * surv.gain - sky
    expected = ep.conditions.sky + surv.dark_current * t + surv.read_noise**2
    assert resid.var() == pytest.approx(expected, rel=0.05)
    assert abs(resid.mean()) < 0.05 * math.sqrt(expected)
    assert resid.std() / surv.gain == pytest.approx(ep.header["SKYSIG"][0], rel=0.05)
    # the reference is a coadd of N exposures: N times the sky, read and dark variance
    n = surv.reference_exposures
    cref = field.reference_conditions
    ref_resid = field.reference.astype(np.float64) * surv.gain * n - sky_image(cref, sky.shape)
    ref_expected = cref.sky + n * (surv.dark_current * t + surv.read_noise**2)
    assert ref_resid.var() == pytest.approx(ref_expected, rel=0.05)
    ref_sigma_adu = ref_resid.std() / (surv.gain * n)  # the gradient is removed with the sky
    assert ref_sigma_adu == pytest.approx(field.reference_header["SKYSIG"][0], rel=0.05)
    # the difference variance map is science plus scaled reference variance
    ratio = ep.conditions.transparency / n
    assert ep.variance.mean() == pytest.approx(expected + ratio**2 * ref_expected, rel=0.02)


def test_catalog_snr_agrees_with_psf_fit_on_the_images():
    measured, predicted = [], []
    for seed in range(4):
        field = _sn_field(100 + seed)
        surv, ep = field.survey, field.epochs[0]
        n = surv.reference_exposures
        sci = ep.science * surv.gain - sky_image(ep.conditions, ep.science.shape)
        ref_sky = sky_image(field.reference_conditions, ep.science.shape) / (surv.gain * n)
        diff = sci - ep.conditions.transparency * surv.gain * (field.reference - ref_sky)
        # joint PSF fit of all supernovae (weights 1/variance), so close pairs do not blend
        templates = np.zeros((len(ep.objects), *diff.shape))
        for j, obj in enumerate(ep.objects):
            rows, cols = obj.slices
            templates[j][rows, cols] = obj.signal / obj.signal.sum()
        a = templates.reshape(len(templates), -1)
        w = 1.0 / ep.variance.ravel()
        flux = np.linalg.solve((a * w) @ a.T, (a * w) @ diff.ravel())
        xy = ep.catalog[["x", "y"]].to_numpy()
        for j, row in enumerate(ep.catalog.itertuples()):
            nearest = np.sort(np.hypot(*(xy - xy[j]).T))[1:2].min(initial=99)
            if nearest < 2 * ep.header["FWHMPIX"][0]:
                continue  # an unresolvable blend: the joint fit cannot split it
            measured.append(float(flux[j] * np.sqrt(np.sum(a[j] ** 2 * w))))
            predicted.append(row.snr)
    measured, predicted = np.array(measured), np.array(predicted)
    assert len(measured) >= 12
    assert np.sum(measured) == pytest.approx(np.sum(predicted), rel=0.10)
    # each one within a generous 4 sigma (unit-variance estimator)
    assert np.all(np.abs(measured - predicted) < 4.0)


def test_masks_cover_their_objects_and_nothing_else(busy):
    for ep in busy.epochs:
        assert set(ep.catalog.columns) >= set(CATALOG_COLUMNS) | {"epoch"}
        assert ep.catalog.instance.tolist() == list(range(1, len(ep.catalog) + 1))
        assert np.array_equal(ep.class_map == 0, ep.instance_map == 0)
        kinds = set(ep.catalog.kind)
        assert {"supernova", "cosmic_ray", "satellite_trail", "bleed_trail"} <= kinds
        for number, (obj, row) in enumerate(zip(ep.objects, ep.catalog.itertuples(),
                                                strict=True), start=1):
            rows, cols = obj.slices
            mine = ep.instance_map == number
            assert mine.sum() == row.npix > 0
            # every labelled pixel lies in the object's own mask, where it has signal
            inside = np.zeros_like(mine)
            inside[rows, cols] = obj.mask & (obj.signal != 0)
            assert not np.any(mine & ~inside), row.kind
            assert np.all(ep.class_map[mine] == CLASS_CODES[row.kind])
            # the mask holds the object's peak and (for clear detections) most of its S/N
            peak = np.unravel_index(np.abs(obj.signal).argmax(), obj.signal.shape)
            assert obj.mask[peak]
            if row.snr > 20:
                s2 = obj.signal.astype(np.float64) ** 2 / ep.variance[rows, cols]
                assert s2[obj.mask].sum() >= 0.9 * s2.sum(), row.kind


def test_unlabelled_pixels_hold_almost_no_signal(busy):
    for ep in busy.epochs:
        strong = np.abs(ep.ideal_difference) > 3 * ep.noise_sigma
        assert strong.sum() > 0
        assert (strong & (ep.class_map == 0)).sum() <= 0.05 * strong.sum()


def test_priorities_transients_over_artifacts():
    field = simulate_field("ztf", image_size=64, n_epochs=1, seed=2, n_supernovae=2,
                           n_cosmic_rays=40, n_hot_pixels=0, n_variables=0, n_moving=0)
    ep = field.epochs[0]
    for number, obj in enumerate(ep.objects, start=1):
        if obj.kind != "supernova":
            continue
        rows, cols = obj.slices
        inside = np.zeros(ep.class_map.shape, bool)
        inside[rows, cols] = obj.mask
        # no pixel of a supernova's mask went to an artifact
        assert np.all(ep.class_map[inside] == CLASS_CODES["supernova"])
        assert number in ep.instance_map[inside]


def test_saturated_stars_bleed_and_are_labelled():
    field = simulate_field("ztf", image_size=96, n_epochs=1, seed=4, **{**QUIET, "n_saturated": 2})
    ep = field.epochs[0]
    sat = ep.science >= ep.header["SATURATE"][0]
    assert sat.sum() > 4
    assert np.all(ep.class_map[sat] == CLASS_CODES["bleed_trail"])
    assert np.all(field.reference <= field.reference_header["SATURATE"][0])
    # bleed trails run along columns: each saturated region is taller than it is wide
    regions, n = ndimage.label(sat)
    for sl in ndimage.find_objects(regions):
        assert sl[0].stop - sl[0].start >= sl[1].stop - sl[1].start


def test_registration_errors_make_dipoles_and_only_they():
    aligned = simulate_field("ztf", image_size=96, n_epochs=1, seed=8, n_saturated=1,
                             registration_sigma=0.0, rotation_sigma=0.0, **{
                                 k: 0 for k in BUSY if k != "n_saturated"})
    ep = aligned.epochs[0]
    assert "dipole" not in set(ep.catalog.kind)
    off = ep.class_map == 0
    assert np.all(np.abs(ep.ideal_difference[off]) < 1e-2 * ep.noise_sigma[off])
    shifted = simulate_field("ztf", image_size=96, n_epochs=1, seed=8, n_saturated=1,
                             registration_sigma=0.3, **{k: 0 for k in BUSY if k != "n_saturated"})
    ep = shifted.epochs[0]
    assert "dipole" in set(ep.catalog.kind)
    dip = ep.catalog[ep.catalog.kind == "dipole"]
    assert (dip.ambiguous == (dip.snr < 7.0)).all()


def test_light_curves_and_motion_follow_the_epochs():
    field = simulate_field("ztf", image_size=128, n_epochs=4, seed=21, n_supernovae=3,
                           n_moving=2, n_variables=2, min_snr=0.0)
    zp = field.survey.band(field.band).zero_point
    seen_sn = 0
    for ep in field.epochs:
        t_eff = ep.header["TRANSP"][0] * ep.header["EXPTIME"][0]
        for row in ep.catalog.itertuples():
            if row.kind == "supernova":
                lc = bazin(np.array([ep.mjd]), t_peak=row.t_peak, tau_rise=row.tau_rise,
                           tau_fall=row.tau_fall)[0]
                expect = 10 ** (-0.4 * (row.peak_mag - zp)) * lc * t_eff
                assert row.flux == pytest.approx(expect, rel=1e-4)
                seen_sn += 1
            if row.kind == "moving":
                length = row.rate / 3600 * field.survey.exposure_time / field.survey.pixel_scale
                assert row.length == pytest.approx(length, rel=1e-6)
            if row.kind == "variable":
                assert row.flux == pytest.approx(row.sci_flux - row.ref_flux, rel=1e-4)
    assert seen_sn >= 3
    # every epoch has its own conditions
    seeing = {ep.header["SEEING"][0] for ep in field.epochs}
    shifts = {ep.conditions.shift for ep in field.epochs}
    assert len(seeing) == len(shifts) == 4


def test_reference_is_a_deeper_better_seeing_coadd(busy):
    surv = busy.survey
    assert busy.reference_header["NCOMBINE"][0] == surv.reference_exposures
    assert busy.reference_header["SEEING"][0] < 1.1 * surv.seeing_median
    for ep in busy.epochs:
        assert busy.reference_header["SKYSIG"][0] < 0.5 * ep.header["SKYSIG"][0]


def test_headers_have_the_contract_keys_and_a_wcs(busy):
    from astropy.io import fits
    from astropy.wcs import WCS

    keys = {"GAIN", "RDNOISE", "SATURATE", "SEEING", "FWHMPIX", "MJD", "EXPTIME", "ZP",
            "SKYLEVEL", "SKYSIG"}
    for header in [busy.reference_header] + [ep.header for ep in busy.epochs]:
        assert keys <= set(header)
        hdr = fits.Header()
        for key, value in header.items():
            hdr[key] = value
        ra, dec = WCS(hdr).wcs_pix2world([[63.5, 63.5]], 0)[0]
        assert ra == pytest.approx(busy.ra) and dec == pytest.approx(busy.dec)
    assert busy.epochs[0].psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert busy.epochs[0].class_map.max() < len(CLASS_NAMES)


def test_same_seed_same_field_different_seed_different():
    a = simulate_field("ztf", image_size=48, n_epochs=2, seed=7)
    b = simulate_field("ztf", image_size=48, n_epochs=2, seed=7)
    c = simulate_field("ztf", image_size=48, n_epochs=2, seed=8)
    assert np.array_equal(a.reference, b.reference)
    for ea, eb in zip(a.epochs, b.epochs, strict=True):
        assert np.array_equal(ea.science, eb.science)
        assert np.array_equal(ea.instance_map, eb.instance_map)
        assert ea.catalog.equals(eb.catalog)
    assert not np.array_equal(a.reference, c.reference)
    gen = simulate_field("ztf", image_size=32, n_epochs=1, seed=np.random.default_rng(1))
    assert gen.reference.dtype == np.float32


def test_decam_preset_and_ranges_of_counts():
    field = simulate_field("decam", image_size=64, n_epochs=1, seed=1, band="g",
                           n_cosmic_rays=(3, 3), n_supernovae=[0, 2])
    assert field.reference_header["BAND"][0] == "g"
    assert field.epochs[0].header["FWHMPIX"][0] > 2.0  # ~1" seeing at 0.263"/px


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"survey": "hubble"}, "survey"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8.5}, "image_size"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_supernovae": -1}, "n_supernovae"),
        ({"n_cosmic_rays": (5, 2)}, "n_cosmic_rays"),
        ({"n_stars": True}, "n_stars"),
        ({"band": "z"}, "band"),
        ({"mask_sigma": 0}, "mask_sigma"),
        ({"host_fraction": 1.5}, "host_fraction"),
        ({"seed": -3}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"n_galaxy": 3}, "n_galaxy"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, word):
    params = {"survey": "ztf", "image_size": 32, "n_epochs": 1, **kwargs}
    survey = params.pop("survey")
    with pytest.raises(ValueError, match=word):
        simulate_field(survey, **params)


def test_impossible_preset_is_rejected():
    with pytest.raises(ValueError, match="saturation"):
        simulate_field(get_survey("ztf", saturation=50.0), image_size=32)


# --------------------------------------------------------------------------- several bands

BANDS = ("g", "r", "i")


def _digest(field):
    """sha256 of every image, header and catalogue of a field."""
    import hashlib

    h = hashlib.sha256()
    for a in [field.reference, field.psf_reference]:
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(sorted((k, str(v)) for k, v in field.reference_header.items())).encode())
    h.update(field.stars.to_csv(float_format="%.10g").encode())
    h.update(field.galaxies.to_csv(float_format="%.10g").encode())
    for ep in field.epochs:
        for a in [ep.science, ep.psf, ep.class_map, ep.instance_map, ep.ideal_difference, ep.variance]:
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(ep.catalog.to_csv(float_format="%.10g").encode())
        h.update(repr(sorted((k, str(v)) for k, v in ep.header.items())).encode())
    return h.hexdigest()


def test_single_band_fields_are_unchanged_by_the_colour_machinery():
    # digests pinned as data_manifests/ pins the named datasets (first recorded before several bands
    # existed; recorded again when asteroid rates became survey-like, which changes every mover)
    busy = simulate_field("ztf", image_size=64, n_epochs=3, seed=3, n_saturated=1, n_moving=2,
                          n_satellites=1, n_bad_columns=1)
    assert _digest(busy) == "bdc46ba9c05693a45e4a1f727a28a062324f95fa1d3fd63d2cfe727f847d8b70"
    decam_g = simulate_field("decam", image_size=48, n_epochs=2, seed=5, band="g")
    assert _digest(decam_g) == "30b5d800595d9d1616a6d5611bcc28e05db8d65043dac9ce88d2a9ca2b38c30a"
    assert busy.bands == ("r",) and [ep.band for ep in busy.epochs] == ["r"] * 3
    assert busy.references["r"].image is busy.reference


@pytest.fixture(scope="module")
def colourful():
    return simulate_field("ztf", image_size=96, n_epochs=6, seed=12, bands=BANDS, n_stars=150,
                          n_supernovae=3, n_variables=3, n_moving=3, n_cosmic_rays=1, min_snr=0.0)


def test_epochs_cycle_through_the_bands_within_a_night(colourful):
    assert colourful.band == "r" and colourful.bands == BANDS
    assert [ep.band for ep in colourful.epochs] == list(BANDS) * 2
    mjds = np.array([ep.mjd for ep in colourful.epochs])
    gaps = np.diff(mjds) * 24 * 60
    assert np.all((gaps[[0, 1, 3, 4]] >= 15) & (gaps[[0, 1, 3, 4]] <= 60))  # minutes within a night
    assert 1.0 <= gaps[2] / (24 * 60) <= 5.0  # next night
    for ep in colourful.epochs:
        assert ep.header["BAND"][0] == ep.band and set(ep.catalog.band) <= {ep.band}
        ref = colourful.references[ep.band]
        assert ref.header["BAND"][0] == ep.band and ref.header["EPOCH"][0] == -1
    # each band's sky comes from its own sky brightness
    surv = colourful.survey
    for band, ref in colourful.references.items():
        n = ref.header["NCOMBINE"][0]
        assert ref.conditions.sky == pytest.approx(surv.sky_electrons(band) * n)


def test_star_colours_follow_the_stellar_locus(colourful):
    stars = colourful.stars.iloc[:-3].sort_values("temperature")  # the last 3 are the variables
    g_r = (stars.mag_g - stars.mag_r).to_numpy()
    r_i = (stars.mag_r - stars.mag_i).to_numpy()
    assert np.all(np.diff(g_r) < 0) and np.all(np.diff(r_i) < 0)  # redder as the temperature falls
    assert (stars.mag_r == stars.mag).all()  # r is the main band
    sunlike = stars.iloc[np.argmin(abs(stars.temperature - 5800))]
    assert 0.35 < sunlike.mag_g - sunlike.mag_r < 0.6
    assert g_r.max() > 1.0 and g_r.min() < 0.3
    # each band's reference holds every isolated, unsaturated star at its magnitude in that band
    quiet = simulate_field("ztf", image_size=64, n_epochs=3, seed=2, bands=BANDS,
                           **{**QUIET, "n_stars": 12})
    surv = quiet.survey
    measured_stars = 0
    for star in quiet.stars.itertuples():
        others = np.hypot(quiet.stars.x - star.x, quiet.stars.y - star.y)
        x, y = int(round(star.x)), int(round(star.y))
        if np.sort(others)[1] < 12 or not (8 <= x < 56 and 8 <= y < 56) or star.mag > 19:
            continue
        for band, ref in quiet.references.items():
            box = np.s_[y - 7:y + 8, x - 7:x + 8]
            if ref.image[box].max() > 0.9 * surv.saturation:
                continue
            n = ref.header["NCOMBINE"][0]
            sky = sky_image(ref.conditions, ref.image.shape)[box] / (surv.gain * n)
            rate = float((ref.image[box] - sky).sum()) * surv.gain / surv.exposure_time  # mean of n
            expect = 10 ** (-0.4 * (getattr(star, f"mag_{band}") - surv.band(band).zero_point))
            assert rate == pytest.approx(expect, rel=0.05)
            measured_stars += 1
    assert measured_stars >= 3


def test_supernova_colours_evolve_by_type_and_phase():
    from astrid.simulate.transients import Supernova

    lam = {b: get_survey("ztf").band(b).wavelength for b in BANDS}

    def g_r(sn, days):
        t = sn.t_peak + days
        return sn.band_mag(t, lam["g"], lam["r"]) - sn.band_mag(t, lam["r"], lam["r"])

    ia = Supernova(0.0, 0.0, 19.0, 100.0, 3.0, 30.0, sn_type="Ia")
    assert -0.3 < g_r(ia, 0) < 0.1  # blue at peak
    assert g_r(ia, 30) > g_r(ia, 0) + 0.7  # reddens by about 1 mag over a month
    assert g_r(ia, 15) > g_r(ia, 5) > g_r(ia, 0) - 0.05
    ii = Supernova(0.0, 0.0, 19.0, 100.0, 3.0, 50.0, sn_type="II")
    assert g_r(ii, -5) < -0.25 and g_r(ii, 60) > 0.5  # hot young, cool on the plateau
    ibc = Supernova(0.0, 0.0, 19.0, 100.0, 3.0, 30.0, sn_type="Ibc")
    assert g_r(ibc, 0) > g_r(ia, 0) + 0.2
    with pytest.raises(ValueError, match="type"):
        Supernova(0.0, 0.0, 19.0, 100.0, 3.0, 30.0).mag_offset(100.0, 480.0, 640.0)


def test_rendered_transients_carry_their_band_colours(colourful):
    surv = colourful.survey
    seen = set()
    for ep in colourful.epochs:
        zp = surv.band(ep.band).zero_point
        t_eff = ep.header["TRANSP"][0] * ep.header["EXPTIME"][0]
        for row in ep.catalog.itertuples():
            own = getattr(row, f"mag_{ep.band}")
            if row.kind in ("supernova", "moving"):
                # the change in this band is the object's magnitude in this band
                assert row.sci_flux == pytest.approx(10 ** (-0.4 * (own - zp)) * t_eff, rel=1e-4)
                seen.add(row.kind)
            elif row.kind == "variable":
                assert row.sci_flux == pytest.approx(10 ** (-0.4 * (own - zp)) * t_eff, rel=1e-4)
                seen.add(row.kind)
            if row.kind == "supernova":
                assert row.sn_type in {"Ia", "II", "Ibc"}
    assert seen == {"supernova", "variable", "moving"}


def test_pulsators_are_bluer_when_brighter_and_eclipses_are_grey():
    from astrid.simulate.transients import VariableStar

    lam = {b: get_survey("ztf").band(b).wavelength for b in BANDS}
    phases = np.linspace(0.0, 1.0, 200, endpoint=False)
    for shape in ("rrlyrae", "sine", "eclipsing"):
        star = VariableStar(0, 18.0, 0.8, 1.0, 0.0, shape, temperature=6500.0)
        mags = {b: np.array([star.band_mag(p, lam[b], lam["r"]) for p in phases]) for b in BANDS}
        amp = {b: np.ptp(m) for b, m in mags.items()}
        assert amp["r"] == pytest.approx(0.8 * np.ptp(
            [star.mag(p) - star.mean_mag for p in phases]) / 0.8, rel=1e-6)
        colour = mags["g"] - mags["r"]
        if shape == "eclipsing":
            assert np.ptp(colour) < 1e-9
        else:
            assert amp["g"] > 1.15 * amp["r"] > 1.15 * amp["i"]
            assert np.corrcoef(mags["r"], colour)[0, 1] > 0.99  # fainter = redder
        assert star.band_reference_mag(lam["r"], lam["r"]) == pytest.approx(star.reference_mag(), abs=1e-6)


def _mover_steps(a, b):
    """Each moving object in both epochs: its two catalogue rows and the pixels it moved."""
    rows_a = a.catalog[a.catalog.kind == "moving"].set_index("object_id")
    rows_b = b.catalog[b.catalog.kind == "moving"].set_index("object_id")
    for name in rows_a.index.intersection(rows_b.index):
        ra, rb = rows_a.loc[name], rows_b.loc[name]
        yield ra, rb, math.hypot(rb.x - ra.x, rb.y - ra.y)


def test_moving_objects_move_between_bands(colourful):
    scale = colourful.survey.pixel_scale
    pairs = 0
    for a, b in zip(colourful.epochs, colourful.epochs[1:], strict=False):
        if b.mjd - a.mjd > 0.1:
            continue  # next night
        for ra, rb, step in _mover_steps(a, b):
            assert step == pytest.approx(ra.rate / scale * 24 * (b.mjd - a.mjd), rel=1e-3, abs=2e-3)
            assert step > 0.2  # a band taken minutes later sees it elsewhere
            assert rb[f"mag_{b.band}"] - ra[f"mag_{a.band}"] == pytest.approx(
                rb.mag - ra.mag, abs=0.3)
            pairs += 1
    assert pairs >= 1


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"bands": "gri"}, "bands"),
        ({"bands": ("g", "g")}, "distinct"),
        ({"bands": ("g", "z")}, "bands"),
        ({"bands": ("g", "r"), "band": "i"}, "band 'i'"),
        ({"bands": ()}, "bands"),
    ],
)
def test_bad_bands_name_the_problem(kwargs, word):
    with pytest.raises(ValueError, match=word):
        simulate_field("ztf", image_size=32, n_epochs=2, **kwargs)


def test_bands_need_wavelengths():
    from astrid.surveys import BandParameters

    bare = get_survey("ztf", bands={"g": BandParameters(24.9, 21.8), "r": BandParameters(24.6, 20.8)})
    assert simulate_field(bare, image_size=32, n_epochs=1, seed=0).band == "r"  # one band needs none
    with pytest.raises(ValueError, match="wavelength"):
        simulate_field(bare, image_size=32, n_epochs=2, bands=("g", "r"))
    with pytest.raises(ValueError, match="wavelength"):
        BandParameters(24.0, 21.0, wavelength=-5.0)


# --------------------------------------------------------------------------- survey-like cadence


def test_paired_visits_make_nights_of_two_and_link_moving_objects():
    field = simulate_field("ztf", image_size=96, n_epochs=6, seed=4, bands=BANDS, visits_per_night=2,
                           n_moving=3, n_supernovae=1, n_variables=1, n_cosmic_rays=1, n_hot_pixels=1,
                           min_snr=0.0)
    assert [ep.band for ep in field.epochs] == list(BANDS) * 2  # bands still cycle per epoch
    gaps = np.diff([ep.mjd for ep in field.epochs]) * 24 * 60
    assert np.all((gaps[0::2] >= 30) & (gaps[0::2] <= 60))  # the two visits of a night, minutes
    assert np.all((gaps[1::2] >= 1440) & (gaps[1::2] <= 5 * 1440))  # then 1-5 days to the next night
    scale, linked = field.survey.pixel_scale, 0
    for a, b in zip(field.epochs[0::2], field.epochs[1::2], strict=True):
        for ra, _, step in _mover_steps(a, b):
            assert step == pytest.approx(ra.rate / scale * 24 * (b.mjd - a.mjd), rel=1e-3, abs=2e-3)
            linked += 1
    assert linked >= 3  # seen twice in a night: a tracklet
    single = simulate_field("ztf", image_size=32, n_epochs=4, seed=4, visits_per_night=2, **QUIET)
    gaps = np.diff([ep.mjd for ep in single.epochs]) * 24 * 60
    assert 30 <= gaps[0] <= 60 and gaps[1] >= 1440 and 30 <= gaps[2] <= 60
    assert {ep.band for ep in single.epochs} == {"r"}


def test_fixed_hot_pixels_sit_on_the_same_detector_pixels_every_epoch():
    kw = dict(image_size=64, n_epochs=4, seed=8, n_hot_pixels=[2, 5], min_snr=0.0)
    fixed = simulate_field("ztf", hot_pixels_fixed=True, **{**QUIET, **kw})

    def hot(ep):
        rows = ep.catalog[ep.catalog.kind == "hot_pixel"]
        return sorted(zip(rows.object_id, rows.x, rows.y, rows.flux.round(6), strict=True))

    first = hot(fixed.epochs[0])
    assert len(first) >= 2 and all(hot(ep) == first for ep in fixed.epochs[1:])
    for ep in fixed.epochs:  # the same charge in the difference at the same pixel
        for _, x, y, flux in first:
            assert ep.ideal_difference[int(y), int(x)] == pytest.approx(flux, rel=1e-4)
    drawn = simulate_field("ztf", **{**QUIET, **kw})  # default: new hot pixels each epoch
    assert hot(drawn.epochs[0]) != hot(drawn.epochs[1])
    # everything else of the field is unchanged by the option
    np.testing.assert_array_equal(fixed.reference, drawn.reference)
    assert [ep.mjd for ep in fixed.epochs] == [ep.mjd for ep in drawn.epochs]


@pytest.mark.parametrize(("kwargs", "word"), [({"visits_per_night": 0}, "visits_per_night"),
                                              ({"visits_per_night": 1.5}, "visits_per_night"),
                                              ({"hot_pixels_fixed": "yes"}, "hot_pixels_fixed")])
def test_bad_cadence_options_are_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        simulate_field("ztf", image_size=32, n_epochs=1, **kwargs)

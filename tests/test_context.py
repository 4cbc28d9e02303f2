"""Temporal context: light curves, motion and persistence from the other epochs of a field."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import astrid
from astrid import detect
from astrid.classic import KindClassifier
from astrid.colour import colour_columns
from astrid.context import (
    CONTEXT_COLUMNS,
    EpochImages,
    alert_context,
    alert_contexts,
    context_features,
    context_stamps,
    epoch_context,
    kind_table,
)
from astrid.differencing import difference_dataset
from astrid.evaluate import ImageCandidates
from astrid.manifest import Manifest, write_fits
from astrid.simulate import generate_dataset

ZTF = Path(astrid.__file__).parents[1].parent / "shared" / "data" / "ztf_alerts"
SN_IA = "Pitt-Google-Broker/docs/source/working-notes/troyraen/SuperNNova/ZTF21abiuvdk"
ASTEROIDS = "kowalski/data/ztf_alerts/20231012"

SIZE = 64
SIGMA_PSF = 1.5
MJDS = (0.0, 1.0, 2.0, 2.04, 4.0)  # epochs 2 and 3 are the same night
SUPERNOVA = (20.0, 20.0, (0.0, 45.0, 90.0, 90.0, 60.0))  # x, y, flux per epoch: rises, then fades
VARIABLE = (15.0, 45.0, (60.0, -60.0, 60.0, 60.0, -60.0))
HOT_PIXEL = (50, 50, 150.0)  # fixed detector pixel, constant charge
COSMIC_RAY = (10, 56, 4, 400.0)  # x, y, epoch, charge
RATE = 30.0  # arcsec/hour of the moving object, pixel scale 1 arcsec
MOVER = (45.0, 8.0, 2, 70.0)  # x, y at epoch 2 (moves in +y), flux


def _psf(size=11):
    yy, xx = np.mgrid[: size, : size] - size // 2
    p = np.exp(-(xx**2 + yy**2) / (2 * SIGMA_PSF**2))
    return p / p.sum()


def _render(d, x, y, flux):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA_PSF**2))
    d += flux * g / g.sum()


def _mover_y(epoch):
    return MOVER[1] + RATE * 24.0 * (MJDS[epoch] - MJDS[MOVER[2]])


def _epoch_images(k, rng):
    """One epoch's D (unit white noise + sources) and its matched-filter S/N image."""
    from scipy import ndimage

    d = rng.normal(0.0, 1.0, (SIZE, SIZE))
    _render(d, SUPERNOVA[0], SUPERNOVA[1], SUPERNOVA[2][k])
    _render(d, VARIABLE[0], VARIABLE[1], VARIABLE[2][k])
    d[HOT_PIXEL[1], HOT_PIXEL[0]] += HOT_PIXEL[2]
    if k == COSMIC_RAY[2]:
        d[COSMIC_RAY[1], COSMIC_RAY[0]] += COSMIC_RAY[3]
    if k in (2, 3):
        _render(d, MOVER[0], _mover_y(k), MOVER[3])
    psf = _psf()
    score = ndimage.correlate(d, psf, mode="constant") / math.sqrt(np.sum(psf**2))
    return d, score, psf


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A hand-made five-epoch field: ZOGY-like products with flux in microjansky (ZP 23.9, F_D 1)."""
    root = tmp_path_factory.mktemp("field")
    rng = np.random.default_rng(5)
    manifest = Manifest(root=root, name="context")
    header = {"ZP": (23.9, "zero point"), "FD": (1.0, "flux scale of D")}
    for k, mjd in enumerate(MJDS):
        d, score, psf = _epoch_images(k, rng)
        sid = f"f0000_e{k:02d}"
        sample = {"id": sid, "field": 0, "epoch": k, "mjd": 60000.0 + mjd, "split": "test",
                  "survey": "ztf", "band": "r"}
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[:2] = 1  # an unusable edge row
        for key, image in (("difference", d), ("score", score), ("psf_difference", psf), ("diff_mask", mask)):
            write_fits(root / f"{sid}_{key}.fits", image.astype(np.float32) if key != "diff_mask" else image,
                       header)
            manifest.add_product(sample, key, f"{sid}_{key}.fits")
        manifest.samples.append(sample)
    # another field and another band must never enter the context
    manifest.samples.append({**manifest.samples[1], "id": "other_field", "field": 1})
    manifest.samples.append({**manifest.samples[1], "id": "other_band", "band": "g"})
    manifest.save()
    return manifest


def _context(manifest, epoch, xy, **kw):
    return epoch_context(manifest, manifest.samples[epoch], np.atleast_2d(xy), pixel_scale=1.0, **kw).iloc[0]


def test_supernova_history_counts_up_and_rises_before_peak(field):
    rows = [_context(field, k, SUPERNOVA[:2]) for k in range(len(MJDS))]
    assert [r.n_prior_epochs for r in rows] == [0, 1, 2, 3, 4]
    # epoch 0 has no flux: the detections so far count up from epoch 1 on
    assert [r.n_prior_detections for r in rows] == [0, 0, 1, 2, 3]
    assert math.isnan(rows[1].days_since_first_detection)
    assert rows[3].days_since_first_detection == pytest.approx(MJDS[3] - MJDS[1])
    assert rows[1].flux_rate > 0 and rows[2].flux_rate > 0  # rising before the peak ...
    assert rows[4].flux_rate < 0 and rows[4].mag_rate > 0  # ... fading after it
    flux_error = math.sqrt(4 * math.pi) * SIGMA_PSF  # 1-sigma PSF-fit error of unit white noise
    for k in (2, 3, 4):  # forced photometry of the previous epoch, in microjansky
        assert rows[k].prev_flux == pytest.approx(SUPERNOVA[2][k - 1], abs=4 * flux_error)
        assert rows[k].prev_dt_days == pytest.approx(MJDS[k] - MJDS[k - 1])
    assert rows[4].n_opposite_sign == 0 and rows[4].persistence == pytest.approx(3 / 4)


def test_variable_recurs_with_both_signs(field):
    row = _context(field, 4, VARIABLE[:2])
    assert row.n_prior_detections == 4 and row.persistence == 1.0
    assert row.n_opposite_sign == 3  # now fainter than the reference; brighter in three earlier epochs


def test_moving_object_is_new_here_and_its_motion_matches_its_rate(field):
    row = _context(field, 3, (MOVER[0], _mover_y(3)))
    assert row.n_prior_detections == 0 and row.persistence == 0.0  # never before at this spot
    expected = RATE * 24.0 * (MJDS[3] - MJDS[2])
    assert row.motion_distance == pytest.approx(expected, abs=1.0)
    assert row.motion_rate == pytest.approx(RATE, rel=0.05)
    # a supernova stays put: no moving-object partner
    assert math.isnan(_context(field, 3, SUPERNOVA[:2]).motion_rate)


def test_moving_partner_is_found_in_another_band_of_the_night(field):
    samples = [dict(s) for s in field.samples[:5]]
    samples[3]["band"] = "g"  # the night's second visit taken in another filter
    two_bands = Manifest(root=field.root, name="two bands", samples=samples)
    row = epoch_context(two_bands, samples[3], [(MOVER[0], _mover_y(3))], pixel_scale=1.0).iloc[0]
    assert row.n_prior_epochs == 0  # no earlier g-band epoch: no light curve ...
    assert row.motion_rate == pytest.approx(RATE, rel=0.05)  # ... but the night's r visit shows it moved
    # the partner must lie within motion_days: a window shorter than the visits' gap finds none
    assert math.isnan(epoch_context(two_bands, samples[3], [(MOVER[0], _mover_y(3))], pixel_scale=1.0,
                                    motion_days=0.01).iloc[0].motion_rate)


def test_cosmic_ray_has_no_history(field):
    row = _context(field, COSMIC_RAY[2], COSMIC_RAY[:2])
    assert row.n_prior_epochs == 4 and row.n_prior_detections == 0 and row.persistence == 0.0
    for column in ("days_since_first_detection", "mag_rate", "flux_scatter", "motion_distance",
                   "motion_rate"):
        assert math.isnan(row[column]), column


def test_hot_pixel_recurs_with_constant_flux(field):
    row = _context(field, 4, HOT_PIXEL[:2])
    assert row.n_prior_detections == 4 and row.persistence == 1.0 and row.n_opposite_sign == 0
    assert row.flux_scatter < 0.1
    assert row.days_since_first_detection == pytest.approx(MJDS[4] - MJDS[0])
    assert abs(row.flux_rate) < 10.0


def test_causal_context_ignores_later_epochs_and_other_fields(field):
    causal = _context(field, 0, SUPERNOVA[:2])
    assert causal.n_prior_epochs == 0
    counts = ("n_prior_epochs", "n_prior_detections", "n_opposite_sign", "motion_partners")
    assert causal[[c for c in CONTEXT_COLUMNS if c not in counts]].isna().all()
    assert causal.motion_partners == 0
    offline = _context(field, 0, SUPERNOVA[:2], causal=False)
    assert offline.n_prior_epochs == 4 and offline.n_prior_detections == 4
    assert offline.days_since_first_detection == pytest.approx(-1.0)  # first seen a day later
    assert offline.prev_dt_days == pytest.approx(-1.0)  # nearest epoch in time: the next one


def test_shared_epochs_read_each_epoch_once_with_the_same_context(field, monkeypatch):
    xy = np.array([SUPERNOVA[:2], VARIABLE[:2], (MOVER[0], _mover_y(2)), (MOVER[0], _mover_y(3))])
    searches = []  # epochs whose point sources were searched (the moving-object partners)
    find = detect.candidates_from_score
    monkeypatch.setattr(detect, "candidates_from_score", lambda score, **kw: searches.append(id(score))
                        or find(score, **kw))
    fresh = [epoch_context(field, field.samples[k], xy, causal=False, pixel_scale=1.0)
             for k in range(len(MJDS))]
    n_fresh, epochs = len(searches), {}
    shared = [epoch_context(field, field.samples[k], xy, causal=False, pixel_scale=1.0, epochs=epochs)
              for k in range(len(MJDS))]
    # epochs 2 and 3 are the night's two visits: each searched once, not once per image that needs it
    assert len(searches) - n_fresh == 2 < n_fresh
    for a, b in zip(fresh, shared, strict=True):
        pd.testing.assert_frame_equal(a, b)
    # every epoch of the field read once (another band only as a same-night partner), no other field's
    assert sorted(epochs) == sorted(s["id"] for s in field.samples if s["id"] != "other_field")
    assert shared[2].loc[2, "motion_distance"] == pytest.approx(RATE * 24.0 * 0.04, abs=1.0)


def test_masked_and_off_image_positions_do_not_count(field):
    table = epoch_context(field, field.samples[4], pd.DataFrame({"x": [30.0, -20.0], "y": [1.0, 30.0]},
                                                                  index=[7, 9]))
    assert list(table.index) == [7, 9] and list(table.columns) == list(CONTEXT_COLUMNS)
    assert (table.n_prior_epochs == 0).all() and table.prev_flux.isna().all()


def test_context_stamps_show_the_previous_difference(field):
    stamps = context_stamps(field, field.samples[3], [SUPERNOVA[:2], MOVER[:2]], size=15)
    assert stamps.difference.shape == (2, 15, 15) and stamps.previous == "f0000_e02"
    assert stamps.dt_days == pytest.approx(MJDS[3] - MJDS[2])
    assert stamps.difference[0, 7, 7] > 5 * stamps.difference[0, 0, 0]  # the supernova, centred
    assert stamps.score[1, 7, 7] > 10  # the asteroid where it was in the previous epoch
    first = context_stamps(field, field.samples[0], [SUPERNOVA[:2]], size=15)
    assert np.isnan(first.difference).all() and first.previous == "" and math.isnan(first.dt_days)


def _night_pair(sources_a, sources_b, seed=3):
    """Two EpochImages 40 minutes apart with (x, y, flux) point sources on unit white noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    epochs = []
    for k, sources in enumerate((sources_a, sources_b)):
        d = rng.normal(0.0, 1.0, (SIZE, SIZE))
        for x, y, flux in sources:
            _render(d, x, y, flux)
        score = ndimage.correlate(d, _psf(), mode="constant") / math.sqrt(np.sum(_psf() ** 2))
        epochs.append(EpochImages(mjd=60000.0 + k * 40 / 1440, score=score, difference=d,
                                  psf_difference=_psf(), microjansky_per_flux=1.0, name=f"e{k}"))
    return epochs


def test_slow_mover_shows_a_significant_centroid_shift_within_the_night():
    sn, slow = (20.0, 20.0, 300.0), (44.0, 40.0, 300.0)
    first, second = _night_pair([sn, slow], [sn, (slow[0] + 1.5, slow[1], slow[2])])
    c = context_features([sn[:2], slow[:2]], first, [], partners=[second], pixel_scale=1.0)
    # a static source's centroid stays within its error; a 1.5 px move at S/N ~ 50 is many sigma
    assert c.night_shift[0] < 0.3 and c.night_shift_sigma[0] < 3.0
    assert c.night_shift[1] == pytest.approx(1.5, abs=0.3) and c.night_shift_sigma[1] > 5.0
    assert math.isnan(c.motion_distance[1])  # too near for a motion partner: the shift tells it
    alone = context_features([sn[:2]], first, [], partners=[], pixel_scale=1.0)
    assert math.isnan(alone.night_shift[0]) and math.isnan(alone.night_shift_sigma[0])


def test_motion_partner_is_flagged_when_the_match_is_not_mutual():
    # the asteroid moves 8 px between the night's visits; a brighter one-off source (a cosmic ray
    # that passed the cuts) sits 16 px from the asteroid's second position
    mover, other = (20.0, 30.0, 200.0), (44.0, 30.0, 320.0)
    first, second = _night_pair([mover, other], [(28.0, 30.0, 200.0)])
    c = context_features([mover[:2], other[:2]], first, [], partners=[second], pixel_scale=1.0)
    assert c.motion_distance[0] == pytest.approx(8.0, abs=0.5) and c.motion_mutual[0] == 1
    assert c.motion_rate[0] == pytest.approx(8.0 / (40 / 60), rel=0.05)  # arcsec per hour
    # the one-off source would take the asteroid's second self, which picks the asteroid instead
    assert c.motion_partners[1] == 1 and c.motion_distance[1] == pytest.approx(16.0, abs=0.5)
    assert c.motion_mutual[1] == 0
    # chance partners expected that near: one eligible detection within (d / 100")**2 of the search area
    assert c.motion_chance[0] == pytest.approx((8.0 / 100.0) ** 2, rel=0.15)


def test_forced_flux_of_a_simulated_supernova_matches_its_truth(tmp_path):
    """Simulator -> ZOGY -> context: microjansky from ZP and F_D agree with the truth magnitude."""
    manifest = generate_dataset(tmp_path / "sim", n_fields=1, n_epochs=3, image_size=64, seed=4,
                                n_supernovae=2, n_variables=0, n_moving=0, n_cosmic_rays=0, n_hot_pixels=0)
    difference_dataset(manifest)
    checked = 0
    for k in (1, 2):
        truth = pd.read_csv(manifest.file(manifest.samples[k - 1], "truth"))
        sne = truth[(truth.kind == "supernova") & (truth.snr > 15)]
        if sne.empty:
            continue
        context = epoch_context(manifest, manifest.samples[k], sne[["x", "y"]])
        expected = 10 ** (-0.4 * (sne.mag.to_numpy() - 23.9))
        assert context.prev_flux.to_numpy() == pytest.approx(expected, rel=0.2)
        checked += len(sne)
    assert checked >= 1


def test_alert_context_from_a_hand_made_history():
    def entry(jd, fid, mag=None, sign="t", ra=10.0, dec=20.0):
        return {"jd": jd, "fid": fid, "magpsf": mag, "sigmapsf": None if mag is None else 0.1,
                "isdiffpos": None if mag is None else sign, "diffmaglim": 20.5, "ra": ra, "dec": dec,
                "candid": None if mag is None else int(jd * 10)}

    record = {
        "candid": 99, "objectId": "ZTF00test",
        "candidate": {"jd": 110.0, "fid": 2, "magpsf": 18.0, "sigmapsf": 0.05, "isdiffpos": "t",
                      "ra": 10.0, "dec": 20.0 + 1.0 / 3600, "ssdistnr": -999.0},
        "prv_candidates": [
            entry(100.0, 2),  # upper limit
            entry(104.0, 1, 19.0, "f"),  # g-band, negative
            entry(106.0, 2, 19.0, ra=10.0, dec=20.0),
            entry(108.0, 2, 18.5, ra=10.0, dec=20.0),
            entry(112.0, 2, 17.0),  # after the alert: not known yet
        ],
    }
    c = alert_context(record)
    assert list(c.index[: len(CONTEXT_COLUMNS)]) == list(CONTEXT_COLUMNS) and c.name == 99
    assert c.n_prior_epochs == 4 and c.n_prior_detections == 3 and c.persistence == 0.75
    assert c.n_opposite_sign == 1 and c.days_since_first_detection == 6.0
    assert c.prev_dt_days == 2.0 and c.mag_rate == pytest.approx(-0.25)  # r band: 18.5 -> 18.0
    flux = lambda m: 10 ** (-0.4 * (m - 23.9))  # noqa: E731
    assert c.prev_flux == pytest.approx(flux(18.5))
    assert c.flux_rate == pytest.approx((flux(18.0) - flux(18.5)) / 2.0)
    assert c.prev_score == pytest.approx(1.0857 / 0.1, rel=1e-3)
    assert c.motion_distance == pytest.approx(1.0, rel=1e-3) and c.motion_rate == pytest.approx(1.0 / 48)
    # no earlier detection the same night: no centroid shift (entry 108 is two days before)
    assert math.isnan(c.night_shift)
    same_night = alert_context({**record, "prv_candidates": [entry(109.9, 2, 18.0, ra=10.0, dec=20.0)]})
    assert same_night.night_shift == pytest.approx(1.0, rel=1e-3)  # arcsec to the candidate
    assert same_night.night_shift_sigma > 5  # S/N 22 and 11 in 2" seeing: a few tenths of an arcsec error
    assert math.isnan(c.ss_distance)
    # a first detection after an upper limit in its band: flux taken as 0 there, no magnitude rate
    first = alert_context({**record, "prv_candidates": record["prv_candidates"][:1]})
    assert first.n_prior_detections == 0 and first.prev_flux == 0 and math.isnan(first.mag_rate)
    assert math.isnan(first.days_since_first_detection) and math.isnan(first.motion_rate)
    assert alert_context({**record, "prv_candidates": None}).n_prior_epochs == 0


@pytest.mark.skipif(not ZTF.is_dir(), reason="shared ZTF alert set not present")
def test_alert_contexts_of_real_alerts():
    sn = alert_contexts(ZTF / SN_IA)
    assert len(sn) == 34 and (sn.objectId == "ZTF21abiuvdk").all()
    assert sn.n_prior_detections.min() == 0 and sn.n_prior_detections.max() > 10  # its history grows ...
    assert sn.n_prior_detections.corr(sn.days_since_first_detection) > 0.8
    assert sn.motion_rate.max() < 0.1  # ... at one position (arcsec per hour)
    asteroids = alert_contexts(ZTF / ASTEROIDS)
    known = asteroids[asteroids.ss_distance <= 1.0]
    assert len(known) >= 5 and (known.n_prior_detections == 0).all()  # nothing there before


def test_kind_classifier_keeps_missing_values():
    rng = np.random.default_rng(0)
    kinds = np.repeat(["supernova", "moving", "cosmic_ray"], 60)
    x = pd.DataFrame({"a": rng.normal(0, 1, 180), "rate": np.where(kinds == "moving", 30.0, np.nan)})
    x.loc[kinds == "supernova", "a"] += 4
    clf = KindClassifier(n_threads=1).fit(x, kinds)
    assert set(clf.classes_) == {"supernova", "moving", "cosmic_ray"}
    assert np.mean(clf.predict(x) == kinds) > 0.95
    p = clf.predict_proba(x)
    assert np.allclose(p.sum(axis=1), 1.0) and list(p.index) == list(x.index)
    with pytest.raises(ValueError, match="infinite"):
        clf.predict(x.assign(a=np.inf))
    with pytest.raises(ValueError, match="two different kinds"):
        KindClassifier().fit(x, ["supernova"] * 180)
    with pytest.raises(ValueError, match="not fitted"):
        KindClassifier().predict(x)


def test_kind_table_labels_the_study_candidates(field):
    rows = []
    for k in (3, 4):
        sample = field.samples[k]
        d, score = field.read(sample, "difference"), field.read(sample, "score")
        cands = detect.candidates_from_score(score, difference=d, fwhm=2.355 * SIGMA_PSF)
        features = detect.candidate_features(cands, score=score, difference=d, science=d, reference=0 * d,
                                             stars=np.zeros((0, 2)))
        baseline = pd.concat([cands, features.drop(columns=[c for c in features if c in cands])], axis=1)
        truth = pd.DataFrame({
            "instance": [1, 2, 3], "object_id": ["sn0", "var0", "mov0"],
            "kind": ["supernova", "variable", "moving"],
            "x": [SUPERNOVA[0], VARIABLE[0], MOVER[0]], "y": [SUPERNOVA[1], VARIABLE[1], _mover_y(3)],
            "snr": [15.0, 10.0, 12.0], "ambiguous": [False, False, k == 4],
        })
        rows.append(ImageCandidates(sample=sample, truth=truth, unet=cands.iloc[:0], baseline=baseline,
                                    segmentation=np.zeros((SIZE, SIZE), int),
                                    instances=np.zeros((SIZE, SIZE), int),
                                    unusable=np.zeros((SIZE, SIZE), bool)))
    table = kind_table(field, rows, pixel_scale=1.0)
    assert {"sample", "kind", "object_id", *detect.FEATURE_COLUMNS, *CONTEXT_COLUMNS} <= set(table.columns)
    mover = table[table.object_id == "mov0"]
    assert len(mover) == 1 and mover.iloc[0].motion_rate == pytest.approx(RATE, rel=0.05)
    assert (table[table.object_id == "var0"].n_opposite_sign >= 1).all()
    assert "background" in set(table.kind)  # the hot pixel is in no truth catalogue here
    assert set(table.split) == {"test"} and set(table.band) == {"r"}
    # with bands, each candidate's flux in every band of the night is joined (no g band that night here)
    coloured = kind_table(field, rows, pixel_scale=1.0, bands=("g", "r"))
    assert list(coloured.columns) == [*table.columns, *colour_columns(("g", "r"))]
    sn = coloured[coloured.object_id == "sn0"]
    assert (sn.snr_r > 5).all() and sn.snr_g.isna().all()
    assert not set(detect.UNET_COLUMNS) & set(table.columns)
    # candidates collected with a U-Net carry its class probabilities into the table, row for row
    with_unet = [replace(r, baseline=r.baseline.assign(**{c: 0.25 for c in detect.UNET_COLUMNS})
                         .assign(unet_moving=np.arange(len(r.baseline)) / 100.0)) for r in rows]
    networked = kind_table(field, with_unet, pixel_scale=1.0)
    assert set(detect.UNET_COLUMNS) <= set(networked.columns)
    pd.testing.assert_frame_equal(networked.drop(columns=list(detect.UNET_COLUMNS)), table)
    assert (networked.unet_supernova == 0.25).all()
    for image in with_unet:
        got = networked[networked["sample"] == image.sample["id"]]
        want = image.baseline.set_index(["x", "y"]).loc[list(zip(got.x, got.y, strict=True)), "unet_moving"]
        np.testing.assert_array_equal(got.unet_moving.to_numpy(), want.to_numpy())
    with pytest.raises(ValueError, match="method"):
        kind_table(field, rows, method="classic")


def test_bad_input_is_refused(field):
    sample = field.samples[2]
    with pytest.raises(ValueError, match="lacks columns"):
        epoch_context(field, sample, pd.DataFrame({"x": [1.0]}))
    with pytest.raises(ValueError, match="NaN or infinite"):
        epoch_context(field, sample, [[np.nan, 3.0]])
    with pytest.raises(ValueError, match="causal"):
        epoch_context(field, sample, [[3.0, 3.0]], causal="yes")
    with pytest.raises(ValueError, match="threshold"):
        epoch_context(field, sample, [[3.0, 3.0]], threshold=-1.0)
    with pytest.raises(ValueError, match="mjd"):
        epoch_context(field, {k: v for k, v in sample.items() if k != "mjd"}, [[3.0, 3.0]])
    with pytest.raises(ValueError, match="differ"):
        EpochImages(mjd=0.0, score=np.zeros((8, 8)), difference=np.zeros((8, 9)), psf_difference=_psf(5))
    with pytest.raises(ValueError, match="odd stamp"):
        EpochImages(mjd=0.0, score=np.zeros((8, 8)), difference=np.zeros((8, 8)),
                    psf_difference=np.ones((4, 4)))
    small = EpochImages(mjd=0.0, score=np.zeros((8, 8)), difference=np.zeros((8, 8)), psf_difference=_psf(5))
    big = EpochImages(mjd=1.0, score=np.zeros((9, 9)), difference=np.zeros((9, 9)), psf_difference=_psf(5))
    with pytest.raises(ValueError, match="shape"):
        context_features([[2.0, 2.0]], big, [small])
    with pytest.raises(ValueError, match="size"):
        context_stamps(field, sample, [[3.0, 3.0]], size=4)
    with pytest.raises(ValueError, match="jd/magpsf"):
        alert_context({"candid": 1, "candidate": {"fid": 1}})
    with pytest.raises(ValueError, match="list of mappings"):
        alert_context({"candid": 1, "candidate": {"jd": 1.0, "magpsf": 18.0}, "prv_candidates": [1, 2]})
    with pytest.raises(ValueError, match="mapping"):
        alert_context([("candid", 1)])

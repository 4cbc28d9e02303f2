"""Image quality of science/reference pairs and their difference, scored before detection.

Every differenced pair is measured (:func:`measure_pair_quality`), the measurements are
turned into one score in [0, 1] with the reasons that pulled it down, and pairs below a
threshold are flagged and skipped by the later phases (:func:`quality_dataset`,
:func:`passing`); nothing is removed from the manifest.

Measurements
------------
* seeing of each epoch: FWHM of circular Gaussian fits (photutils ``fit_2dgaussian``)
  to isolated sources above 10 sigma, the median of the narrow (stellar) group, in
  pixels and arcsec;
* sky level and noise of each epoch (photutils ``Background2D`` through
  :func:`astrid.psf.estimate_background`), in ADU;
* transparency as a zero-point offset: the science/reference flux ratio of matched
  stars (aperture photometry, weighted median) against the ratio the header zero
  points claim; positive when the science image is fainter than its zero point says
  (clouds);
* 5 sigma point-source limiting magnitude of each epoch from its noise, its measured
  FWHM (Gaussian noise-equivalent area ``pi FWHM^2 / (2 ln 2)``) and its effective zero
  point, and the science depth lost against the survey's nominal depth;
* registration residual: rms of the offsets of stars matched between the images (the
  global offset found by a vote only pairs them, so a shift counts in full);
* PSF mismatch: ``|ln(FWHM of the recorded PSF stamp / FWHM of the image's stars)|``,
  the worse of the two epochs, both fitted the same way;
* S_corr noise (MAD standard deviation; 1 for a correct noise model) and the number of
  connected 5 sigma regions of either sign against the number pure Gaussian noise with
  the same correlation length would give (the expected Euler characteristic of its
  excursion sets, Adler 1981; about 0.1 for a 256 px image);
* masked fraction: pixels unusable in either input or masked by the subtraction, inside
  the frame of fully masked border rows and columns (ZOGY's FFT margin).

Score
-----
Each term ``x`` (see :data:`TOLERANCES`) becomes a factor ``0.5 ** ((x / t) ** 2)`` with
its tolerance ``t``: 1 for a perfect pair, 0.5 when the term sits at its tolerance,
falling fast beyond. The score is the product of the factors, so one term far beyond
tolerance or several near it pull a pair down. A term that could not be measured (too
few stars) counts as sitting at its tolerance. ``reasons`` lists the terms whose factor
is below 0.9, worst first, each with its value and tolerance. Pairs scoring below the
threshold (:data:`DEFAULT_THRESHOLD`) are flagged ``"skipped: <reasons>"``.

With and without the filter
---------------------------
:func:`quality_dataset` scores a differenced manifest in place; the study is then run
twice, once on the manifest and once on :func:`filtered_manifest` (the passing samples,
the flagged ones under ``skipped`` with their reasons), e.g.
``run_study(manifest, model)`` and ``run_study(filtered_manifest(manifest), model)``;
:func:`quality_table` lists every pair's measurements and flag for the report.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from astrid.backend import to_numpy
from astrid.manifest import Manifest, ManifestError, read_fits, write_fits
from astrid.surveys import SurveyPreset, get_survey

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEGRADATIONS",
    "TOLERANCES",
    "DegradedPair",
    "PairQuality",
    "degrade_pair",
    "degrade_sample",
    "degraded_dataset",
    "filtered_manifest",
    "measure_pair_quality",
    "nominal_limiting_mag",
    "passing",
    "quality_dataset",
    "quality_sample",
    "quality_table",
]

log = logging.getLogger(__name__)

TOLERANCES: dict[str, float] = {
    "registration_rms_px": 0.6,
    "zero_point_offset_mag": 0.4,
    "psf_mismatch": 0.2,
    "depth_loss_mag": 1.0,
    "log_score_std": 0.6,
    "excess_blobs_per_mpx": 2000.0,
    "masked_fraction": 0.5,
}
"""Tolerance of each score term, in the term's units.

``registration_rms_px`` (pixels), ``zero_point_offset_mag`` (its absolute value, mag),
``psf_mismatch`` (natural-log FWHM ratio; 0.2 is 22 %), ``depth_loss_mag`` (mag of
science depth below the survey's nominal depth; only with a survey preset),
``log_score_std`` (``|ln score_std|``; 0.6 is a factor 1.8), ``excess_blobs_per_mpx``
(5 sigma S_corr regions beyond the Gaussian expectation per million unmasked pixels;
transients count too, so this is lenient) and ``masked_fraction``.
"""

DEGRADATIONS: tuple[str, ...] = ("registration", "cloudy", "psf_mismatch", "noisy")
"""Kinds of :func:`degrade_pair`."""

DEFAULT_THRESHOLD = 0.3
"""Lowest passing score of :func:`quality_dataset`: one term at 1.3 times its tolerance, or
two terms at their tolerance, fail a pair. Chosen on seed 2 of
``benchmarks/bench_quality_filter.py`` (100 clean and 100 degraded ZTF-like 256 px pairs):
clean pairs scored 0.42-0.96, degraded ones 0.21 at most; 0.3 sits between them."""

_REASON_LEVEL = 0.9  # factors below this are reported as reasons
_UNMEASURED = 0.5  # factor of a term that could not be measured: as if at its tolerance
_FLAG_PASSED = "passed"
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class PairQuality:
    """Measurements of one science/reference pair and its difference, and their score.

    Attributes
    ----------
    seeing_science_arcsec, seeing_reference_arcsec : float
        FWHM of the stars in arcsec (NaN without a pixel scale or stars).
    fwhm_science_px, fwhm_reference_px : float
        FWHM of the stars in pixels (median Gaussian fit; NaN without stars).
    psf_fwhm_science_px, psf_fwhm_reference_px : float
        FWHM of the recorded PSF stamps, fitted the same way.
    sky_science_adu, sky_reference_adu : float
        Median sky level.
    noise_science_adu, noise_reference_adu : float
        Background noise per pixel.
    flux_scale : float
        Measured science/reference flux ratio F_n / F_r of matched stars (ADU / ADU).
    zero_point_offset_mag : float
        ``-2.5 log10(flux_scale / 10**(0.4 (ZP_science - ZP_reference)))``: how much
        fainter the science image is than its header zero point says.
    limiting_mag_science, limiting_mag_reference : float
        5 sigma point-source limiting magnitude (AB) with the effective zero points.
    depth_loss_mag : float
        Nominal minus measured science limiting magnitude (NaN without a survey preset).
    registration_rms_px : float
        Rms offset of matched stars in pixels.
    n_matched_stars : int
        Stars matched for the registration residual.
    psf_mismatch : float
        Worse of ``|ln(recorded PSF FWHM / stars' FWHM)|`` over the two epochs.
    difference_noise : float
        MAD standard deviation of the difference image (its own units).
    score_std : float
        MAD standard deviation of S_corr (1 for a correct noise model).
    n_5sigma_blobs : int
        Connected regions with ``|S_corr| >= 5`` (either sign).
    n_5sigma_blobs_expected : float
        Their expected number for Gaussian noise of the same correlation length.
    masked_fraction : float
        Fraction of pixels masked in the inputs or by the subtraction, inside the frame
        of fully masked border rows and columns.
    terms : dict
        Factor in [0, 1] of each score term.
    score : float
        Product of the factors, in [0, 1].
    reasons : list of str
        Terms with factors below 0.9, worst first, as ``"name=value > tolerance t"``.
    """

    seeing_science_arcsec: float
    seeing_reference_arcsec: float
    fwhm_science_px: float
    fwhm_reference_px: float
    psf_fwhm_science_px: float
    psf_fwhm_reference_px: float
    sky_science_adu: float
    sky_reference_adu: float
    noise_science_adu: float
    noise_reference_adu: float
    flux_scale: float
    zero_point_offset_mag: float
    limiting_mag_science: float
    limiting_mag_reference: float
    depth_loss_mag: float
    registration_rms_px: float
    n_matched_stars: int
    psf_mismatch: float
    difference_noise: float
    score_std: float
    n_5sigma_blobs: int
    n_5sigma_blobs_expected: float
    masked_fraction: float
    terms: dict[str, float] = field(default_factory=dict)
    score: float = 1.0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (NaN becomes None) for the manifest.

        Examples
        --------
        >>> q = PairQuality(*([float("nan")] * 16), 0, float("nan"), 1.0, 1.0, 0, 0.1, 0.0)
        >>> d = q.to_dict(); d["registration_rms_px"] is None, d["score"]
        (True, 1.0)
        """
        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            if isinstance(value, float | np.floating):
                return round(float(value), 6) if math.isfinite(value) else None
            return value

        return plain(asdict(self))


# --------------------------------------------------------------------------- validation
def _image(array: Any, name: str) -> np.ndarray:
    img = np.asarray(to_numpy(array), dtype=np.float64)
    if img.ndim != 2:
        msg = f"{name} must be a 2-D image, got shape {img.shape}"
        raise ValueError(msg)
    if not np.isfinite(img).any():
        msg = f"{name} has no finite pixels (all NaN or inf)"
        raise ValueError(msg)
    return img


def _stamp(array: Any, name: str) -> np.ndarray:
    p = np.asarray(to_numpy(array), dtype=np.float64)
    if p.ndim != 2 or min(p.shape) < 3 or not np.all(np.isfinite(p)) or not p.sum() > 0:
        msg = f"{name} must be a finite 2-D PSF stamp of at least 3x3 with a positive sum"
        raise ValueError(msg)
    return p / p.sum()


def _finite_number(name: str, value: Any, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        msg = f"{name} must be a number, got {value!r}"
        raise ValueError(msg) from None
    if not math.isfinite(v) or (positive and v <= 0):
        kind = "a positive finite" if positive else "a finite"
        msg = f"{name} must be {kind} number, got {value!r}"
        raise ValueError(msg)
    return v


def _tolerances(overrides: dict[str, float] | None) -> dict[str, float]:
    tol = dict(TOLERANCES)
    for key, value in (overrides or {}).items():
        if key not in tol:
            msg = f"unknown tolerance {key!r}; known: {', '.join(TOLERANCES)}"
            raise ValueError(msg)
        tol[key] = _finite_number(f"tolerances[{key!r}]", value, positive=True)
    return tol


# --------------------------------------------------------------------------- measurements
def _fit_gaussians(image: np.ndarray, xy: np.ndarray, fit_shape: int, guess: float,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Circular Gaussian PRF fits (photutils): rows (x, y, FWHM) of the good fits."""
    from photutils.psf import fit_2dgaussian  # noqa: PLC0415 - optional dependency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fits that did not converge are dropped below
        table = fit_2dgaussian(image, xypos=xy, fwhm=guess, fix_fwhm=False, fit_shape=fit_shape,
                               mask=mask).results
    fit = np.column_stack([np.asarray(table[c], dtype=float) for c in ("x_fit", "y_fit", "fwhm_fit")])
    good = (np.all(np.isfinite(fit), axis=1) & (fit[:, 2] > 0.3 * guess) & (fit[:, 2] < 3.0 * guess)
            & (np.hypot(*(fit[:, :2] - xy).T) < 0.5 * fit_shape))
    return fit[good]


def _fit_window(fwhm: float) -> int:
    """Odd fitting box of about two FWHM (at least 5 pixels)."""
    return max(5, 2 * math.ceil(fwhm) + 1)


def _stamp_fwhm(psf: np.ndarray) -> tuple[float, int]:
    """FWHM (pixels) of a centred PSF stamp, fitted like the stars, and the fitting box.

    The box follows from the half-maximum area of the stamp; NaN when the fit fails.
    """
    guess = max(1.0, 2.0 * math.sqrt(float((psf >= 0.5 * psf.max()).sum()) / math.pi))
    window = min(_fit_window(guess), min(psf.shape) - 1 + min(psf.shape) % 2)
    centre = np.array([[psf.shape[1] // 2, psf.shape[0] // 2]], dtype=float)
    fit = _fit_gaussians(psf, centre, window, guess)
    return (float(fit[0, 2]) if len(fit) else math.nan), window


@dataclass
class _Epoch:
    sky: float
    noise: float
    subtracted: np.ndarray  # background-subtracted, NaN where bad
    stars: np.ndarray  # (K, 3) fitted x, y, FWHM of isolated bright sources, brightest first
    psf_fwhm: float
    fwhm: float = math.nan  # of the stars, set once they are matched (:func:`_set_fwhm`)


def _measure_epoch(image: np.ndarray, bad: np.ndarray, psf: np.ndarray, *,
                   star_threshold: float, max_stars: int) -> _Epoch:
    """Background, noise and Gaussian fits of the brightest isolated sources of one image."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    from astrid.detect import find_stars  # noqa: PLC0415
    from astrid.psf import estimate_background  # noqa: PLC0415

    bkg = estimate_background(image, mask=bad)
    sub = np.where(bad, np.nan, image - bkg.background)
    psf_fwhm, window = _stamp_fwhm(psf)
    guess = psf_fwhm if math.isfinite(psf_fwhm) else 0.5 * window
    found = find_stars(sub, threshold=5.0, fwhm=guess, mask=bad)
    stars = np.zeros((0, 3))
    if len(found):
        ny, nx = image.shape
        ix = np.clip(np.round(found[:, 0]).astype(int), 0, nx - 1)
        iy = np.clip(np.round(found[:, 1]).astype(int), 0, ny - 1)
        peak = np.nan_to_num(sub[iy, ix], nan=-np.inf)
        half = window // 2
        keep = ((peak >= star_threshold * bkg.sigma) & (ix > half) & (ix < nx - half - 1)
                & (iy > half) & (iy < ny - half - 1))
        if len(found) > 1:  # no neighbour above a tenth of its peak within 1.5 fitting boxes
            near = cKDTree(found).query_ball_point(found, r=1.5 * window)
            keep &= [not any(j != i and peak[j] > 0.1 * peak[i] for j in js) for i, js in enumerate(near)]
        keep &= [not bad[y - half:y + half + 1, x - half:x + half + 1].any()
                 for x, y in zip(ix, iy, strict=True)]
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-peak[idx])][:max_stars]
        if len(idx):
            stars = _fit_gaussians(np.nan_to_num(sub), found[idx], window, guess, mask=bad)
    return _Epoch(sky=float(np.median(bkg.background)), noise=bkg.sigma, subtracted=sub,
                  stars=stars, psf_fwhm=psf_fwhm)


def _stellar_fwhm(fwhm: np.ndarray) -> float:
    """FWHM of the stars among fitted sources: the median of the narrow cluster.

    Galaxies and blends are broader than stars and can be as many among bright isolated
    sources; the stars form the narrowest tight group. Taken: the median of the fits
    within 25 % of the first quartile.
    """
    low = float(np.percentile(fwhm, 25, method="lower"))  # an actual fit: never an empty group
    return float(np.median(fwhm[np.abs(fwhm / low - 1.0) <= 0.25]))


def _match_stars(sci: _Epoch, ref: _Epoch, *, search_px: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Return indices into ``ref.stars`` and ``sci.stars`` of the sources found in both images.

    The global offset is the densest cluster of all reference-to-science offsets shorter
    than ``search_px`` (a vote, insensitive to trails and saturated stars that can fool
    a cross-correlation); sources are then paired within half a FWHM of it, so the
    misregistration stays in their offsets. 3 sigma outlier pairs are dropped. Cosmic
    rays, hot pixels and moving objects, found in one image only, are left out.
    """
    from astropy.stats import sigma_clip  # noqa: PLC0415
    from scipy.spatial import cKDTree  # noqa: PLC0415

    none = np.zeros(0, dtype=int)
    if not len(sci.stars) or not len(ref.stars):
        return none, none
    sci_xy, ref_xy = sci.stars[:, :2], ref.stars[:, :2]
    near = cKDTree(sci_xy).query_ball_point(ref_xy, r=search_px)
    offsets = np.array([sci_xy[j] - ref_xy[i] for i, js in enumerate(near) for j in js]).reshape(-1, 2)
    if not len(offsets):
        return none, none
    votes = cKDTree(offsets).query_ball_point(offsets, r=0.5, return_length=True)
    best = offsets[np.argmax(votes)]
    shift = np.median(offsets[np.hypot(*(offsets - best).T) <= 0.5], axis=0)
    radius = max(1.0, 0.5 * float(np.nanmax([sci.psf_fwhm, ref.psf_fwhm, 2.0])))
    dist, idx = cKDTree(sci_xy).query(ref_xy + shift, distance_upper_bound=radius)
    ref_idx = np.flatnonzero(np.isfinite(dist))
    sci_idx = idx[ref_idx]
    if len(ref_idx) < 3:
        return ref_idx, sci_idx
    clipped = sigma_clip(sci_xy[sci_idx] - ref_xy[ref_idx], sigma=3.0, maxiters=5, axis=0)
    good = ~np.ma.getmaskarray(clipped).any(axis=1)
    return ref_idx[good], sci_idx[good]


def _set_fwhm(epoch: _Epoch, matched: np.ndarray) -> None:
    """Set the stars' FWHM from the sources matched in both images (NaN for fewer than 2)."""
    epoch.fwhm = _stellar_fwhm(epoch.stars[matched, 2]) if len(matched) >= 2 else math.nan


def _flux_scale(sci: _Epoch, ref: _Epoch, ref_xy: np.ndarray, sci_xy: np.ndarray) -> float:
    """Science/reference ratio of aperture fluxes of matched stars (weighted median).

    Apertures of 2.5 times the broader FWHM hold over 96 % of a Moffat's flux for beta
    >= 2.5, so the ratio is biased by under 0.04 mag. The weights are inverse relative
    variances (background noise of both apertures) with a 5 % floor, so that no bright
    star alone decides; the weighted median ignores a variable star or one hit by a transient, a
    cosmic ray or a neighbour, which a weighted mean does not.
    """
    from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415

    radius = 2.5 * float(np.nanmax([sci.fwhm, ref.fwhm, sci.psf_fwhm, ref.psf_fwhm]))
    f_sci = np.asarray(aperture_photometry(np.nan_to_num(sci.subtracted),
                                           CircularAperture(sci_xy, r=radius))["aperture_sum"])
    f_ref = np.asarray(aperture_photometry(np.nan_to_num(ref.subtracted),
                                           CircularAperture(ref_xy, r=radius))["aperture_sum"])
    area = math.pi * radius**2
    ok = (f_ref > 0) & (f_sci > 0)
    if not ok.any():
        return math.nan
    ratio = f_sci[ok] / f_ref[ok]
    rel_var = area * (sci.noise**2 / f_sci[ok] ** 2 + ref.noise**2 / f_ref[ok] ** 2) + 0.05**2
    order = np.argsort(ratio)
    cum = np.cumsum(1.0 / rel_var[order])
    return float(ratio[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _expected_blobs(score: np.ndarray, ok: np.ndarray, threshold: float) -> float:
    """Return the expected number of ``|S| >= threshold`` regions of Gaussian noise like ``score``.

    The expected Euler characteristic of the excursion set of a smooth isotropic field
    (Adler 1981): area, boundary and point terms, with the derivative variance
    ``lambda_2`` measured from the image's own pixel differences; both tails.
    """
    from astropy.stats import mad_std  # noqa: PLC0415

    s = np.where(ok, score, np.nan)
    var = mad_std(s, ignore_nan=True) ** 2
    grad = [mad_std(np.diff(s, axis=a), ignore_nan=True) ** 2 for a in (0, 1)]
    lam = float(np.nanmean(grad) / var) if var > 0 else math.nan
    if not math.isfinite(lam):
        return math.nan
    u = threshold
    tail = 0.5 * math.erfc(u / math.sqrt(2.0))
    rho1 = math.sqrt(lam) * math.exp(-u * u / 2) / (2 * math.pi)
    rho2 = lam * u * math.exp(-u * u / 2) / (2 * math.pi) ** 1.5
    area = float(ok.sum())
    perimeter = 2.0 * sum(ok.shape) * area / ok.size
    return 2.0 * (area * rho2 + 0.5 * perimeter * rho1 + tail)


def _interior_fraction(masked: np.ndarray) -> float:
    """Masked fraction inside the frame of fully masked border rows and columns.

    That frame (ZOGY's margin where the periodic FFT wraps, a registration's empty edge)
    is the same for every pair of a survey; what is masked inside it is not.
    """
    rows, cols = np.flatnonzero(~masked.all(axis=1)), np.flatnonzero(~masked.all(axis=0))
    if not len(rows):
        return 1.0
    return float(masked[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].mean())


def _limiting_mag(zero_point: float, noise: float, fwhm: float) -> float:
    """5 sigma point-source magnitude with a Gaussian noise-equivalent area."""
    if not (math.isfinite(zero_point) and noise > 0 and fwhm > 0):
        return math.nan
    nea = 4.0 * math.pi * (fwhm / _FWHM_PER_SIGMA) ** 2
    return zero_point - 2.5 * math.log10(5.0 * noise * math.sqrt(nea))


def nominal_limiting_mag(survey: str | SurveyPreset, *, band: str | None = None,
                         exposure_time: float | None = None) -> float:
    """5 sigma point-source depth of one exposure at the survey's median seeing and nominal sky.

    Sky, dark current and read noise in electrons, a Gaussian noise-equivalent area at
    ``seeing_median``, and the band's AB zero point (electrons per second), as the
    simulator draws them at transparency 1.

    Parameters
    ----------
    survey : str or SurveyPreset
        Survey preset.
    band : str, optional
        Band (default: the preset's first).
    exposure_time : float, optional
        Seconds (default: the preset's).

    Returns
    -------
    float
        AB magnitude.

    Examples
    --------
    >>> round(nominal_limiting_mag("ztf", band="r"), 1)
    21.6
    """
    preset = get_survey(survey)
    t = preset.exposure_time if exposure_time is None else _finite_number(
        "exposure_time", exposure_time, positive=True)
    noise_e = math.sqrt(preset.sky_electrons(band, exposure_time=t) + preset.dark_current * t
                        + preset.read_noise**2)
    fwhm = preset.seeing_median / preset.pixel_scale
    return _limiting_mag(preset.band(band).zero_point + 2.5 * math.log10(t), noise_e, fwhm)


def _combine(values: dict[str, float], tolerances: dict[str, float]) -> tuple[dict, float, list]:
    """Factors, their product and the reasons (worst first)."""
    terms, notes = {}, []
    for name, x in values.items():
        tol = tolerances[name]
        if math.isfinite(x):
            q = 0.5 ** ((x / tol) ** 2)
            note = f"{name}={x:.3g} > tolerance {tol:g}" if x > tol else f"{name}={x:.3g} (tolerance {tol:g})"
        else:
            q = _UNMEASURED
            note = f"{name} not measured (too few stars or pixels)"
        terms[name] = q
        if q < _REASON_LEVEL:
            notes.append((q, note))
    score = float(np.prod(list(terms.values()))) if terms else 1.0
    return terms, score, [n for _, n in sorted(notes, key=lambda t: t[0])]


def measure_pair_quality(
    science: Any,
    reference: Any,
    difference: Any,
    score: Any,
    psf_science: Any,
    psf_reference: Any,
    *,
    zero_point_science: float,
    zero_point_reference: float,
    pixel_scale_arcsec: float | None = None,
    mask: Any = None,
    difference_mask: Any = None,
    nominal_limiting_mag: float | None = None,
    tolerances: dict[str, float] | None = None,
    star_threshold: float = 10.0,
    max_stars: int = 30,
    min_stars: int = 3,
    blob_threshold: float = 5.0,
) -> PairQuality:
    """Measure a science/reference pair and its difference and score it.

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Registered images in ADU, sky not subtracted.
    difference : array (2-D)
        Difference image D.
    score : array (2-D)
        S_corr of the difference (N(0, 1) on empty sky).
    psf_science, psf_reference : array (2-D)
        The PSF stamps recorded for the images (the ones the subtraction used).
    zero_point_science, zero_point_reference : float
        Header zero points (AB magnitude of 1 ADU).
    pixel_scale_arcsec : float, optional
        Arcsec per pixel, for the seeing in arcsec.
    mask : array of bool, optional
        True for pixels unusable in either input (saturated, bad); stars touching them
        are not used.
    difference_mask : array of bool, optional
        True where the subtraction is unreliable (ZOGY's mask); left out of the S_corr
        statistics and counted in the masked fraction.
    nominal_limiting_mag : float, optional
        The survey's nominal science depth (:func:`nominal_limiting_mag`); without it
        the depth-loss term is not scored.
    tolerances : dict, optional
        Overrides of :data:`TOLERANCES`.
    star_threshold : float, optional
        Peak, in background sigma, of the stars used for FWHM and registration.
    max_stars : int, optional
        Brightest isolated stars fitted for the FWHM.
    min_stars : int, optional
        Fewest stars for the FWHM and the registration residual to count as measured.
    blob_threshold : float, optional
        S_corr level of the blob count (5 sigma).

    Returns
    -------
    PairQuality
        Every measurement, the factor of each term, the score and the reasons.

    Raises
    ------
    ValueError
        For non-2-D or all-NaN images, shapes that differ, bad PSF stamps, non-finite
        zero points or unknown tolerance names.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:64, :64]
    >>> stars = sum(5e3 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.9)
    ...             for x, y in [(14, 14), (48, 15), (15, 49), (47, 48), (31, 32)])
    >>> ref = 100 + stars + rng.normal(0, 3, (64, 64))
    >>> sci = 100 + stars + rng.normal(0, 3, (64, 64))
    >>> g = np.exp(-((np.mgrid[:9, :9] - 4) ** 2).sum(0) / 2.9)
    >>> q = measure_pair_quality(sci, ref, sci - ref, rng.normal(0, 1, (64, 64)), g, g,
    ...                          zero_point_science=25.0, zero_point_reference=25.0)
    >>> q.registration_rms_px < 0.2, abs(q.zero_point_offset_mag) < 0.05, q.score > 0.5
    (True, True, True)
    """
    from astropy.stats import mad_std  # noqa: PLC0415 - optional dependency
    from scipy import ndimage  # noqa: PLC0415

    sci, ref = _image(science, "science"), _image(reference, "reference")
    diff, s_corr = _image(difference, "difference"), _image(score, "score")
    for name, img in (("reference", ref), ("difference", diff), ("score", s_corr)):
        if img.shape != sci.shape:
            msg = f"{name} shape {img.shape} differs from the science shape {sci.shape}"
            raise ValueError(msg)
    p_sci, p_ref = _stamp(psf_science, "psf_science"), _stamp(psf_reference, "psf_reference")
    zp_sci = _finite_number("zero_point_science", zero_point_science)
    zp_ref = _finite_number("zero_point_reference", zero_point_reference)
    scale = None if pixel_scale_arcsec is None else _finite_number(
        "pixel_scale_arcsec", pixel_scale_arcsec, positive=True)
    nominal = None if nominal_limiting_mag is None else _finite_number(
        "nominal_limiting_mag", nominal_limiting_mag)
    tol = _tolerances(tolerances)
    bad = ~np.isfinite(sci) | ~np.isfinite(ref)
    masks = {}
    for name, value in (("mask", mask), ("difference_mask", difference_mask)):
        masks[name] = np.zeros(sci.shape, bool) if value is None else np.asarray(to_numpy(value), dtype=bool)
        if masks[name].shape != sci.shape:
            msg = f"{name} shape {masks[name].shape} differs from the image shape {sci.shape}"
            raise ValueError(msg)
    bad |= masks["mask"]
    if bad.all():
        msg = "every pixel is masked; nothing to measure"
        raise ValueError(msg)

    opts = {"star_threshold": star_threshold, "max_stars": max_stars}
    e_sci, e_ref = _measure_epoch(sci, bad, p_sci, **opts), _measure_epoch(ref, bad, p_ref, **opts)
    ref_idx, sci_idx = _match_stars(e_sci, e_ref)
    n_matched = len(ref_idx)
    for epoch, idx in ((e_sci, sci_idx), (e_ref, ref_idx)):
        _set_fwhm(epoch, idx)
    ref_xy, sci_xy = e_ref.stars[ref_idx, :2], e_sci.stars[sci_idx, :2]
    measured = n_matched >= min_stars
    offsets2 = np.sum((sci_xy - ref_xy) ** 2, axis=1)
    registration_rms = math.sqrt(float(np.mean(offsets2))) if measured else math.nan
    flux_scale = _flux_scale(e_sci, e_ref, ref_xy, sci_xy) if measured else math.nan
    claimed = 10 ** (0.4 * (zp_sci - zp_ref))  # the ratio the header zero points imply
    zp_offset = -2.5 * math.log10(flux_scale / claimed) if flux_scale > 0 else math.nan
    zp_eff_sci = zp_sci - zp_offset if math.isfinite(zp_offset) else zp_sci

    def fwhm_or_stamp(e: _Epoch) -> float:
        return e.fwhm if math.isfinite(e.fwhm) else e.psf_fwhm

    lim_sci = _limiting_mag(zp_eff_sci, e_sci.noise, fwhm_or_stamp(e_sci))
    lim_ref = _limiting_mag(zp_ref, e_ref.noise, fwhm_or_stamp(e_ref))
    mismatch = [abs(math.log(e.psf_fwhm / e.fwhm)) for e in (e_sci, e_ref)
                if math.isfinite(e.fwhm) and e.psf_fwhm > 0]
    psf_mismatch = max(mismatch) if len(mismatch) == 2 else math.nan

    ok = ~bad & ~masks["difference_mask"] & np.isfinite(s_corr) & np.isfinite(diff)
    if not ok.any():
        msg = "no unmasked finite pixel in the difference and score"
        raise ValueError(msg)
    score_std = float(mad_std(s_corr[ok]))
    n_blobs = sum(int(ndimage.label(ok & sel)[1])
                  for sel in (s_corr >= blob_threshold, s_corr <= -blob_threshold))
    expected = _expected_blobs(s_corr, ok, blob_threshold)
    masked_fraction = _interior_fraction(~ok)

    values = {
        "registration_rms_px": registration_rms,
        "zero_point_offset_mag": abs(zp_offset),
        "psf_mismatch": psf_mismatch,
        "log_score_std": abs(math.log(score_std)) if score_std > 0 else math.inf,
        "excess_blobs_per_mpx": max(0.0, n_blobs - np.nan_to_num(expected)) / ok.sum() * 1e6,
        "masked_fraction": masked_fraction,
    }
    depth_loss = nominal - lim_sci if nominal is not None else math.nan
    if nominal is not None:
        values["depth_loss_mag"] = depth_loss
    terms, total, reasons = _combine(values, tol)
    return PairQuality(
        seeing_science_arcsec=e_sci.fwhm * scale if scale else math.nan,
        seeing_reference_arcsec=e_ref.fwhm * scale if scale else math.nan,
        fwhm_science_px=e_sci.fwhm, fwhm_reference_px=e_ref.fwhm,
        psf_fwhm_science_px=e_sci.psf_fwhm, psf_fwhm_reference_px=e_ref.psf_fwhm,
        sky_science_adu=e_sci.sky, sky_reference_adu=e_ref.sky,
        noise_science_adu=e_sci.noise, noise_reference_adu=e_ref.noise,
        flux_scale=flux_scale, zero_point_offset_mag=zp_offset,
        limiting_mag_science=lim_sci, limiting_mag_reference=lim_ref, depth_loss_mag=depth_loss,
        registration_rms_px=registration_rms, n_matched_stars=n_matched, psf_mismatch=psf_mismatch,
        difference_noise=float(mad_std(diff[ok])), score_std=score_std, n_5sigma_blobs=n_blobs,
        n_5sigma_blobs_expected=expected, masked_fraction=masked_fraction, terms=terms,
        score=total, reasons=reasons,
    )


# --------------------------------------------------------------------------- on a dataset
def _survey_of(sample: dict[str, Any], survey: str | SurveyPreset | None) -> SurveyPreset | None:
    if survey != "auto":
        return None if survey is None else get_survey(survey)
    try:
        return get_survey(sample.get("survey", ""))
    except ValueError:
        return None


def _pixel_scale(header: Any, preset: SurveyPreset | None) -> float | None:
    """Arcsec per pixel from the header's celestial WCS, else the survey preset."""
    if "CTYPE1" in header:
        from astropy.wcs import WCS  # noqa: PLC0415 - optional dependency
        from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
        if wcs.has_celestial:
            return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial))) * 3600.0)
    return preset.pixel_scale if preset is not None else None


def quality_sample(manifest: Manifest, sample: dict[str, Any], *,
                   survey: str | SurveyPreset | None = "auto",
                   tolerances: dict[str, float] | None = None) -> PairQuality:
    """Measure one differenced manifest sample with :func:`measure_pair_quality`.

    The images, headers and bad-pixel mask are read as
    :func:`astrid.differencing.difference_sample` reads them
    (:func:`astrid.differencing.read_pair`); the subtraction's ``diff_mask`` is added to
    its own mask; the zero points are the headers' ``ZP``.

    Parameters
    ----------
    manifest : Manifest
        The dataset.
    sample : dict
        One entry with ``science``, ``reference``, ``psf_science``, ``psf_reference``
        and the phase-2 products ``difference`` and ``score``.
    survey : str, SurveyPreset, "auto" or None
        Preset for the nominal depth and, without a WCS, the pixel scale; ``"auto"``
        takes the sample's ``survey`` when it is a known preset; None scores no depth.
    tolerances : dict, optional
        Overrides of :data:`TOLERANCES`.

    Returns
    -------
    PairQuality

    Raises
    ------
    ManifestError
        When a product is missing (run :func:`astrid.differencing.difference_dataset`).
    ValueError
        When a header lacks ``ZP`` and for everything :func:`measure_pair_quality` rejects.
    """
    from astrid.differencing import read_pair  # noqa: PLC0415

    science, reference, h_sci, h_ref, bad = read_pair(manifest, sample)
    difference = manifest.read(sample, "difference", dtype=np.float64)
    score = manifest.read(sample, "score", dtype=np.float64)
    difference_mask = manifest.read(sample, "diff_mask").astype(bool) if "diff_mask" in sample else None
    for name, header in (("science", h_sci), ("reference", h_ref)):
        if "ZP" not in header:
            msg = f"sample {sample['id']!r}: the {name} header has no ZP (zero point)"
            raise ValueError(msg)
    preset = _survey_of(sample, survey)
    nominal = None
    if preset is not None:
        band = sample.get("band") or h_sci.get("BAND")
        nominal = nominal_limiting_mag(preset, band=band if band in preset.bands else None,
                                       exposure_time=h_sci.get("EXPTIME"))
    return measure_pair_quality(
        science, reference, difference, score,
        manifest.read(sample, "psf_science", dtype=np.float64),
        manifest.read(sample, "psf_reference", dtype=np.float64),
        zero_point_science=float(h_sci["ZP"]), zero_point_reference=float(h_ref["ZP"]),
        pixel_scale_arcsec=_pixel_scale(h_sci, preset), mask=bad, difference_mask=difference_mask,
        nominal_limiting_mag=nominal,
        tolerances=tolerances)


def _flag(quality: PairQuality, threshold: float) -> str:
    if quality.score >= threshold:
        return _FLAG_PASSED
    if quality.reasons:
        return "skipped: " + "; ".join(quality.reasons)
    name = min(quality.terms, key=quality.terms.get)  # no term is bad alone: name the weakest
    return (f"skipped: score {quality.score:.3f} below threshold {threshold:g} "
            f"(weakest term {name}, factor {quality.terms[name]:.2f})")


def quality_dataset(manifest: Manifest | str | os.PathLike, *, threshold: float = DEFAULT_THRESHOLD,
                    survey: str | SurveyPreset | None = "auto",
                    tolerances: dict[str, float] | None = None, progress: bool = False) -> Manifest:
    """Score every differenced sample, flag those below ``threshold`` and save the manifest.

    Each sample gets ``quality`` (the :class:`PairQuality` fields, the score, the term
    factors and the reasons) and ``quality_flag``: ``"passed"`` or ``"skipped: <reasons>"``.
    A sample whose images cannot be measured (a :class:`ValueError`, e.g. a constant
    image) or that was never differenced is flagged ``"skipped: ..."`` with that reason.
    No sample is removed; :func:`passing` selects the ones to use. The settings and the
    counts per flag go to ``manifest.info["quality"]``. The manifest is written atomically.

    Parameters
    ----------
    manifest : Manifest or path
        The differenced dataset.
    threshold : float
        Lowest score that passes, in [0, 1].
    survey, tolerances
        As for :func:`quality_sample`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Manifest
        The saved manifest.

    Raises
    ------
    ValueError
        For a threshold outside [0, 1], an empty manifest, or one with no differenced sample.
    """
    threshold = _finite_number("threshold", threshold)
    if not 0.0 <= threshold <= 1.0:
        msg = f"threshold must be in [0, 1], got {threshold}"
        raise ValueError(msg)
    tol = _tolerances(tolerances)
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    if not manifest.samples:
        msg = f"manifest {manifest.path} has no samples"
        raise ValueError(msg)
    if not any("score" in s and "difference" in s for s in manifest.samples):
        msg = f"manifest {manifest.path} has no differenced sample; run difference_dataset first"
        raise ValueError(msg)
    samples: Iterable[dict[str, Any]] = manifest.samples
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        samples = tqdm(samples, desc="quality", unit="pair")
    for sample in samples:
        if "score" not in sample or "difference" not in sample:
            sample.pop("quality", None)
            sample["quality_flag"] = "skipped: not differenced"
            continue
        try:
            quality = quality_sample(manifest, sample, survey=survey, tolerances=tol)
        except (ValueError, ManifestError) as err:
            log.warning("sample %s not measured: %s", sample["id"], err)
            sample.pop("quality", None)
            sample["quality_flag"] = f"skipped: not measured: {err}"
            continue
        sample["quality"] = quality.to_dict()
        sample["quality_flag"] = _flag(quality, threshold)
    flags = [s["quality_flag"] for s in manifest.samples]
    manifest.info["quality"] = {
        "threshold": threshold, "tolerances": tol,
        "survey": survey if isinstance(survey, str | None) else survey.name,
        "n_passed": flags.count(_FLAG_PASSED), "n_skipped": len(flags) - flags.count(_FLAG_PASSED),
    }
    manifest.save()
    return manifest


def passing(samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the samples that :func:`quality_dataset` let through (in their order).

    Parameters
    ----------
    samples : iterable of dict
        Manifest entries (e.g. ``manifest.samples`` or ``manifest.split("test")``).

    Returns
    -------
    list of dict
        The entries flagged ``"passed"``.

    Raises
    ------
    ValueError
        When an entry has no ``quality_flag`` (run :func:`quality_dataset` first).

    Examples
    --------
    >>> passing([{"id": "a", "quality_flag": "passed"},
    ...          {"id": "b", "quality_flag": "skipped: psf_mismatch=0.41 > tolerance 0.2"}])
    [{'id': 'a', 'quality_flag': 'passed'}]
    """
    kept = []
    for sample in samples:
        if "quality_flag" not in sample:
            msg = f"sample {sample.get('id')!r} has no quality_flag; run quality_dataset first"
            raise ValueError(msg)
        if sample["quality_flag"] == _FLAG_PASSED:
            kept.append(sample)
    return kept


def filtered_manifest(manifest: Manifest | str | os.PathLike) -> Manifest:
    """In-memory copy of a scored manifest whose samples are the passing ones.

    The flagged samples move to ``skipped`` with their flag as ``reason``, so that even
    a saved copy keeps them. Give it to :func:`astrid.evaluate.run_study` for the
    with-filter half of the ablation (the original manifest for the other half).

    Parameters
    ----------
    manifest : Manifest or path
        A manifest scored by :func:`quality_dataset`.

    Returns
    -------
    Manifest
        Same root and files; not saved.

    Raises
    ------
    ValueError
        When a sample has no ``quality_flag``.
    """
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    kept = passing(manifest.samples)
    ids = {s["id"] for s in kept}
    dropped = [{**s, "reason": s["quality_flag"]} for s in manifest.samples if s["id"] not in ids]
    return replace(manifest, samples=list(kept), skipped=[*manifest.skipped, *dropped],
                   info={**manifest.info, "quality_filtered": True})


def quality_table(samples: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per sample: id, split, flag, score, every measurement and the reasons.

    Parameters
    ----------
    samples : iterable of dict
        Manifest entries scored by :func:`quality_dataset`.

    Returns
    -------
    pandas.DataFrame
        Indexed by sample id; ``degradation`` holds the kind of samples spoiled by
        :func:`degrade_sample` (``"none"`` for the others) when there are any.

    Examples
    --------
    >>> quality_table([{"id": "a", "split": "test", "quality_flag": "passed",
    ...                 "quality": {"score": 0.9, "reasons": []}}]).loc["a", "score"]
    np.float64(0.9)
    """
    rows = []
    for sample in samples:
        q = dict(sample.get("quality") or {})
        q.pop("terms", None)
        row = {"id": sample["id"], "split": sample.get("split"),
               "quality_flag": sample.get("quality_flag"), **q}
        row["reasons"] = "; ".join(q.get("reasons") or [])
        if "degradation" in sample:
            row["degradation"] = sample["degradation"]["kind"]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()
    if "degradation" in table:
        table["degradation"] = table["degradation"].fillna("none")
    return table


# --------------------------------------------------------------------------- degraded pairs
@dataclass
class DegradedPair:
    """Result of :func:`degrade_pair`.

    Attributes
    ----------
    science : numpy.ndarray
        The degraded science image (ADU, with sky).
    psf_science : numpy.ndarray
        The PSF stamp recorded for it (wrong for ``psf_mismatch``).
    header_updates : dict
        Science header keywords that change (``keyword -> (value, comment)``); the true
        conditions, never the zero point.
    kind : str
        The degradation.
    strength : float
        Its size: shift (pixels), flux factor, FWHM factor or noise factor.
    """

    science: np.ndarray
    psf_science: np.ndarray
    header_updates: dict[str, tuple[Any, str]]
    kind: str
    strength: float


def degrade_pair(science: Any, psf_science: Any, header_science: Any, *, kind: str,
                 rng: np.random.Generator, strength: float | None = None) -> DegradedPair:
    """Spoil a science image (or its recorded PSF) the way a bad epoch would be.

    ``registration``
        Shift the science image by ``strength`` pixels (default uniform 1-2) in a random
        direction (Fourier shift; the wrapped border becomes NaN): the pair is no longer
        registered although the WCS says it is.
    ``cloudy``
        Multiply the sources (image minus background) by ``strength`` (default uniform
        0.3-0.5, a 0.75-1.3 mag transparency loss) and add noise so that the sky noise
        stays as it was; the header zero point still claims the clear-sky value.
    ``psf_mismatch``
        Replace the recorded PSF stamp with the header's Moffat (``FWHMPIX``,
        ``PSFBETA``, ``PSFELLIP``, ``PSFANGLE``) at ``strength`` times the FWHM
        (default 1.5 or 1/1.5 at random); the image is untouched.
    ``noisy``
        Add Gaussian noise so that the background noise grows by ``strength`` (default
        uniform 4-5, a 1.5-1.75 mag loss of depth: beyond the natural spread of seeing
        and sky, which costs simulated ZTF-like epochs up to about 1.2 mag).

    Parameters
    ----------
    science : array (2-D)
        Science image in ADU with sky.
    psf_science : array (2-D)
        Its recorded PSF stamp.
    header_science : dict or astropy.io.fits.Header
        Its header (``FWHMPIX`` and the Moffat keywords for ``psf_mismatch``).
    kind : str
        One of :data:`DEGRADATIONS`.
    rng : numpy.random.Generator
        Source of randomness.
    strength : float, optional
        Size of the degradation (see above).

    Returns
    -------
    DegradedPair
        New arrays (inputs are not modified) and the header keywords to update.

    Raises
    ------
    ValueError
        For an unknown kind, a missing Generator, a non-2-D image or a bad strength.

    Examples
    --------
    >>> img = 100 + np.random.default_rng(0).normal(0, 5, (32, 32))
    >>> out = degrade_pair(img, np.ones((5, 5)) / 25, {}, kind="noisy", rng=np.random.default_rng(1),
    ...                    strength=2.0)
    >>> bool(1.7 < out.science.std() / img.std() < 2.3)
    True
    """
    from astrid.psf import estimate_background, shift_image  # noqa: PLC0415

    if kind not in DEGRADATIONS:
        msg = f"kind must be one of {DEGRADATIONS}, got {kind!r}"
        raise ValueError(msg)
    if not isinstance(rng, np.random.Generator):
        msg = f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        raise ValueError(msg)
    sci = _image(science, "science")
    psf = _stamp(psf_science, "psf_science")
    defaults = {"registration": lambda: rng.uniform(1.0, 2.0), "cloudy": lambda: rng.uniform(0.3, 0.5),
                "psf_mismatch": lambda: 1.5 ** rng.choice([-1.0, 1.0]),
                "noisy": lambda: rng.uniform(4.0, 5.0)}
    value = float(defaults[kind]()) if strength is None else _finite_number("strength", strength,
                                                                            positive=True)
    if (kind == "cloudy" and value >= 1.0) or (kind == "noisy" and value <= 1.0):
        msg = f"strength of {kind!r} must be {'below' if kind == 'cloudy' else 'above'} 1, got {value}"
        raise ValueError(msg)
    header = dict(header_science.items()) if header_science is not None else {}
    updates: dict[str, tuple[Any, str]] = {}
    out = sci.copy()
    if kind == "registration":
        angle = rng.uniform(0.0, 2.0 * math.pi)
        dx, dy = value * math.cos(angle), value * math.sin(angle)
        out = shift_image(sci, (dy, dx))
        updates["REGDX"] = (float(header.get("REGDX", 0.0)) + dx, "true residual registration dx [pixel]")
        updates["REGDY"] = (float(header.get("REGDY", 0.0)) + dy, "true residual registration dy [pixel]")
    elif kind in {"cloudy", "noisy"}:
        bkg = estimate_background(sci, mask=~np.isfinite(sci))
        if kind == "cloudy":
            extra = bkg.rms * math.sqrt(1.0 - value**2)
            out = bkg.background + value * (sci - bkg.background)
            updates["TRANSP"] = (float(header.get("TRANSP", 1.0)) * value, "true transparency vs reference")
        else:
            extra = bkg.rms * math.sqrt(value**2 - 1.0)
            updates["SKYSIG"] = (value * bkg.sigma, "sky noise [ADU]")
        out = out + rng.standard_normal(sci.shape) * extra
    else:
        from astrid.simulate.psf import MoffatPSF  # noqa: PLC0415

        if "FWHMPIX" not in header:
            msg = "header_science needs FWHMPIX (and the Moffat keywords) for a psf_mismatch"
            raise ValueError(msg)
        moffat = MoffatPSF(float(header["FWHMPIX"]) * value, beta=float(header.get("PSFBETA", 3.0)),
                           ellipticity=float(header.get("PSFELLIP", 0.0)),
                           angle=math.radians(float(header.get("PSFANGLE", 0.0))))
        psf = np.asarray(moffat.stamp(radius=psf.shape[0] // 2), dtype=np.float64)
    updates["DEGRADE"] = (kind, "deliberate degradation (astrid.quality)")
    updates["DEGRSTR"] = (value, "its strength")
    return DegradedPair(science=out.astype(np.float32), psf_science=psf.astype(np.float32),
                        header_updates=updates, kind=kind, strength=value)


def degrade_sample(manifest: Manifest, sample: dict[str, Any], *, kind: str, rng: np.random.Generator,
                   strength: float | None = None) -> dict[str, Any]:
    """Degrade one manifest sample in place with :func:`degrade_pair`.

    The science image (and, for ``psf_mismatch``, the recorded PSF stamp, whose
    ``FWHMPIX`` is changed to match) is rewritten and re-hashed, the header gets the
    true conditions, and ``sample["degradation"]`` records the kind and strength. Any
    phase-2 products are now stale: difference again with ``overwrite=True``. The
    caller saves the manifest.

    Parameters
    ----------
    manifest : Manifest
        The dataset.
    sample : dict
        One of its entries with ``science`` and ``psf_science``; its science epoch must
        have a PSF file of its own (as :func:`astrid.simulate.generate_dataset` writes).
    kind : str
        One of :data:`DEGRADATIONS`.
    rng : numpy.random.Generator
        Source of randomness.
    strength : float, optional
        See :func:`degrade_pair`.

    Returns
    -------
    dict
        ``sample["degradation"]``.

    Raises
    ------
    ValueError
        When the sample's ``psf_science`` is shared with another sample, and for what
        :func:`degrade_pair` rejects.
    """
    if kind == "psf_mismatch" and sum(s.get("psf_science") == sample["psf_science"]
                                      for s in manifest.samples) > 1:
        msg = f"sample {sample['id']!r} shares its psf_science file; cannot spoil it alone"
        raise ValueError(msg)
    science, header = read_fits(manifest.file(sample, "science"), dtype=np.float64)
    psf, psf_header = read_fits(manifest.file(sample, "psf_science"), dtype=np.float64)
    out = degrade_pair(science, psf, header, kind=kind, rng=rng, strength=strength)
    header.update(out.header_updates)
    write_fits(manifest.file(sample, "science"), out.science, header, overwrite=True)
    manifest.record_file(sample["science"])
    if kind == "psf_mismatch":
        psf_header["FWHMPIX"] = (float(psf_header.get("FWHMPIX", math.nan)) * out.strength,
                                 "PSF FWHM [pixel] (deliberately wrong)")
        write_fits(manifest.file(sample, "psf_science"), out.psf_science, psf_header, overwrite=True)
        manifest.record_file(sample["psf_science"])
    sample["degradation"] = {"kind": kind, "strength": round(out.strength, 6)}
    return sample["degradation"]


def degraded_dataset(output_dir: str | os.PathLike, *, n_clean: int = 40, n_per_kind: int = 40,
                     kinds: Sequence[str] = DEGRADATIONS, survey: str | SurveyPreset = "ztf",
                     image_size: int = 256, seed: int = 0, overwrite: bool = False,
                     **scene_params: Any) -> Manifest:
    """Simulate single-epoch pairs and deliberately degrade some of them.

    ``n_clean + len(kinds) * n_per_kind`` fields are simulated with
    :func:`astrid.simulate.generate_dataset` (one science epoch each); ``n_per_kind``
    randomly chosen pairs per kind go through :func:`degrade_sample`, and every sample
    records ``degradation`` (``{"kind": "none"}`` for clean ones). The result is not
    differenced yet.

    Parameters
    ----------
    output_dir : path-like
        New (or empty) folder.
    n_clean, n_per_kind : int
        Clean pairs and degraded pairs of each kind.
    kinds : sequence of str
        Kinds from :data:`DEGRADATIONS`.
    survey : str or SurveyPreset
        Survey preset.
    image_size : int
        Image side in pixels.
    seed : int
        Seed of the simulation and of the degradations.
    overwrite : bool
        Empty a non-empty ``output_dir``.
    **scene_params
        Further :func:`astrid.simulate.generate_dataset` parameters.

    Returns
    -------
    Manifest
        The saved manifest (``info["degradations"]`` records the settings).

    Raises
    ------
    ValueError
        For unknown kinds or negative counts, and what ``generate_dataset`` rejects.
    """
    from astrid.simulate import generate_dataset  # noqa: PLC0415

    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown:
        msg = f"unknown degradation kind(s) {unknown}; known: {DEGRADATIONS}"
        raise ValueError(msg)
    for name, value in (("n_clean", n_clean), ("n_per_kind", n_per_kind)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            msg = f"{name} must be a non-negative int, got {value!r}"
            raise ValueError(msg)
    n_fields = int(n_clean) + len(kinds) * int(n_per_kind)
    manifest = generate_dataset(output_dir, survey=survey, n_fields=n_fields, n_epochs=1,
                                image_size=image_size, seed=seed, overwrite=overwrite, **scene_params)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(n_fields + 1)[-1])
    plan = np.array(["none"] * int(n_clean) + [k for k in kinds for _ in range(int(n_per_kind))])
    rng.shuffle(plan)
    for sample, kind in zip(manifest.samples, plan, strict=True):
        if kind == "none":
            sample["degradation"] = {"kind": "none"}
        else:
            degrade_sample(manifest, sample, kind=str(kind), rng=rng)
    manifest.info["degradations"] = {"n_clean": int(n_clean), "n_per_kind": int(n_per_kind),
                                     "kinds": list(kinds), "seed": int(seed)}
    manifest.save()
    return manifest

"""Temporal context of a candidate: its light curve and motion from the other epochs.

A single difference image cannot tell a supernova on its rise from a variable
star at maximum, or an asteroid from a cosmic ray; the epochs around it can.
This module measures, for each candidate of one epoch, what the other epochs
of the same field (same band) show at and around its position, and gives
real ZTF alerts the same numbers from their ``prv_candidates`` history:

* :func:`epoch_context` - forced photometry and S_corr at the candidate's
  position in the field's other epochs (only earlier ones by default, as an
  alert stream sees them), and the nearest offset detection for motion
  (columns :data:`CONTEXT_COLUMNS`); :func:`context_features` does the same on
  arrays (:class:`EpochImages`);
* :func:`context_stamps` - the previous epoch's difference and S_corr around
  each candidate (an extra input channel for a CNN);
* :func:`alert_context`, :func:`alert_contexts` - the same columns from a ZTF
  alert's ``prv_candidates``;
* :func:`kind_table` - the study's candidates with their true kind, hand
  features and context: the input of the kind classifier's ablation
  (:func:`astrid.classic.feature_ablation`, with and without
  :data:`CONTEXT_COLUMNS`).

Fluxes are in microjansky (AB magnitude 23.9), signed: positive where the
science image is brighter than the reference. What each pattern means:
variables recur with both signs; supernovae rise, then fade, at one spot;
moving objects sit at a spot in one epoch only, with a detection nearby in
another epoch at a distance their rate explains; cosmic rays never recur; hot
pixels recur at a fixed detector position with a constant flux.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from astrid import detect
from astrid.manifest import Manifest, read_fits
from astrid.surveys import microjansky

__all__ = [
    "CONTEXT_COLUMNS",
    "ContextStamps",
    "EpochImages",
    "alert_context",
    "alert_contexts",
    "context_features",
    "context_stamps",
    "epoch_context",
    "kind_table",
    "read_epoch",
]

log = logging.getLogger(__name__)

CONTEXT_COLUMNS: tuple[str, ...] = (
    "n_prior_epochs",
    "n_prior_detections",
    "persistence",
    "n_opposite_sign",
    "days_since_first_detection",
    "prev_dt_days",
    "prev_score",
    "prev_flux",
    "flux_rate",
    "mag_rate",
    "flux_scatter",
    "motion_distance",
    "motion_rate",
    "motion_mutual",
    "motion_partners",
    "motion_chance",
    "night_shift",
    "night_shift_sigma",
)
"""Columns of :func:`epoch_context` and :func:`alert_context` (see :func:`context_features`)."""



# --------------------------------------------------------------------------- epochs


@dataclass
class EpochImages:
    """The ZOGY products of one epoch that the context is measured on.

    Attributes
    ----------
    mjd : float
        Mid-exposure MJD of the science image.
    score : numpy.ndarray
        S_corr (unit variance), ``(H, W)``.
    difference : numpy.ndarray
        D, ``(H, W)``, same grid.
    psf_difference : numpy.ndarray
        PSF of D, a centred odd stamp.
    microjansky_per_flux : float
        Microjansky per unit PSF flux of D, ``10**(-0.4 (ZP - 23.9)) / F_D``
        (``nan`` when the zero point or F_D is unknown: fluxes are then ``nan``).
    mask : numpy.ndarray of bool, optional
        Unusable pixels (``diff_mask``); nothing is measured there.
    name : str
        Label for messages (the sample id).

    Notes
    -----
    The epoch's point sources (the moving-object partners it offers) are
    found once per threshold and kept with it, so one epoch serves every
    candidate image of its field; treat the arrays as read-only.
    """

    mjd: float
    score: np.ndarray
    difference: np.ndarray
    psf_difference: np.ndarray
    microjansky_per_flux: float = math.nan
    mask: np.ndarray | None = None
    name: str = ""
    _sources: dict[float, pd.DataFrame] = dataclasses.field(default_factory=dict, init=False, repr=False,
                                                           compare=False)

    def __post_init__(self) -> None:
        self.score = _plane(self.score, f"{self.name or 'epoch'} score")
        self.difference = _plane(self.difference, f"{self.name or 'epoch'} difference")
        if self.difference.shape != self.score.shape:
            msg = (f"{self.name or 'epoch'}: difference {self.difference.shape} and score "
                   f"{self.score.shape} differ")
            raise ValueError(msg)
        psf = np.asarray(self.psf_difference, dtype=float)
        if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0 or not psf.sum() > 0:
            msg = f"{self.name or 'epoch'}: psf_difference must be a centred odd stamp with a positive sum"
            raise ValueError(msg)
        self.psf_difference = psf / psf.sum()
        if not math.isfinite(self.mjd):
            msg = f"{self.name or 'epoch'}: mjd must be finite, got {self.mjd!r}"
            raise ValueError(msg)
        if self.mask is not None:
            self.mask = np.asarray(self.mask).astype(bool)
            if self.mask.shape != self.score.shape:
                msg = f"{self.name or 'epoch'}: mask {self.mask.shape} differs from score {self.score.shape}"
                raise ValueError(msg)


def _plane(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        msg = f"{name} must be a non-empty 2-D image, got shape {arr.shape}"
        raise ValueError(msg)
    return arr


def read_epoch(manifest: Manifest, sample: Mapping[str, Any]) -> EpochImages:
    """Read one sample's ZOGY products into :class:`EpochImages`.

    Parameters
    ----------
    manifest : Manifest
        A dataset with the differencing products.
    sample : dict
        One entry with ``mjd``, ``difference``, ``score`` and ``psf_difference``
        (``diff_mask`` optional); D's header gives ``ZP`` and ``FD``.

    Returns
    -------
    EpochImages

    Raises
    ------
    ValueError
        When the sample has no ``mjd`` (``KeyError`` from the manifest when a
        product is missing).
    """
    if sample.get("mjd") is None:
        msg = f"sample {sample.get('id')!r} has no 'mjd'; the temporal context needs observation times"
        raise ValueError(msg)
    difference, header = read_fits(manifest.file(sample, "difference"), dtype=np.float64)
    zero_point, flux_scale = header.get("ZP"), header.get("FD")
    scale = (microjansky(zero_point) / float(flux_scale)
             if zero_point is not None and flux_scale else math.nan)
    return EpochImages(
        mjd=float(sample["mjd"]),
        score=manifest.read(sample, "score", dtype=np.float64),
        difference=difference,
        psf_difference=manifest.read(sample, "psf_difference", dtype=np.float64),
        microjansky_per_flux=scale,
        mask=manifest.read(sample, "diff_mask").astype(bool) if "diff_mask" in sample else None,
        name=str(sample.get("id", "")),
    )


def _field_epochs(manifest: Manifest, sample: Mapping[str, Any], *, causal: bool,
                  within_days: float | None = None) -> list[dict[str, Any]]:
    """Return the other samples of ``sample``'s field in time order (earlier ones when causal).

    Only those of ``sample``'s band, or with ``within_days`` those of any band
    at most that many days away.
    """
    for key in ("field", "mjd"):
        if sample.get(key) is None:
            msg = f"sample {sample.get('id')!r} has no {key!r}; the temporal context needs it"
            raise ValueError(msg)
    now = float(sample["mjd"])
    others = [
        s for s in manifest.samples
        if s.get("field") == sample["field"] and s.get("id") != sample.get("id") and s.get("mjd") is not None
        and (s.get("band") == sample.get("band") if within_days is None
             else abs(float(s["mjd"]) - now) <= within_days)
        and (not causal or float(s["mjd"]) < now)
    ]
    return sorted(others, key=lambda s: float(s["mjd"]))


# --------------------------------------------------------------------------- measurements


def _windows(image: np.ndarray, pixels: np.ndarray, half: int) -> np.ndarray:
    """Cut ``(N, 2 half + 1, 2 half + 1)`` windows centred on integer ``pixels`` (x, y), NaN outside."""
    offsets = np.arange(-half, half + 1)
    rows, cols = np.broadcast_arrays(pixels[:, 1, None, None] + offsets[None, :, None],
                                     pixels[:, 0, None, None] + offsets[None, None, :])
    inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    out = np.full(rows.shape, np.nan)
    out[inside] = image[rows[inside], cols[inside]]
    return out


@dataclass
class _Spot:
    """What one epoch shows at each candidate position."""

    score: np.ndarray  # signed S_corr of largest modulus within the match radius (nan: not measurable)
    flux: np.ndarray  # forced PSF flux of D (astrid.detect.forced_photometry), microjansky


def _measure(epoch: EpochImages, xy: np.ndarray, match_radius: float) -> _Spot:
    """Signed peak S_corr within ``match_radius`` and forced PSF-fit flux of D at each position."""
    return _Spot(_peak_score(epoch, xy, match_radius), _forced_flux(epoch, xy))


def _disc_peak(image: np.ndarray, xy: np.ndarray, radius: float,
               weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest value of ``image`` (times each position's ``weight``) within ``radius`` of each position.

    Returns the peak values (``-inf`` where the disc holds no finite pixel),
    the peak pixels ``(N, 2)`` (x, y) and whether the centre pixel is finite.
    """
    n = len(xy)
    pixels = np.floor(xy + 0.5).astype(int)
    r = max(1, math.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    win = _windows(image, pixels, r)
    if weight is not None:
        win = win * weight[:, None, None]
    centre = np.isfinite(win[:, r, r])
    win[:, np.hypot(xx, yy) > max(radius, 1.0)] = np.nan
    flat = np.where(np.isfinite(win), win, -np.inf).reshape(n, -1)
    pick = np.argmax(flat, axis=1)
    at = pixels + np.column_stack([xx.ravel()[pick], yy.ravel()[pick]])
    return flat[np.arange(n), pick], at, centre


def _masked_score(epoch: EpochImages) -> np.ndarray:
    return epoch.score if epoch.mask is None else np.where(epoch.mask, np.nan, epoch.score)


def _peak_score(epoch: EpochImages, xy: np.ndarray, match_radius: float) -> np.ndarray:
    """Signed S_corr of largest modulus within ``match_radius`` of each position (nan: not measurable)."""
    score = _masked_score(epoch)
    size, at, centre = _disc_peak(np.abs(score), xy, match_radius)
    valid = centre & np.isfinite(size)
    return np.where(valid, score[np.clip(at[:, 1], 0, score.shape[0] - 1),
                                 np.clip(at[:, 0], 0, score.shape[1] - 1)], np.nan)


def _forced_flux(epoch: EpochImages, xy: np.ndarray) -> np.ndarray:
    """Return the forced PSF-fit flux of D at each position (:func:`astrid.detect.forced_photometry`), uJy."""
    if len(xy) == 0:
        return np.zeros(0)
    difference = epoch.difference if epoch.mask is None else np.where(epoch.mask, np.nan, epoch.difference)
    flux = detect.forced_photometry(difference, xy, psf=epoch.psf_difference)["flux"].to_numpy()
    return flux * epoch.microjansky_per_flux


def _point_sources(epoch: EpochImages, threshold: float) -> pd.DataFrame:
    """Return the S_corr peaks beyond ``threshold`` that pass the baseline's sharpness and dipole cuts.

    :func:`astrid.detect.candidates_from_score` on D: the sharpness cut drops
    cosmic rays and hot pixels, which would otherwise pose as a moving object's
    other self; elongated peaks are kept, since a fast asteroid trails.
    Columns ``x``, ``y``, ``sign`` and ``flux`` (forced, microjansky); found
    once per epoch and threshold.
    """
    if threshold not in epoch._sources:
        peaks = detect.candidates_from_score(epoch.score, difference=epoch.difference, mask=epoch.mask,
                                             threshold=threshold, psf=epoch.psf_difference,
                                             max_elongation=math.inf)
        peaks = peaks.loc[peaks["passes_cuts"], ["x", "y", "sign"]].reset_index(drop=True)
        peaks["flux"] = _forced_flux(epoch, peaks[["x", "y"]].to_numpy(float))
        epoch._sources[threshold] = peaks
    return epoch._sources[threshold]


def context_features(
    candidates: pd.DataFrame | ArrayLike,
    current: EpochImages,
    others: Sequence[EpochImages],
    *,
    partners: Sequence[EpochImages] | None = None,
    threshold: float = 5.0,
    match_radius: float = 2.0,
    motion_radius: float = 100.0,
    motion_days: float = 0.5,
    motion_flux_ratio: float = 3.0,
    motion_threshold: float = 4.0,
    pixel_scale: float = 1.0,
) -> pd.DataFrame:
    """Light-curve and motion features of candidates from the other epochs of their field.

    Each other epoch is measured at every candidate position (the images share
    the reference grid): the S_corr of largest modulus within ``match_radius``
    (a *detection* where it reaches ``threshold``) and the forced PSF-fit flux of
    D. An epoch whose pixels there are masked or off the image does not count
    for that candidate. The candidate's own sign and flux come from
    ``current`` the same way.

    Parameters
    ----------
    candidates : pandas.DataFrame or array_like
        A table with ``x``, ``y`` columns (pixels), or an ``(N, 2)`` array.
    current : EpochImages
        The epoch the candidates were found in.
    others : sequence of EpochImages
        The other epochs to look at (earlier ones only for a causal context).
    partners : sequence of EpochImages, optional
        The epochs searched for a moving object's other self (default
        ``others``): e.g. every band of the same night, since the position of
        a detection does not depend on the band it was taken in.
    threshold : float
        Detection threshold in S_corr sigma.
    match_radius : float
        Pixels within which a detection is "at the same position".
    motion_radius : float
        Largest distance, in arcsec, searched for the moving-object partner.
    motion_days : float
        Largest time between the two epochs of a moving-object pair, in days
        (0.5: the same night, as asteroid tracklets are found).
    motion_flux_ratio : float
        Largest ratio between the partner's and the candidate's ``|flux|``.
    motion_threshold : float
        S_corr sigma a moving-object partner needs (below ``threshold``: the
        partner is searched for with the candidate in hand, and a mover is
        often fainter in the other visit's band).
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    pandas.DataFrame
        Same index as ``candidates``, float columns :data:`CONTEXT_COLUMNS`:

        ``n_prior_epochs``, ``n_prior_detections``
            other epochs measurable at the position, and those with a detection;
        ``persistence``
            their ratio (``nan`` without another epoch);
        ``n_opposite_sign``
            detections of the opposite sign to the candidate (variables);
        ``days_since_first_detection``
            from the first detection there (``nan`` when none) to now;
        ``prev_dt_days``, ``prev_score``, ``prev_flux``
            time now minus time of the nearest other epoch in time (the
            previous one when causal; negative for a later one), in days, and
            the signed S_corr and forced flux (microjansky) there;
        ``flux_rate``
            ``(flux now - prev_flux) / (time now - time there)``, microjansky per day;
        ``mag_rate``
            magnitude change per day (negative = brightening), only when both
            epochs detect it with the same sign;
        ``flux_scatter``
            standard deviation over mean of ``|flux|`` over the detections at
            the position, this epoch's included (about 0 for a hot pixel);
        ``night_shift``, ``night_shift_sigma``
            arcsec between the candidate's S_corr centroid and that of the
            detection of its sign within ``2 match_radius`` in another epoch at
            most ``motion_days`` away (any band), and that offset over its
            error (centroid errors from the PSF width over each peak's S/N,
            plus 0.1 px of registration per epoch); the epoch where it is most
            significant counts. About 0 and 1 for a static source, large for a
            slow mover (a comet, an asteroid near its stationary point) whose
            partner is too near for ``motion_distance``; ``nan`` when no such
            epoch detects it;
        ``motion_distance``, ``motion_rate``
            arcsec to, and arcsec per hour implied by, the detection (passing
            the sharpness and dipole cuts of
            :func:`astrid.detect.candidates_from_score`; trailed ones too) of the candidate's
            sign and a flux within ``motion_flux_ratio`` in another epoch at most ``motion_days``
            away, that lies beyond ``match_radius`` and within
            ``motion_radius``, is gone from this epoch, and whose epoch shows
            nothing at the candidate's position (a moving object's other
            self) of lowest cost (distance and flux mismatch), the first of
            the three lowest that is mutual when one is; ``nan`` when there is
            none;
        ``motion_mutual``
            1 when that partner's best match among this epoch's detections is
            the candidate, else 0 (``nan`` without a partner);
        ``motion_partners``
            the number of detections that qualified as partner (mutual or not;
            1 for a lone asteroid, many for a fragment of a satellite trail
            or an image full of cosmic rays);
        ``motion_chance``
            the number of those expected by chance at most as far as the
            partner, ``motion_partners (motion_distance / motion_radius)**2``
            (small for a genuine partner; ``nan`` without one);

    Raises
    ------
    ValueError
        On bad positions or options, or epochs on another grid.

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> psf = np.exp(-((np.mgrid[:7, :7] - 3.0) ** 2).sum(0) / 4.5)
    >>> blob = lambda a: a * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 4.5)
    >>> ep = [EpochImages(mjd=float(t), score=blob(a) / 2, difference=blob(a), psf_difference=psf,
    ...                   microjansky_per_flux=1.0) for t, a in enumerate([20.0, 40.0, 60.0])]
    >>> f = context_features([[16, 16]], ep[2], ep[:2])
    >>> f[["n_prior_detections", "days_since_first_detection", "flux_rate"]].round(1).to_dict("records")
    [{'n_prior_detections': 2.0, 'days_since_first_detection': 2.0, 'flux_rate': 273.0}]
    """
    xy, index = detect.candidate_positions(candidates)
    for name, value in (("threshold", threshold), ("match_radius", match_radius),
                        ("motion_radius", motion_radius), ("motion_days", motion_days),
                        ("motion_flux_ratio", motion_flux_ratio), ("motion_threshold", motion_threshold),
                        ("pixel_scale", pixel_scale)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            msg = f"{name} must be a positive number, got {value!r}"
            raise ValueError(msg)
    partners = others if partners is None else partners
    if not all(isinstance(e, EpochImages) for e in (current, *others, *partners)):
        msg = "current, others and partners must be EpochImages"
        raise ValueError(msg)
    for epoch in (*others, *partners):
        if epoch.score.shape != current.score.shape:
            msg = f"epoch {epoch.name!r} has shape {epoch.score.shape}, expected {current.score.shape}"
            raise ValueError(msg)
    n = len(xy)
    now = _measure(current, xy, match_radius)
    sign = np.where(now.score < 0, -1.0, 1.0)
    flux_now = now.flux
    spots = [_measure(e, xy, match_radius) for e in others]
    times = np.array([e.mjd for e in others], dtype=float)

    scores = np.array([s.score for s in spots]).reshape(len(others), n)
    fluxes = np.array([s.flux for s in spots]).reshape(len(others), n)
    measurable = np.isfinite(scores)
    detected = measurable & (np.abs(scores) >= threshold)
    n_epochs = measurable.sum(axis=0).astype(float)
    n_det = detected.sum(axis=0).astype(float)
    out = pd.DataFrame(index=index, columns=list(CONTEXT_COLUMNS), dtype=float)
    out["n_prior_epochs"] = n_epochs
    out["n_prior_detections"] = n_det
    with np.errstate(invalid="ignore", divide="ignore"):
        out["persistence"] = np.where(n_epochs > 0, n_det / n_epochs, np.nan)
    out["n_opposite_sign"] = (detected & (np.sign(scores) == -sign[None, :])).sum(axis=0).astype(float)
    first = np.where(detected, times[:, None], np.inf).min(axis=0) if len(others) else np.full(n, np.inf)
    out["days_since_first_detection"] = np.where(np.isfinite(first), current.mjd - first, np.nan)

    prev_dt, prev_score, prev_flux = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    gap = np.where(measurable, np.abs(current.mjd - times)[:, None], np.inf)
    has = measurable.any(axis=0)
    nearest = np.argmin(gap, axis=0) if len(others) else np.zeros(n, int)
    cols = np.flatnonzero(has)
    rows = nearest[cols]
    prev_dt[cols] = current.mjd - times[rows]
    prev_score[cols] = scores[rows, cols]
    prev_flux[cols] = fluxes[rows, cols]
    out["prev_dt_days"], out["prev_score"], out["prev_flux"] = prev_dt, prev_score, prev_flux
    with np.errstate(invalid="ignore", divide="ignore"):
        out["flux_rate"] = np.where(prev_dt != 0, (flux_now - prev_flux) / prev_dt, np.nan)
        both = ((np.abs(prev_score) >= threshold) & (np.sign(prev_score) == sign)
                & (np.abs(now.score) >= threshold))
        ratio = np.abs(flux_now) / np.abs(prev_flux)
        out["mag_rate"] = np.where(both & (ratio > 0) & np.isfinite(ratio) & (prev_dt != 0),
                                   -2.5 * np.log10(np.where(ratio > 0, ratio, 1.0)) / prev_dt, np.nan)
        seen = np.vstack([detected, np.abs(now.score)[None] >= threshold])
        seen &= np.isfinite(np.vstack([fluxes, flux_now[None]]))
        magnitude = np.where(seen, np.abs(np.vstack([fluxes, flux_now[None]])), 0.0)
        count = seen.sum(axis=0)
        mean = magnitude.sum(axis=0) / count
        spread = np.sqrt(np.maximum((magnitude**2).sum(axis=0) / count - mean**2, 0.0))
        out["flux_scatter"] = np.where((count >= 2) & (mean > 0), spread / mean, np.nan)

    distance, hours, mutual, n_partners = _motion(
        xy, sign, flux_now, current, partners, threshold=threshold, partner_threshold=motion_threshold,
        match_radius=match_radius, max_pixels=motion_radius / pixel_scale, max_days=motion_days,
        max_ratio=motion_flux_ratio)
    out["motion_distance"] = distance * pixel_scale
    with np.errstate(invalid="ignore", divide="ignore"):
        out["motion_rate"] = distance * pixel_scale / hours
    out["motion_mutual"] = mutual
    out["motion_partners"] = n_partners
    out["motion_chance"] = n_partners * (distance * pixel_scale / motion_radius) ** 2
    shift, significance = _night_shift(xy, sign, current, partners, threshold=threshold,
                                       radius=2.0 * match_radius, max_days=motion_days)
    out["night_shift"] = shift * pixel_scale
    out["night_shift_sigma"] = significance
    return out


_REGISTRATION_PX = 0.1  # registration error per epoch assumed in night_shift_sigma, pixels


def _centroids(epoch: EpochImages, xy: np.ndarray, sign: np.ndarray,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel position of the peak of each candidate's sign (signed S_corr) within ``radius``.

    Returns the ``(N, 2)`` centroids and the peaks' ``|S_corr|`` (``nan``
    where nothing inside the radius can be measured).
    """
    score = _masked_score(epoch)
    peak, at, _ = _disc_peak(score, xy, radius, weight=sign)
    core = _windows(score, at, 1) * sign[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # three-point Gaussian interpolation along each axis through the peak (exact for a Gaussian peak)
        log = np.log(np.where(core > 0, core, np.nan))
        offset = np.column_stack([
            (log[:, 1, 0] - log[:, 1, 2]) / (2.0 * (log[:, 1, 0] - 2.0 * log[:, 1, 1] + log[:, 1, 2])),
            (log[:, 0, 1] - log[:, 2, 1]) / (2.0 * (log[:, 0, 1] - 2.0 * log[:, 1, 1] + log[:, 2, 1])),
        ])
    centre = at + np.clip(np.nan_to_num(offset, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    return centre, np.where(np.isfinite(peak) & (peak > 0), peak, np.nan)


def _psf_sigma(psf: np.ndarray) -> float:
    """Gaussian-equivalent sigma (pixels) of a centred PSF stamp from its second moments."""
    h, w = psf.shape
    yy, xx = np.mgrid[: h, : w]
    weight = np.clip(psf, 0.0, None)
    r2 = (xx - w // 2) ** 2 + (yy - h // 2) ** 2
    return math.sqrt(max(float((weight * r2).sum() / weight.sum()) / 2.0, 0.09))


def _night_shift(xy: np.ndarray, sign: np.ndarray, current: EpochImages, partners: Sequence[EpochImages],
                 *, threshold: float, radius: float, max_days: float) -> tuple[np.ndarray, np.ndarray]:
    """Centroid offset (pixels) to each candidate's same-night detection elsewhere, and its significance.

    The S_corr peak of a point source has about sqrt(2) times the PSF's
    width, so its centroid error is about ``sqrt(2) sigma_psf / (S/N)``.
    """
    n = len(xy)
    shift, significance = np.full(n, np.nan), np.full(n, -np.inf)
    if n == 0:
        return shift, np.full(n, np.nan)
    here, peak_here = _centroids(current, xy, sign, 1.0)
    width_here = math.sqrt(2.0) * _psf_sigma(current.psf_difference)
    for epoch in partners:
        if not 0 < abs(current.mjd - epoch.mjd) <= max_days:
            continue
        there, peak_there = _centroids(epoch, xy, sign, radius)
        width_there = math.sqrt(2.0) * _psf_sigma(epoch.psf_difference)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.sqrt((width_here / peak_here) ** 2 + (width_there / peak_there) ** 2
                            + 2.0 * _REGISTRATION_PX**2)
            distance = np.hypot(*(there - here).T)
            sig = np.where(peak_there >= threshold, distance / error, np.nan)
        better = np.isfinite(sig) & (sig > significance)
        shift[better], significance[better] = distance[better], sig[better]
    return shift, np.where(np.isfinite(significance), significance, np.nan)


def _occupied(epoch: EpochImages, xy: np.ndarray, radius: float, threshold: float) -> np.ndarray:
    """Whether a detection sits within ``radius`` of each position (1.0, 0.0; nan: not measurable).

    A detection is a local maximum of ``|S_corr|`` beyond ``threshold``; the
    slope of a bright source next to the position does not count.
    """
    size = np.abs(_masked_score(epoch))
    peak, at, measurable = _disc_peak(size, xy, radius)
    around = np.nan_to_num(_windows(size, at, 1), nan=-np.inf)
    local = around.reshape(len(xy), -1).max(axis=1) <= peak
    return np.where(measurable, (peak >= threshold) & local, np.nan)


_FLUX_WEIGHT = 0.25  # weight of the flux mismatch against distance in a motion partner's cost


def _match_costs(xy: np.ndarray, sign: np.ndarray, flux: np.ndarray, pxy: np.ndarray, psign: np.ndarray,
                 pflux: np.ndarray, *, match_radius: float, max_pixels: float, max_ratio: float,
                 compare_flux: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cost of pairing each position with each detection (inf: not allowed), and their pixel distances.

    The cost adds the squared distance and flux mismatch, each relative to its
    largest allowed value, the mismatch weighted by :data:`_FLUX_WEIGHT`:
    chance partners are spread over the area (more of them farther out), and
    a genuine one has a similar flux, up to its colour when the two epochs are
    in different bands. Symmetric in its two sides.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mismatch = np.abs(np.log(np.abs(pflux[None, :]) / np.abs(flux[:, None])))
    if not compare_flux:  # no flux scale: distance alone
        mismatch = np.zeros_like(mismatch)
    dist = np.hypot(xy[:, None, 0] - pxy[None, :, 0], xy[:, None, 1] - pxy[None, :, 1])
    ok = ((dist > match_radius) & (dist <= max_pixels) & (psign[None, :] == sign[:, None])
          & (mismatch <= math.log(max_ratio)))
    cost = (dist / max_pixels) ** 2 + _FLUX_WEIGHT * (mismatch / math.log(max_ratio)) ** 2
    return np.where(ok, cost, np.inf), dist


def _motion(xy: np.ndarray, sign: np.ndarray, flux: np.ndarray, current: EpochImages,
            partners: Sequence[EpochImages], *, threshold: float, partner_threshold: float,
            match_radius: float, max_pixels: float, max_days: float, max_ratio: float, tries: int = 3,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each candidate's moving-object partner: distance, hours, whether mutual, number of possible ones.

    Distances are in pixels. A partner is a detection of the other epoch (passing the baseline's cuts)
    where nothing is detected now, while nothing is detected at the candidate
    in that epoch. Of the ``tries`` of lowest :func:`_match_costs`, the first
    mutual one is taken (seen from it, no other of this epoch's detections
    costs less than the candidate), else the lowest; mutual partners win over
    the other epochs' non-mutual ones. Unrelated cosmic rays, trail fragments
    and noise of the two epochs rarely pick each other.
    """
    n = len(xy)
    best, hours, mutual, rank = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.inf)
    count = np.zeros(n)
    if n == 0:
        return best, hours, mutual, count
    options = {"match_radius": match_radius, "max_pixels": max_pixels, "max_ratio": max_ratio,
               "compare_flux": bool(np.isfinite(current.microjansky_per_flux))}
    for epoch in partners:
        if not 0 < abs(current.mjd - epoch.mjd) <= max_days:
            continue
        # nothing at the candidate's spot in that epoch ...
        empty = _occupied(epoch, xy, match_radius, threshold) == 0
        if not empty.any():
            continue
        peaks = _point_sources(epoch, partner_threshold)
        if peaks.empty:
            continue
        pxy = peaks[["x", "y"]].to_numpy(float)
        # ... and nothing now at the partner's
        gone = _occupied(current, pxy, match_radius, threshold) != 1
        pxy, psign, pflux = (pxy[gone], peaks["sign"].to_numpy(float)[gone],
                             peaks["flux"].to_numpy(float)[gone])
        if not len(pxy):
            continue
        forward, dist = _match_costs(xy, sign, flux, pxy, psign, pflux, **options)
        forward[~empty] = np.inf
        count += np.isfinite(forward).sum(axis=1)
        found = _point_sources(current, partner_threshold)
        fxy, fsign, fflux = (found[["x", "y"]].to_numpy(float), found["sign"].to_numpy(float),
                             found["flux"].to_numpy(float))
        keep = _occupied(epoch, fxy, match_radius, threshold) == 0
        fxy, fsign, fflux = fxy[keep], fsign[keep], fflux[keep]
        order = np.argsort(forward, axis=1)[:, :tries]
        pick = order[:, 0]
        is_mutual = np.zeros(n, bool)
        for k in range(order.shape[1]):
            cand = np.flatnonzero(~is_mutual & np.isfinite(forward[np.arange(n), order[:, k]]))
            if not cand.size:
                break
            src = order[cand, k]
            back, _ = _match_costs(pxy[src], psign[src], pflux[src], fxy, fsign, fflux, **options)
            itself = np.hypot(fxy[None, :, 0] - xy[cand, None, 0], fxy[None, :, 1] - xy[cand, None, 1])
            back[itself <= match_radius] = np.inf
            rival = back.min(axis=1) if back.shape[1] else np.full(len(cand), np.inf)
            won = rival >= forward[cand, src]
            pick[cand[won]], is_mutual[cand[won]] = src[won], True
        lowest = forward[np.arange(n), pick]
        score = np.where(is_mutual, lowest, lowest + 10.0)  # costs are <= 1.25: mutual ones first
        better = np.isfinite(lowest) & (score < rank)
        rank[better] = score[better]
        best[better] = dist[np.arange(n), pick][better]
        hours[better] = abs(current.mjd - epoch.mjd) * 24.0
        mutual[better] = is_mutual[better].astype(float)
    return best, hours, mutual, count


# --------------------------------------------------------------------------- manifest entry points


def _pixel_scale(sample: Mapping[str, Any], pixel_scale: float | None) -> float:
    if pixel_scale is not None:
        return pixel_scale
    from astrid.surveys import get_survey

    return get_survey(sample.get("survey", "ztf")).pixel_scale


def epoch_context(
    manifest: Manifest,
    sample: Mapping[str, Any],
    candidates: pd.DataFrame | ArrayLike,
    *,
    causal: bool = True,
    threshold: float = 5.0,
    match_radius: float = 2.0,
    motion_radius: float = 100.0,
    motion_days: float = 0.5,
    motion_flux_ratio: float = 3.0,
    motion_threshold: float = 4.0,
    pixel_scale: float | None = None,
    epochs: MutableMapping[str, EpochImages] | None = None,
) -> pd.DataFrame:
    """Temporal context of one epoch's candidates from the other epochs of the same field.

    The light curve comes from the epochs in the sample's band; the moving-object
    partner is searched in every band's epochs within ``motion_days`` (a field's
    samples share one pixel grid, and an asteroid's position does not depend on
    the filter).

    Parameters
    ----------
    manifest : Manifest
        A multi-epoch dataset with the differencing products (every sample of
        the field needs ``field``, ``mjd``, ``score``, ``difference`` and
        ``psf_difference``).
    sample : dict
        The epoch the candidates come from.
    candidates : pandas.DataFrame or array_like
        Table with ``x``, ``y`` (pixels) or an ``(N, 2)`` array.
    causal : bool
        Look only at earlier epochs (what an alert stream knows); ``False``
        uses every other epoch of the field, later ones too (offline studies).
    threshold, match_radius, motion_radius, motion_days, motion_flux_ratio, motion_threshold : float
        As in :func:`context_features` (S_corr sigma, pixels, arcsec, days, ratio, sigma).
    pixel_scale : float, optional
        Arcsec per pixel; default the sample's survey preset.
    epochs : dict, optional
        Epochs already read, by sample id; those still needed are read and
        added. Passing one dict to the calls for a field's samples reads each
        epoch, and finds its point sources, once (:func:`kind_table` does).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CONTEXT_COLUMNS`, index of ``candidates``; rows without
        another epoch hold 0 epochs and NaN elsewhere.

    Raises
    ------
    ValueError
        On a sample without ``field`` or ``mjd``, bad positions or options.
    KeyError
        When a needed product is missing.
    """
    if not isinstance(causal, bool):
        msg = f"causal must be True or False, got {causal!r}"
        raise ValueError(msg)
    if not (isinstance(motion_days, int | float) and math.isfinite(motion_days) and motion_days > 0):
        msg = f"motion_days must be a positive number, got {motion_days!r}"
        raise ValueError(msg)
    same_band = _field_epochs(manifest, sample, causal=causal)
    same_night = _field_epochs(manifest, sample, causal=causal, within_days=motion_days)
    read = {} if epochs is None else epochs
    for s in (sample, *same_band, *same_night):
        if s["id"] not in read:
            read[s["id"]] = read_epoch(manifest, s)
    others = [read[s["id"]] for s in same_band]
    partners = [read[s["id"]] for s in same_night]
    return context_features(candidates, read[sample["id"]], others, partners=partners,
                            threshold=threshold,
                            match_radius=match_radius, motion_radius=motion_radius,
                            motion_days=motion_days, motion_flux_ratio=motion_flux_ratio,
                            motion_threshold=motion_threshold,
                            pixel_scale=_pixel_scale(sample, pixel_scale))


@dataclass
class ContextStamps:
    """Cutouts of the previous epoch around each candidate (:func:`context_stamps`).

    Attributes
    ----------
    difference, score : numpy.ndarray
        ``(N, size, size)`` D and S_corr of the previous epoch, NaN outside the
        image and everywhere when there is no previous epoch.
    dt_days : float
        Days from the previous epoch to this one (``nan`` without one).
    previous : str
        Sample id of the previous epoch (``""`` without one).
    """

    difference: np.ndarray
    score: np.ndarray
    dt_days: float
    previous: str


def context_stamps(
    manifest: Manifest,
    sample: Mapping[str, Any],
    candidates: pd.DataFrame | ArrayLike,
    *,
    size: int = 31,
) -> ContextStamps:
    """Return the previous epoch's difference and S_corr cutouts centred on each candidate.

    Parameters
    ----------
    manifest : Manifest
        A multi-epoch dataset with the differencing products.
    sample : dict
        The candidates' epoch.
    candidates : pandas.DataFrame or array_like
        Table with ``x``, ``y`` or an ``(N, 2)`` array.
    size : int
        Odd stamp side in pixels.

    Returns
    -------
    ContextStamps

    Raises
    ------
    ValueError
        On bad positions, a bad ``size`` or a sample without ``field``/``mjd``.
    """
    xy, _ = detect.candidate_positions(candidates)
    if int(size) != size or size < 1 or size % 2 == 0:
        msg = f"size must be a positive odd integer, got {size!r}"
        raise ValueError(msg)
    earlier = _field_epochs(manifest, sample, causal=True)
    if not earlier:
        empty = np.full((len(xy), int(size), int(size)), np.nan)
        return ContextStamps(empty, empty.copy(), math.nan, "")
    previous = earlier[-1]
    d = manifest.read(previous, "difference", dtype=np.float64)
    s = manifest.read(previous, "score", dtype=np.float64)
    stamps = detect.cutout_triplets(d, s, s, xy, size=int(size))  # third plane unused
    return ContextStamps(stamps[:, 0], stamps[:, 1], float(sample["mjd"]) - float(previous["mjd"]),
                         str(previous.get("id", "")))


# --------------------------------------------------------------------------- real alerts


def _signed_flux(entry: Mapping[str, Any]) -> tuple[float, float]:
    """Signed difference flux (microjansky) and S/N of one alert detection (nan without one or its sign)."""
    from astrid.alerts import difference_flux

    flux, error = difference_flux(entry)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flux, float(np.divide(flux, error)) if error else math.nan


def _arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in arcsec (haversine) between two positions in degrees."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0


def alert_context(record: Mapping[str, Any]) -> pd.Series:
    """Return the :data:`CONTEXT_COLUMNS` of one ZTF alert from its ``prv_candidates``.

    Only history strictly before the alert's ``jd`` is used. Entries with a
    ``magpsf`` are detections (signed by ``isdiffpos``); the others are upper
    limits (``diffmaglim``), counted as epochs without a detection whose
    forced flux is taken as 0. The "previous epoch" is the latest earlier
    entry in the alert's filter (``fid``), so colour does not enter the rates.
    ZTF gathers detections within 1.5 arcsec under one ``objectId``, so
    ``motion_distance``/``motion_rate`` here come from the offset to the latest
    earlier detection of the same object (about 0 for a static source); a
    moving object usually has no history at all, and ``ss_distance`` (extra
    column: ``ssdistnr``, arcsec to the nearest known solar-system body, NaN
    when none) names the known ones.

    Parameters
    ----------
    record : mapping
        One alert as read from Avro or Parquet (``candidate`` struct or
        flattened ``candidate.*`` columns, ``prv_candidates`` list or None).

    Returns
    -------
    pandas.Series
        :data:`CONTEXT_COLUMNS` plus ``ss_distance``, named by the ``candid``.

    Raises
    ------
    ValueError
        When the record has no candidate ``jd``/``magpsf`` or ``prv_candidates``
        is not a list of mappings.

    Examples
    --------
    >>> rec = {"candid": 3, "candidate": {"jd": 10.0, "fid": 1, "magpsf": 18.0, "sigmapsf": 0.1,
    ...        "isdiffpos": "t", "ra": 1.0, "dec": 2.0, "ssdistnr": -999.0},
    ...        "prv_candidates": [{"jd": 8.0, "fid": 1, "magpsf": 19.0, "sigmapsf": 0.1,
    ...                            "isdiffpos": "t", "ra": 1.0, "dec": 2.0, "candid": 2}]}
    >>> c = alert_context(rec)
    >>> int(c.n_prior_detections), float(c.days_since_first_detection), float(c.mag_rate)
    (1, 2.0, -0.5)
    """
    from astrid.alerts import candidate_fields, python_value

    if not isinstance(record, Mapping):
        msg = f"record must be a mapping (one alert), got {type(record).__name__}"
        raise ValueError(msg)
    cand = candidate_fields(record)
    jd = python_value(cand.get("jd"))
    if jd is None or python_value(cand.get("magpsf")) is None:
        msg = f"alert {record.get('candid')!r} has no candidate jd/magpsf"
        raise ValueError(msg)
    jd = float(jd)
    history = record.get("prv_candidates")
    history = [] if history is None else history
    if isinstance(history, str | bytes) or not isinstance(history, Iterable):
        msg = "prv_candidates must be a list of mappings"
        raise ValueError(msg)
    history = list(history)
    if not all(isinstance(p, Mapping) for p in history):
        msg = "prv_candidates must be a list of mappings"
        raise ValueError(msg)
    earlier = sorted((p for p in history if python_value(p.get("jd")) is not None and float(p["jd"]) < jd),
                     key=lambda p: float(p["jd"]))
    flux_now, _ = _signed_flux(cand)
    sign = math.copysign(1.0, flux_now)
    det = [(p, *_signed_flux(p)) for p in earlier if python_value(p.get("magpsf")) is not None]
    out = dict.fromkeys(CONTEXT_COLUMNS, math.nan)
    out["n_prior_epochs"] = float(len(earlier))
    out["n_prior_detections"] = float(len(det))
    out["persistence"] = len(det) / len(earlier) if earlier else math.nan
    out["n_opposite_sign"] = float(sum(1 for _, f, _ in det if math.copysign(1.0, f) != sign))
    if det:
        out["days_since_first_detection"] = jd - float(det[0][0]["jd"])
    fid = python_value(cand.get("fid"))
    same = [p for p in earlier if python_value(p.get("fid")) == fid]
    if same:
        prev = same[-1]
        dt = jd - float(prev["jd"])
        flux, snr = _signed_flux(prev)
        detected = math.isfinite(flux)
        out["prev_dt_days"] = dt
        out["prev_score"] = snr if detected else 0.0
        out["prev_flux"] = flux if detected else 0.0
        out["flux_rate"] = (flux_now - out["prev_flux"]) / dt if dt > 0 else math.nan
        if detected and math.copysign(1.0, flux) == sign and dt > 0:
            out["mag_rate"] = (float(cand["magpsf"]) - float(prev["magpsf"])) / dt
    magnitudes = np.abs([f for _, f, _ in det] + [flux_now])
    if magnitudes.size >= 2:
        out["flux_scatter"] = float(np.std(magnitudes) / np.mean(magnitudes))
    positions = [(p, f, snr) for p, f, snr in det
                 if python_value(p.get("ra")) is not None and python_value(p.get("dec")) is not None]
    if positions and cand.get("ra") is not None and cand.get("dec") is not None:
        ra, dec = float(cand["ra"]), float(cand["dec"])
        last = positions[-1][0]
        distance = _arcsec(float(last["ra"]), float(last["dec"]), ra, dec)
        out["motion_distance"] = distance
        hours = (jd - float(last["jd"])) * 24.0
        out["motion_rate"] = distance / hours if hours > 0 else math.nan
        out["night_shift"], out["night_shift_sigma"] = _alert_night_shift(cand, positions, ra, dec, jd)
    ss = python_value(cand.get("ssdistnr"))
    out["ss_distance"] = float(ss) if ss is not None and float(ss) >= 0 else math.nan
    return pd.Series(out, name=python_value(record.get("candid", cand.get("candid"))), dtype=float)


def _alert_night_shift(cand: Mapping[str, Any], positions: Sequence[tuple[Mapping[str, Any], float, float]],
                       ra: float, dec: float, jd: float, max_days: float = 0.5) -> tuple[float, float]:
    """``night_shift`` (arcsec) and ``night_shift_sigma`` of an alert from its same-night earlier detections.

    Centroid errors as for the images: ``sqrt(2) sigma_psf / (S/N)`` per
    detection (``sigma_psf`` from the alert's ``fwhm``, ZTF pixels, default
    2"), plus 0.1 px of registration each.
    """
    from astrid.alerts import python_value
    from astrid.surveys import get_survey

    scale = get_survey("ztf").pixel_scale
    fwhm = python_value(cand.get("fwhm"))
    fwhm_arcsec = float(fwhm) * scale if fwhm is not None and 0 < float(fwhm) < 20 else 2.0
    width = math.sqrt(2.0) * fwhm_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    _, snr_now = _signed_flux(cand)
    best = (-math.inf, math.nan)
    for entry, flux, snr in positions:
        same_sign = math.copysign(1.0, flux) == math.copysign(1.0, snr_now)
        if not (0 < jd - float(entry["jd"]) <= max_days and same_sign):
            continue
        distance = _arcsec(float(entry["ra"]), float(entry["dec"]), ra, dec)
        error = math.sqrt((width / abs(snr_now)) ** 2 + (width / abs(snr)) ** 2
                          + 2.0 * (_REGISTRATION_PX * scale) ** 2)
        if math.isfinite(error) and distance / error > best[0]:
            best = (distance / error, distance)
    return (best[1], best[0]) if math.isfinite(best[0]) else (math.nan, math.nan)


def alert_contexts(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read alert files and return :func:`alert_context` of every decodable alert.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Avro/Parquet alert files or folders (as :func:`astrid.alerts.read_alerts`).

    Returns
    -------
    pandas.DataFrame
        One row per alert, index ``candid``, columns ``objectId``,
        :data:`CONTEXT_COLUMNS` and ``ss_distance``; alerts without a
        candidate ``jd``/``magpsf`` and unreadable files are left out (logged).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`astrid.alerts.read_alerts` for missing paths.
    """
    from astrid.alerts import alert_files, records_reader

    rows = []
    for path in alert_files(paths):
        reader = records_reader(path)
        if reader is None:
            log.warning("%s is neither Avro nor Parquet; skipped", path)
            continue
        try:
            for record in reader(path):
                try:
                    row = alert_context(record)
                except ValueError as err:
                    log.info("%s: %s", path, err)
                    continue
                row = pd.concat([pd.Series({"objectId": record.get("objectId")}), row]).rename(row.name)
                rows.append(row)
        except Exception as err:  # noqa: BLE001 - damaged files fail in fastavro/pyarrow with many types
            log.warning("%s: stopped reading: %s: %s", path, type(err).__name__, err)
    frame = pd.DataFrame(rows)
    frame.index.name = "candid"
    return frame[~frame.index.duplicated()] if len(frame) else frame


# --------------------------------------------------------------------------- ablation


def kind_table(
    manifest: Manifest,
    images: Sequence[Any],
    *,
    method: str = "baseline",
    causal: bool = True,
    bands: Sequence[str] | None = None,
    **context_options: Any,
) -> pd.DataFrame:
    """Candidates of the study with their true kind, hand features, temporal context and colour.

    Parameters
    ----------
    manifest : Manifest
        The multi-epoch dataset the images come from.
    images : sequence of astrid.evaluate.ImageCandidates
        Output of :func:`astrid.evaluate.collect_candidates`.
    method : {"baseline", "unet"}
        Which detector's candidates to use.
    causal : bool
        See :func:`epoch_context`.
    bands : sequence of str, optional
        Also measure each candidate in these bands of the same night
        (:func:`astrid.colour.colour_features`; the dataset needs them).
    **context_options
        Options of :func:`epoch_context` (``threshold``, ``motion_radius``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per candidate matched as the study matches them
        (:mod:`astrid.metrics`): ``sample``, ``field``, ``epoch``,
        ``split``, ``band``, ``x``, ``y``, ``kind`` (true kind;
        ``background`` when it matches nothing), ``object_id`` (truth object,
        ``""`` when none), the columns of :data:`astrid.detect.FEATURE_COLUMNS`
        (and of :data:`astrid.detect.UNET_COLUMNS` where the candidates carry
        them: the baseline's, collected with a model)
        and :data:`CONTEXT_COLUMNS`, and with ``bands`` those of
        :func:`astrid.colour.colour_columns`.
        Candidates on ambiguous (faint) or unusable truth are left out, as in
        the study's training table.

    Raises
    ------
    ValueError
        On an unknown ``method``.
    """
    from astrid.colour import colour_features
    from astrid.evaluate import match_candidates  # imported here: evaluate sits above this module

    if method not in ("baseline", "unet"):
        msg = f"method must be 'baseline' or 'unet', got {method!r}"
        raise ValueError(msg)
    frames = []
    field, epochs = None, {}  # the epochs of one field, read once (images come field by field)
    for image in images:
        if image.sample.get("field") != field:
            field, epochs = image.sample.get("field"), {}
        cands = image.baseline if method == "baseline" else image.unet
        if cands.empty:
            continue
        table = match_candidates(image, method, "peak_score" if method == "baseline" else "score")
        matched = table.truth_index >= 0
        ignored = np.zeros(len(cands), bool)
        ignored[matched] = table.truth_ignore[table.truth_index[matched]]
        kinds = np.full(len(cands), "background", dtype=object)
        kinds[matched] = table.truth_kind[table.truth_index[matched]]
        objects = np.full(len(cands), "", dtype=object)
        if "object_id" in image.truth:
            objects[matched] = image.truth["object_id"].to_numpy(str)[table.truth_index[matched]]
        context = epoch_context(manifest, image.sample, cands, causal=causal, epochs=epochs,
                                **context_options)
        sample = image.sample
        parts = [
            pd.DataFrame({**{key: sample.get(key) for key in ("id", "field", "epoch", "split", "band")},
                          "x": cands["x"].to_numpy(float), "y": cands["y"].to_numpy(float), "kind": kinds,
                          "object_id": objects}).rename(columns={"id": "sample"}),
            cands[[*detect.FEATURE_COLUMNS, *(c for c in detect.UNET_COLUMNS if c in cands)]
                  ].reset_index(drop=True),
            context.reset_index(drop=True),
        ]
        if bands is not None:
            parts.append(colour_features(manifest, sample, cands, bands=bands).reset_index(drop=True))
        frame = pd.concat(parts, axis=1)
        frames.append(frame[~ignored])
    if not frames:
        msg = "no candidates in images"
        raise ValueError(msg)
    return pd.concat(frames, ignore_index=True)

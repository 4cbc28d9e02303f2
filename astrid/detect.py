"""Candidates: from U-Net probability maps, from ZOGY S_corr, and their hand features.

Three producers of candidate tables (pandas DataFrames, one row per
candidate, positions as 0-based pixel ``x``, ``y`` like the truth catalog):

* :func:`candidates_from_probabilities` - connected regions of the U-Net's
  calibrated "not background" probability, real and bogus pixels segmented
  apart (columns :data:`PROBABILITY_COLUMNS` plus one ``p_<class>`` column per
  non-background class); keep :func:`segment_probabilities`' label image for
  masks (:func:`candidate_masks`) and mask matching in :mod:`astrid.metrics`;
* :func:`candidates_from_score` - the classical baseline: positive and
  negative peaks of S_corr beyond a significance threshold with shape cuts on
  the difference image (columns :data:`SCORE_COLUMNS`). S_corr must be unit
  variance: feed ZOGY background-subtracted images, or the 5-sigma tail fills
  with false positives;
* :func:`candidate_features` - hand features of any candidate table for the
  traditional classifier in :mod:`astrid.classic` (columns
  :data:`FEATURE_COLUMNS`);
* :func:`forced_photometry` - the same PSF fit at given sub-pixel positions
  of any difference image (e.g. another band's, for colours);
* :func:`probabilities_at` - the U-Net's class probabilities at any
  candidate (columns :data:`UNET_COLUMNS`): the network's view of its shape,
  e.g. for the kind classifier of the baseline's candidates.

Shape measures share one definition (:func:`candidates_from_score` documents
it), so the baseline's cuts and the classifier's features agree. Stamps for
inspection come from :func:`cutout_triplet`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage

from astrid.classes import CLASS_NAMES, TRANSIENT_KINDS

__all__ = [
    "FEATURE_COLUMNS",
    "PROBABILITY_COLUMNS",
    "SCORE_COLUMNS",
    "UNET_COLUMNS",
    "candidate_features",
    "candidate_masks",
    "candidate_positions",
    "candidates_from_probabilities",
    "candidates_from_score",
    "cutout_triplet",
    "cutout_triplets",
    "find_stars",
    "forced_photometry",
    "probabilities_at",
    "segment_probabilities",
]

PROBABILITY_COLUMNS: tuple[str, ...] = (
    "label",
    "x",
    "y",
    "kind",
    "score",
    "real_score",
    "detection_score",
    "uncertainty",
    "area",
    "bbox_xmin",
    "bbox_xmax",
    "bbox_ymin",
    "bbox_ymax",
)
"""Columns of :func:`candidates_from_probabilities`, before the ``p_<class>`` columns."""

SCORE_COLUMNS: tuple[str, ...] = (
    "x",
    "y",
    "x_peak",
    "y_peak",
    "sign",
    "peak_score",
    "psf_flux",
    "sharpness",
    "roundness",
    "elongation",
    "dipole_ratio",
    "dipole_score",
    "passes_cuts",
    "score",
)
"""Columns of :func:`candidates_from_score`."""

FEATURE_COLUMNS: tuple[str, ...] = (
    "peak_score",
    "sign",
    "psf_snr",
    "psf_chi2",
    "sharpness",
    "roundness",
    "elongation",
    "dipole_ratio",
    "star_distance",
    "local_noise",
    "reference_snr",
    "science_snr",
)
"""Columns of :func:`candidate_features`."""

UNET_COLUMNS: tuple[str, ...] = tuple(f"unet_{name}" for name in CLASS_NAMES)
"""Columns of :func:`probabilities_at`: one per class of :data:`astrid.classes.CLASS_NAMES`."""

_MOMENT_CLIP = 1.0  # moments use D above this many sigma, so noise does not round them
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# --------------------------------------------------------------------------- validation


def _image(values: ArrayLike, name: str, *, allow_nan: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        msg = f"{name} must be a non-empty 2-D image, got shape {arr.shape}"
        raise ValueError(msg)
    if np.any(np.isinf(arr)):
        msg = f"{name} contains infinite values"
        raise ValueError(msg)
    if not allow_nan and np.any(np.isnan(arr)):
        msg = f"{name} contains NaN"
        raise ValueError(msg)
    return arr


def _same_shape(ref: np.ndarray, **images: np.ndarray | None) -> None:
    for name, image in images.items():
        if image is not None and image.shape != ref.shape:
            msg = f"{name} has shape {image.shape}, expected {ref.shape}"
            raise ValueError(msg)


def _noise_map(noise: float | ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if noise is None:
        return None
    arr = np.asarray(noise, dtype=float)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        msg = f"noise must be a scalar or an image of shape {shape}, got {arr.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr) & (arr > 0)):
        msg = "noise must be positive and finite"
        raise ValueError(msg)
    return arr


# --------------------------------------------------------------------------- stamps


def _window(image: np.ndarray, xc: int, yc: int, half: int) -> np.ndarray:
    """``(2 half + 1)`` square window centred on pixel ``(xc, yc)``, NaN outside."""
    out = np.full((2 * half + 1, 2 * half + 1), np.nan)
    h, w = image.shape
    y0, x0 = yc - half, xc - half
    sy0, sy1 = max(y0, 0), min(yc + half + 1, h)
    sx0, sx1 = max(x0, 0), min(xc + half + 1, w)
    if sy0 < sy1 and sx0 < sx1:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def cutout_triplet(
    science: ArrayLike,
    reference: ArrayLike,
    difference: ArrayLike,
    x: float,
    y: float,
    *,
    size: int = 31,
) -> np.ndarray:
    """Return science, reference and difference stamps centred on one position.

    Parameters
    ----------
    science, reference, difference : array_like, shape (H, W)
        The three images on the same pixel grid.
    x, y : float
        Centre in pixels; the stamp centre is the nearest pixel.
    size : int
        Odd stamp side in pixels.

    Returns
    -------
    numpy.ndarray
        ``(3, size, size)`` float64, NaN where the stamp leaves the image.

    Raises
    ------
    ValueError
        If the images differ in shape, ``size`` is not a positive odd integer,
        or the position is not finite.

    Examples
    --------
    >>> img = np.arange(16.0).reshape(4, 4)
    >>> cutout_triplet(img, img, img, 0, 0, size=3)[0]
    array([[nan, nan, nan],
           [nan,  0.,  1.],
           [nan,  4.,  5.]])
    """
    return cutout_triplets(science, reference, difference, [[x, y]], size=size)[0]


def cutout_triplets(
    science: ArrayLike,
    reference: ArrayLike,
    difference: ArrayLike,
    xy: ArrayLike,
    *,
    size: int = 31,
) -> np.ndarray:
    """Return :func:`cutout_triplet` stamps for many positions.

    Parameters
    ----------
    science, reference, difference : array_like, shape (H, W)
        The three images on the same pixel grid (NaNs allowed).
    xy : array_like, shape (N, 2)
        Centres ``(x, y)``, e.g. ``table[["x", "y"]]``.
    size : int
        Odd stamp side in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N, 3, size, size)`` float64, NaN-padded at the edges.

    Raises
    ------
    ValueError
        As :func:`cutout_triplet`.

    Examples
    --------
    >>> img = np.ones((8, 8))
    >>> cutout_triplets(img, img, img, [[1, 1], [6, 6]], size=5).shape
    (2, 3, 5, 5)
    """
    sci = _image(science, "science", allow_nan=True)
    ref = _image(reference, "reference", allow_nan=True)
    diff = _image(difference, "difference", allow_nan=True)
    _same_shape(sci, reference=ref, difference=diff)
    if int(size) != size or size < 1 or size % 2 == 0:
        msg = f"size must be a positive odd integer, got {size!r}"
        raise ValueError(msg)
    pos = np.asarray(xy, dtype=float).reshape(-1, 2) if np.size(xy) else np.zeros((0, 2))
    if not np.all(np.isfinite(pos)):
        msg = "xy contains NaN or infinite positions"
        raise ValueError(msg)
    half = int(size) // 2
    centres = np.floor(pos + 0.5).astype(int)
    out = np.empty((len(pos), 3, int(size), int(size)))
    for i, (xc, yc) in enumerate(centres):
        for j, image in enumerate((sci, ref, diff)):
            out[i, j] = _window(image, int(xc), int(yc), half)
    return out


# --------------------------------------------------------------------------- U-Net candidates


def _probability_cube(probabilities: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    cube = np.asarray(probabilities, dtype=float)
    if cube.ndim != 3 or cube.shape[1] == 0 or cube.shape[2] == 0:
        msg = f"probabilities must have shape (C, H, W), got {cube.shape}"
        raise ValueError(msg)
    if cube.shape[0] != len(classes):
        msg = f"probabilities has {cube.shape[0]} channels for {len(classes)} classes"
        raise ValueError(msg)
    if "background" not in classes:
        msg = "classes must contain 'background'"
        raise ValueError(msg)
    if not np.all(np.isfinite(cube)):
        msg = "probabilities contains NaN or infinite values"
        raise ValueError(msg)
    if np.any((cube < -1e-6) | (cube > 1 + 1e-6)):
        msg = "probabilities must lie in [0, 1]"
        raise ValueError(msg)
    return np.clip(cube, 0.0, 1.0)


def segment_probabilities(
    probabilities: ArrayLike,
    *,
    threshold: float = 0.5,
    min_pixels: int = 3,
    classes: Sequence[str] = CLASS_NAMES,
    transient_kinds: Sequence[str] | None = TRANSIENT_KINDS,
) -> np.ndarray:
    """Return the segmentation image of the "not background" probability.

    Regions are 8-connected groups of at least ``min_pixels`` pixels where
    ``p_fg = 1 - p_background`` is strictly above ``threshold``
    (:func:`photutils.segmentation.detect_sources`, no deblending). With
    ``transient_kinds``, "real" pixels (``p_transient >= p_fg / 2``) and
    "bogus" pixels are segmented apart, so that a transient touching an
    artifact (a supernova on a satellite trail) stays a candidate of its own;
    kinds within each group (supernova vs variable) never split a region.

    Parameters
    ----------
    probabilities : array_like, shape (C, H, W)
        Calibrated class probabilities, channel order ``classes``.
    threshold : float
        Probability threshold in [0, 1).
    min_pixels : int
        Smallest region kept, in pixels.
    classes : sequence of str
        Channel names; must contain ``"background"``.
    transient_kinds : sequence of str or None
        Channels of genuine transients; ``None`` does not split regions.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 label image, 0 = no candidate, labels 1..N.

    Raises
    ------
    ValueError
        On a bad shape, NaNs, values outside [0, 1], unknown transient kinds,
        or bad options.

    Examples
    --------
    >>> p = np.zeros((3, 8, 8)); p[0] = 1.0
    >>> p[:, 2:5, 2:5] = [[[0.1]], [[0.9]], [[0.0]]]
    >>> p[:, 2:5, 5:7] = [[[0.1]], [[0.0]], [[0.9]]]  # an artifact touching it
    >>> seg = segment_probabilities(p, classes=("background", "supernova", "dipole"),
    ...                             transient_kinds=("supernova",))
    >>> seg[3].tolist()
    [0, 0, 1, 1, 1, 2, 2, 0]
    """
    classes = [str(c) for c in classes]
    cube = _probability_cube(probabilities, classes)
    if not 0 <= threshold < 1:
        msg = f"threshold must lie in [0, 1), got {threshold!r}"
        raise ValueError(msg)
    if int(min_pixels) != min_pixels or min_pixels < 1:
        msg = f"min_pixels must be a positive integer, got {min_pixels!r}"
        raise ValueError(msg)
    from photutils.segmentation import detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning

    foreground = 1.0 - cube[classes.index("background")]
    if transient_kinds is None:
        groups = [None]
    else:
        real = _transient_probability(cube, classes, transient_kinds) >= 0.5 * foreground
        groups = [~real, real]
    out = np.zeros(foreground.shape, dtype=np.int32)
    for excluded in groups:
        if excluded is not None and excluded.all():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            segm = detect_sources(
                foreground, threshold, n_pixels=int(min_pixels), connectivity=8, mask=excluded
            )
        if segm is not None:
            data = np.asarray(segm.data, dtype=np.int32)
            out = np.where(data > 0, data + out.max(), out)
    return _relabel(out)


def _relabel(segmentation: np.ndarray) -> np.ndarray:
    """Consecutive labels 1..N in order of first appearance in raster order."""
    flat = segmentation.ravel()
    ids, first = np.unique(flat[flat > 0], return_index=True)
    order = ids[np.argsort(first)]
    lookup = np.zeros(int(segmentation.max()) + 1, dtype=np.int32)
    lookup[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lookup[segmentation]


def _transient_probability(
    cube: np.ndarray, classes: Sequence[str], transient_kinds: Sequence[str]
) -> np.ndarray:
    unknown = [k for k in transient_kinds if k not in classes]
    if unknown:
        msg = f"transient_kinds {unknown} are not in classes"
        raise ValueError(msg)
    return cube[[list(classes).index(k) for k in transient_kinds]].sum(axis=0)


def candidate_masks(segmentation: ArrayLike, labels: ArrayLike | None = None) -> np.ndarray:
    """Return one boolean mask per candidate label.

    Parameters
    ----------
    segmentation : array_like of int, shape (H, W)
        Label image from :func:`segment_probabilities`.
    labels : array_like of int, optional
        Labels to return, e.g. ``table["label"]``; default all, in order.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` bool.

    Raises
    ------
    ValueError
        If ``segmentation`` is not a 2-D integer image.

    Examples
    --------
    >>> seg = np.array([[0, 1], [2, 2]])
    >>> candidate_masks(seg, [2]).astype(int).tolist()
    [[[0, 0], [1, 1]]]
    """
    seg = np.asarray(segmentation)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        msg = f"segmentation must be a 2-D integer image, got {seg.dtype} {seg.shape}"
        raise ValueError(msg)
    ids = np.unique(seg[seg > 0]) if labels is None else np.asarray(labels, dtype=np.int64)
    return seg[None, :, :] == ids.reshape(-1, 1, 1)


def candidates_from_probabilities(
    probabilities: ArrayLike,
    *,
    uncertainty: ArrayLike | None = None,
    segmentation: ArrayLike | None = None,
    threshold: float = 0.5,
    min_pixels: int = 3,
    classes: Sequence[str] = CLASS_NAMES,
    transient_kinds: Sequence[str] = TRANSIENT_KINDS,
    score_method: str = "max",
) -> pd.DataFrame:
    """Turn a calibrated U-Net probability map into a candidate table.

    Each region of :func:`segment_probabilities` becomes one row. Per pixel,
    ``p_transient`` is the summed probability of ``transient_kinds`` and
    ``p_fg = 1 - p_background``.

    Parameters
    ----------
    probabilities : array_like, shape (C, H, W)
        Calibrated class probabilities (channels in ``classes`` order).
    uncertainty : array_like, shape (H, W), optional
        Per-pixel uncertainty (e.g. ``Prediction.uncertainty`` of
        :mod:`astrid.model`), averaged per region.
    segmentation : array_like of int, shape (H, W), optional
        Precomputed label image (keep it for masks and mask matching);
        computed by :func:`segment_probabilities` with ``threshold``,
        ``min_pixels`` and ``transient_kinds`` when omitted.
    threshold, min_pixels : float, int
        Segmentation options, see :func:`segment_probabilities`.
    classes : sequence of str
        Channel names; must contain ``"background"``.
    transient_kinds : sequence of str
        Channels that are genuine transients.
    score_method : {"max", "mean"}
        How ``score`` reduces ``p_transient`` over the region: the peak
        (default; edge pixels near the threshold do not dilute it) or the mean.

    Returns
    -------
    pandas.DataFrame
        One row per region, in label order, with :data:`PROBABILITY_COLUMNS`:
        ``label`` (id in the segmentation image), ``x``, ``y`` (centroid
        weighted by ``p_fg``), ``kind`` (argmax of the region-mean class
        probabilities, background excluded), ``score`` (``p_transient`` reduced
        by ``score_method``: the probability of a genuine transient),
        ``real_score`` (region mean of ``p_transient / p_fg``: real vs bogus
        given that something is there), ``detection_score`` (max ``p_fg``),
        ``uncertainty`` (region mean, NaN without a map), ``area`` (pixels),
        ``bbox_xmin``, ``bbox_xmax``, ``bbox_ymin``, ``bbox_ymax`` (inclusive);
        then ``p_<class>``: region-mean probability of every non-background
        class.

    Raises
    ------
    ValueError
        On bad shapes, NaNs, probabilities outside [0, 1], unknown transient
        kinds or an unknown ``score_method``.

    Examples
    --------
    >>> p = np.zeros((3, 12, 12)); p[0] = 1.0
    >>> p[:, 2:5, 2:5] = [[[0.1]], [[0.8]], [[0.1]]]
    >>> t = candidates_from_probabilities(p, classes=("background", "supernova", "dipole"),
    ...                                   transient_kinds=("supernova",))
    >>> t[["x", "y", "kind", "score", "area"]].to_dict("records")
    [{'x': 3.0, 'y': 3.0, 'kind': 'supernova', 'score': 0.8, 'area': 9}]
    """
    classes = [str(c) for c in classes]
    cube = _probability_cube(probabilities, classes)
    shape = cube.shape[1:]
    p_tr = _transient_probability(cube, classes, transient_kinds)
    if score_method not in ("max", "mean"):
        msg = f"score_method must be 'max' or 'mean', got {score_method!r}"
        raise ValueError(msg)
    unc = None if uncertainty is None else _image(uncertainty, "uncertainty")
    _same_shape(cube[0], uncertainty=unc)
    if segmentation is None:
        seg = segment_probabilities(
            cube,
            threshold=threshold,
            min_pixels=min_pixels,
            classes=classes,
            transient_kinds=transient_kinds,
        )
    else:
        seg = np.asarray(segmentation)
        if seg.shape != shape or not np.issubdtype(seg.dtype, np.integer):
            msg = f"segmentation must be an integer image of shape {shape}, got {seg.dtype} {seg.shape}"
            raise ValueError(msg)

    bg = classes.index("background")
    others = [i for i in range(len(classes)) if i != bg]
    p_fg = 1.0 - cube[bg]
    labels = np.unique(seg[seg > 0])
    columns = [*PROBABILITY_COLUMNS, *(f"p_{classes[i]}" for i in others)]
    if labels.size == 0:
        return _empty_table(columns, {"kind": object, "label": np.int64, "area": np.int64})

    yy, xx = np.indices(shape)
    area = ndimage.sum_labels(np.ones(shape), seg, labels)
    weight = ndimage.sum_labels(p_fg, seg, labels)
    safe = np.where(weight > 0, weight, 1.0)
    x = np.where(weight > 0, ndimage.sum_labels(p_fg * xx, seg, labels) / safe, 0.0)
    y = np.where(weight > 0, ndimage.sum_labels(p_fg * yy, seg, labels) / safe, 0.0)
    fallback = weight <= 0
    if fallback.any():
        x[fallback] = ndimage.mean(xx, seg, labels[fallback])
        y[fallback] = ndimage.mean(yy, seg, labels[fallback])
    reduce = ndimage.maximum if score_method == "max" else ndimage.mean
    means = np.stack([ndimage.mean(cube[i], seg, labels) for i in others], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(p_fg > 0, p_tr / p_fg, 0.0)
    boxes = ndimage.find_objects(seg)
    table = pd.DataFrame(
        {
            "label": labels.astype(np.int64),
            "x": x,
            "y": y,
            "kind": [classes[others[i]] for i in np.argmax(means, axis=1)],
            "score": np.asarray(reduce(p_tr, seg, labels), dtype=float),
            "real_score": np.asarray(ndimage.mean(ratio, seg, labels), dtype=float),
            "detection_score": np.asarray(ndimage.maximum(p_fg, seg, labels), dtype=float),
            "uncertainty": (
                np.full(labels.size, np.nan)
                if unc is None
                else np.asarray(ndimage.mean(unc, seg, labels), dtype=float)
            ),
            "area": area.astype(np.int64),
            "bbox_xmin": [boxes[k - 1][1].start for k in labels],
            "bbox_xmax": [boxes[k - 1][1].stop - 1 for k in labels],
            "bbox_ymin": [boxes[k - 1][0].start for k in labels],
            "bbox_ymax": [boxes[k - 1][0].stop - 1 for k in labels],
        }
    )
    for j, i in enumerate(others):
        table[f"p_{classes[i]}"] = means[:, j]
    return table


def _empty_table(columns: Sequence[str], dtypes: dict[str, type]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, float)) for c in columns})


# --------------------------------------------------------------------------- shape measures


@dataclass(frozen=True)
class _Kernel:
    """A normalised PSF stamp and the numbers the shape measures need."""

    psf: np.ndarray
    half: int
    peak: float
    sigma: float
    radius: float
    window: int

    @classmethod
    def build(cls, psf: ArrayLike | None, fwhm: float, radius: float | None) -> _Kernel:
        if psf is None:
            if not (np.isfinite(fwhm) and fwhm > 0):
                msg = f"fwhm must be positive, got {fwhm!r}"
                raise ValueError(msg)
            sigma = fwhm / _FWHM_PER_SIGMA
            half = max(1, math.ceil(3 * sigma))
            yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
            stamp = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        else:
            stamp = _image(psf, "psf")
            if stamp.shape[0] % 2 == 0 or stamp.shape[1] % 2 == 0:
                msg = f"psf must be a centred stamp with odd sides, got {stamp.shape}"
                raise ValueError(msg)
            if not stamp.sum() > 0:
                msg = "psf must have a positive sum"
                raise ValueError(msg)
            half = max(stamp.shape) // 2
            pad_y, pad_x = half - stamp.shape[0] // 2, half - stamp.shape[1] // 2
            stamp = np.pad(stamp, ((pad_y, pad_y), (pad_x, pad_x)))
        stamp = stamp / stamp.sum()
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        w = np.clip(stamp, 0, None)
        sigma = math.sqrt(max(float(np.sum(w * (xx**2 + yy**2)) / w.sum()) / 2, 0.09))
        if radius is None:
            radius = max(2.0, 2 * _FWHM_PER_SIGMA * sigma)
        elif not (np.isfinite(radius) and radius > 0):
            msg = f"aperture_radius must be positive, got {radius!r}"
            raise ValueError(msg)
        window = max(half, math.ceil(2 * radius), math.ceil(6 * sigma), 2)
        return cls(stamp, half, float(stamp[half, half]), sigma, float(radius), window)

    def measure(
        self, d: np.ndarray | None, s: np.ndarray, noise: np.ndarray | None
    ) -> dict[str, float]:
        """Shape measures on windows ``d`` (difference) and ``s`` (score) of side 2 window + 1."""
        c = self.window
        yy, xx = np.mgrid[-c : c + 1, -c : c + 1]
        r = np.hypot(xx, yy)
        out: dict[str, float] = {}
        # dipole test and peak on S_corr: the negative lobe's significance over the positive peak
        aperture = r <= self.radius
        peak = _nan_reduce(np.max, s[c - 1 : c + 2, c - 1 : c + 2])
        neg = max(0.0, -_nan_reduce(np.min, s[aperture], default=0.0))
        out["peak_score"] = peak
        out["dipole_score"] = neg
        out["dipole_ratio"] = neg / max(peak, 1.0)
        if d is None:
            for key in ("psf_flux", "psf_snr", "psf_chi2", "sharpness", "local_noise"):
                out[key] = math.nan
            out["roundness"], out["elongation"] = math.nan, math.nan
            return out
        annulus = d[(r > self.radius) & (r <= 2 * self.radius)]
        annulus = annulus[np.isfinite(annulus)]
        local = 1.4826 * float(np.median(np.abs(annulus - np.median(annulus)))) if annulus.size else 0.0
        out["local_noise"] = local if annulus.size else math.nan
        if not local > 0:  # a constant or empty annulus: any positive scale keeps the fit defined
            local = max(_nan_reduce(np.max, np.abs(d), default=0.0) * 1e-6, 1e-30)
        # PSF fit at the pixel: least-squares flux of the unit-sum PSF
        k = self.half
        inner = d[c - k : c + k + 1, c - k : c + k + 1]
        sig = (
            np.full(inner.shape, local)
            if noise is None
            else noise[c - k : c + k + 1, c - k : c + k + 1]
        )
        valid = np.isfinite(inner) & np.isfinite(sig) & (sig > 0)
        p = self.psf[valid]
        sumsq = float(np.sum(p**2))
        sigma_pix = float(np.median(sig[valid])) if valid.any() else math.nan
        if valid.sum() > 1 and sumsq > 0:
            flux = float(np.sum(inner[valid] * p) / sumsq)
            resid = (inner[valid] - flux * p) / sig[valid]
            out["psf_flux"] = flux
            out["psf_snr"] = flux * math.sqrt(sumsq) / sigma_pix
            out["psf_chi2"] = float(np.sum(resid**2) / (valid.sum() - 1))
        else:
            out["psf_flux"] = out["psf_snr"] = out["psf_chi2"] = math.nan
        # DAOFIND-like sharpness: centre minus mean of the 8 neighbours, over the fitted
        # PSF amplitude (floored at its 1-sigma error so that faint fits stay bounded)
        sig_level = _MOMENT_CLIP * sigma_pix if np.isfinite(sigma_pix) else 0.0
        centre = d[c, c]
        ring = d[c - 1 : c + 2, c - 1 : c + 2].copy()
        ring[1, 1] = np.nan
        amp = out["psf_flux"] * self.peak
        amp_err = sigma_pix * self.peak / math.sqrt(sumsq) if sumsq > 0 else 0.0
        denom = max(amp, amp_err) if np.isfinite(amp) else math.nan
        ring_mean = _nan_reduce(np.mean, ring)
        out["sharpness"] = (
            float((centre - ring_mean) / denom)
            if np.isfinite(centre) and np.isfinite(ring_mean) and denom > 0
            else math.nan
        )
        # second moments of D above 1 sigma under a Gaussian window of twice the PSF sigma
        weight = np.nan_to_num(np.clip(d - sig_level, 0, None)) * np.exp(
            -(r**2) / (8 * self.sigma**2)
        )
        total = float(weight.sum())
        if total > 0:
            mx, my = float(np.sum(weight * xx) / total), float(np.sum(weight * yy) / total)
            mxx = float(np.sum(weight * (xx - mx) ** 2) / total)
            myy = float(np.sum(weight * (yy - my) ** 2) / total)
            mxy = float(np.sum(weight * (xx - mx) * (yy - my)) / total)
            half_sum, half_diff = (mxx + myy) / 2, math.hypot((mxx - myy) / 2, mxy)
            major = half_sum + half_diff
            minor = max(half_sum - half_diff, 1e-3 * major)
            axis_ratio = math.sqrt(minor / major) if major > 0 else 1.0
            out["roundness"] = 1.0 - axis_ratio
            out["elongation"] = 1.0 / max(axis_ratio, 1e-6)
        else:
            out["roundness"], out["elongation"] = 0.0, 1.0
        return out

    def expected_sharpness(self) -> tuple[float, float]:
        """Noise-free sharpness of a point source and of a single hot pixel."""
        c = self.window
        star = np.zeros((2 * c + 1, 2 * c + 1))
        star[c - self.half : c + self.half + 1, c - self.half : c + self.half + 1] = self.psf
        delta = np.zeros_like(star)
        delta[c, c] = 1.0
        ones = np.ones_like(star)
        values = []
        for image in (star, delta):
            values.append(self.measure(image, np.zeros_like(image), ones * 1e-12)["sharpness"])
        return values[0], values[1]


def _nan_reduce(
    func: Callable[[np.ndarray], Any], values: np.ndarray, *, default: float = math.nan
) -> float:
    """``func`` over the finite entries of ``values``, ``default`` when there are none."""
    finite = values[np.isfinite(values)]
    return float(func(finite)) if finite.size else default


def _peak_centroid(score: np.ndarray, xp: int, yp: int) -> tuple[float, float]:
    win = np.nan_to_num(np.clip(_window(score, xp, yp, 1), 0, None))
    total = win.sum()
    if total <= 0:
        return float(xp), float(yp)
    yy, xx = np.mgrid[-1:2, -1:2]
    return float(xp + np.sum(win * xx) / total), float(yp + np.sum(win * yy) / total)


def candidates_from_score(
    score: ArrayLike,
    *,
    difference: ArrayLike | None = None,
    psf: ArrayLike | None = None,
    fwhm: float = 3.0,
    noise: float | ArrayLike | None = None,
    mask: ArrayLike | None = None,
    threshold: float = 5.0,
    box_size: int = 5,
    polarity: str = "both",
    aperture_radius: float | None = None,
    max_sharpness: float | None = None,
    max_elongation: float = 1.5,
    max_dipole_ratio: float = 0.3,
    min_dipole_score: float = 3.0,
) -> pd.DataFrame:
    """Classical baseline: significant peaks of ZOGY S_corr with shape cuts.

    Peaks are local maxima of ``score`` in ``box_size`` boxes strictly above
    ``threshold`` (:func:`photutils.detection.find_peaks`) and, with
    ``polarity="both"``, local minima below ``-threshold``: a variable star
    fainter than in the reference is a genuine negative transient. A negative
    peak is measured on ``-D`` and ``-S_corr``, so every measure below reads
    the same for both signs. Shape measures, with P the unit-sum PSF of the
    difference image and ``R = aperture_radius`` (default 2 FWHM):

    * ``sharpness`` (DAOFIND-like): ``(D[peak] - mean of its 8 neighbours) / A``
      with ``A`` the least-squares PSF amplitude at the peak (floored at its
      1-sigma error). About ``1 - P[nbr]/P[0]`` (0.2-0.5) for a point source,
      ``sum P^2 / P[0]^2`` (several) for a single hot pixel or cosmic ray.
    * ``elongation`` = A/B and ``roundness`` = 1 - B/A (0 = round), the axis
      ratio from second moments of ``max(D - noise, 0)`` under a Gaussian
      window twice the PSF's sigma (a point source gives 1, an infinite trail
      about 2.2 noise-free; clipping at 1 sigma keeps noise from rounding faint
      trails).
    * ``dipole_score`` = ``-min S_corr`` within ``R`` (0 if positive) and
      ``dipole_ratio`` = ``dipole_score / max(peak, 1)``. Measured on S_corr
      (the PSF-matched filter of D) rather than on raw aperture sums of D,
      whose sign split is dominated by noise for faint sources.

    A peak passes the cuts when ``sharpness <= max_sharpness``,
    ``elongation <= max_elongation`` and it is not a dipole (``dipole_ratio >=
    max_dipole_ratio`` with ``dipole_score >= min_dipole_score``). Without
    ``difference`` only the dipole cut applies and the D-based columns are NaN.

    Parameters
    ----------
    score : array_like, shape (H, W)
        ZOGY S_corr (unit variance); NaNs are masked.
    difference : array_like, shape (H, W), optional
        ZOGY D, for the PSF fit and shape cuts; NaN pixels are left out of them.
    psf : array_like, optional
        PSF of D (``psf_difference``), a centred stamp with odd sides; default
        a circular Gaussian of ``fwhm`` pixels.
    fwhm : float
        FWHM in pixels of the default PSF.
    noise : float or array_like, optional
        Standard deviation of D per pixel; default the robust scatter of D in
        an annulus ``R < r <= 2R`` around each peak.
    mask : array_like of bool, shape (H, W), optional
        Pixels to ignore (``diff_mask``).
    threshold : float
        Detection threshold in S_corr sigma.
    box_size : int
        Local-maximum box side in pixels.
    polarity : {"both", "positive"}
        Also detect negative (fading) peaks, or only positive ones.
    aperture_radius : float, optional
        ``R`` above, in pixels.
    max_sharpness : float, optional
        Sharpness cut; default the geometric mean of the noise-free values of a
        point source and of a hot pixel for this PSF.
    max_elongation, max_dipole_ratio, min_dipole_score : float
        The other cuts.

    Returns
    -------
    pandas.DataFrame
        One row per peak in decreasing ``peak_score``, columns
        :data:`SCORE_COLUMNS`: ``x``, ``y`` (S_corr centroid in the 3x3 box),
        ``x_peak``, ``y_peak`` (pixel), ``sign`` (+1 brightening, -1 fading),
        ``peak_score`` (``|S_corr|`` at the peak), ``psf_flux`` (PSF-fit flux
        of ``sign * D``), ``sharpness``, ``roundness``, ``elongation``,
        ``dipole_ratio``, ``dipole_score``, ``passes_cuts`` (bool) and
        ``score``: ``peak_score`` where the cuts pass, else 0 (a monotone
        score for PR curves).

    Raises
    ------
    ValueError
        On shape mismatches, infinite values, or bad options.

    Examples
    --------
    >>> yy, xx = np.mgrid[:16, :16]
    >>> blob = 20 * np.exp(-((xx - 8) ** 2 + (yy - 7) ** 2) / 4.5)
    >>> t = candidates_from_score(blob, difference=blob, fwhm=3.5)
    >>> t[["x_peak", "y_peak", "passes_cuts"]].to_dict("records")
    [{'x_peak': 8, 'y_peak': 7, 'passes_cuts': True}]
    """
    s = _image(score, "score", allow_nan=True)
    d = None if difference is None else _image(difference, "difference", allow_nan=True)
    _same_shape(s, difference=d)
    sigma = _noise_map(noise, s.shape)
    bad = ~np.isfinite(s)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        _same_shape(s, mask=m)
        bad |= m
    if not np.isfinite(threshold):
        msg = f"threshold must be finite, got {threshold!r}"
        raise ValueError(msg)
    if int(box_size) != box_size or box_size < 1:
        msg = f"box_size must be a positive integer, got {box_size!r}"
        raise ValueError(msg)
    if polarity not in ("both", "positive"):
        msg = f"polarity must be 'both' or 'positive', got {polarity!r}"
        raise ValueError(msg)
    kernel = _Kernel.build(psf, fwhm, aperture_radius)
    if max_sharpness is None:
        star, delta = kernel.expected_sharpness()
        max_sharpness = math.sqrt(star * delta) if star > 0 else delta / 2

    from photutils.detection import find_peaks
    from photutils.utils.exceptions import NoDetectionsWarning

    clean = np.where(bad, 0.0, s)
    s_nan = np.where(bad, np.nan, s)
    w = kernel.window
    rows = []
    for sign in (1, -1) if polarity == "both" else (1,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            peaks = find_peaks(sign * clean, threshold, box_size=int(box_size), mask=bad)
        if peaks is None:
            continue
        for xp, yp in zip(np.asarray(peaks["x_peak"]), np.asarray(peaks["y_peak"]), strict=True):
            xp, yp = int(xp), int(yp)
            measured = kernel.measure(
                None if d is None else sign * _window(d, xp, yp, w),
                sign * _window(s_nan, xp, yp, w),
                None if sigma is None else _window(sigma, xp, yp, w),
            )
            x, y = _peak_centroid(sign * s_nan, xp, yp)
            measured["peak_score"] = float(sign * s[yp, xp])
            rows.append({"x": x, "y": y, "x_peak": xp, "y_peak": yp, "sign": sign, **measured})
    if not rows:
        return _empty_table(
            SCORE_COLUMNS,
            {"x_peak": np.int64, "y_peak": np.int64, "sign": np.int64, "passes_cuts": bool},
        )
    table = pd.DataFrame(rows)
    dipole = (table["dipole_ratio"] >= max_dipole_ratio) & (
        table["dipole_score"] >= min_dipole_score
    )
    passes = ~dipole
    if d is not None:
        passes &= (table["sharpness"] <= max_sharpness) & (table["elongation"] <= max_elongation)
    table["passes_cuts"] = passes.astype(bool)
    table["score"] = np.where(table["passes_cuts"], table["peak_score"], 0.0)
    table = table.sort_values("peak_score", ascending=False, kind="stable")
    return table[list(SCORE_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------- features


def find_stars(
    image: ArrayLike,
    *,
    threshold: float = 5.0,
    fwhm: float = 3.0,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Return positions of point sources in an image (e.g. the reference).

    The background and its scatter come from sigma-clipped statistics of the
    whole image; stars are found by :class:`photutils.detection.DAOStarFinder`
    at ``threshold`` times the scatter.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Image with sky (NaNs are masked).
    threshold : float
        Detection threshold in background sigma.
    fwhm : float
        FWHM of the stars in pixels.
    mask : array_like of bool, optional
        Pixels to ignore.

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` star positions ``(x, y)``; empty when none are found.

    Raises
    ------
    ValueError
        On a bad image, mask shape or option.

    Examples
    --------
    >>> yy, xx = np.mgrid[:16, :16]
    >>> img = 100 + np.random.default_rng(0).normal(0, 1, (16, 16))
    >>> img += 200 * np.exp(-((xx - 6) ** 2 + (yy - 9) ** 2) / 4.5)
    >>> np.round(find_stars(img, fwhm=3.5)).tolist()
    [[6.0, 9.0]]
    """
    data = _image(image, "image", allow_nan=True)
    bad = ~np.isfinite(data)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        _same_shape(data, mask=m)
        bad |= m
    if not (np.isfinite(threshold) and threshold > 0):
        msg = f"threshold must be positive, got {threshold!r}"
        raise ValueError(msg)
    if not (np.isfinite(fwhm) and fwhm > 0):
        msg = f"fwhm must be positive, got {fwhm!r}"
        raise ValueError(msg)
    if bad.all():
        return np.zeros((0, 2))
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    _, median, std = sigma_clipped_stats(data[~bad], sigma=3.0, maxiters=5)
    if not std > 0:
        return np.zeros((0, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        stars = DAOStarFinder(threshold * std, fwhm).find_stars(
            np.where(bad, median, data) - median, mask=bad
        )
    if stars is None or len(stars) == 0:
        return np.zeros((0, 2))
    return np.column_stack([np.asarray(stars["x_centroid"]), np.asarray(stars["y_centroid"])])


def _matched_snr(image: np.ndarray, kernel: _Kernel, xp: int, yp: int) -> float:
    """PSF-matched S/N of ``image`` (background-subtracted, unit noise) at a pixel."""
    win = _window(image, xp, yp, kernel.half)
    valid = np.isfinite(win)
    p = kernel.psf[valid]
    sumsq = float(np.sum(p**2))
    return float(np.sum(win[valid] * p) / math.sqrt(sumsq)) if sumsq > 0 else 0.0


def _standardise(image: np.ndarray) -> np.ndarray:
    from astropy.stats import sigma_clipped_stats

    finite = np.isfinite(image)
    _, median, std = sigma_clipped_stats(image[finite], sigma=3.0, maxiters=5)
    return (image - median) / (std if std > 0 else 1.0)


def probabilities_at(
    probabilities: ArrayLike,
    candidates: pd.DataFrame | ArrayLike,
    *,
    classes: Sequence[str] = CLASS_NAMES,
    radius: float = 2.0,
) -> pd.DataFrame:
    """Each class's largest U-Net probability within ``radius`` pixels of each candidate.

    The peak of an S_corr candidate and the U-Net's region may be a pixel or
    two apart (and a faint source's probability peaks off its S_corr peak), so
    each class's map is searched over a disc rather than read at one pixel.

    Parameters
    ----------
    probabilities : array_like
        ``(K, H, W)`` calibrated class probabilities
        (:attr:`astrid.model.Prediction.probabilities`).
    candidates : pandas.DataFrame or array_like
        Table with ``x``, ``y`` (pixels) or an ``(N, 2)`` array.
    classes : sequence of str
        Name of each of the ``K`` maps (the model's ``config.classes``).
    radius : float
        Search radius in pixels (>= 0).

    Returns
    -------
    pandas.DataFrame
        Index of ``candidates``, columns :data:`UNET_COLUMNS`; classes the
        model lacks, and positions off the image, are NaN.

    Raises
    ------
    ValueError
        On a shape mismatch, an unknown class, a negative radius or bad positions.

    Examples
    --------
    >>> p = np.zeros((len(CLASS_NAMES), 8, 8)); p[0] = 1.0
    >>> p[:, 4, 5] = 0.0; p[CLASS_NAMES.index("moving"), 4, 5] = 1.0
    >>> float(probabilities_at(p, [[4.0, 4.0]])["unet_moving"].iloc[0])
    1.0
    """
    prob = np.asarray(probabilities)  # no float64 copy of whole maps: only the disc pixels are read
    if prob.ndim != 3 or prob.shape[0] != len(classes):
        msg = f"probabilities must be (K, H, W) with K = {len(classes)} classes, got shape {prob.shape}"
        raise ValueError(msg)
    unknown = sorted(set(classes) - set(CLASS_NAMES))
    if unknown:
        msg = f"unknown class(es) {unknown}; known: {list(CLASS_NAMES)}"
        raise ValueError(msg)
    if not (isinstance(radius, int | float) and radius >= 0):
        msg = f"radius must be a non-negative number of pixels, got {radius!r}"
        raise ValueError(msg)
    xy, index = candidate_positions(candidates)
    out = pd.DataFrame(np.nan, index=index, columns=list(UNET_COLUMNS))
    col, row = np.floor(xy + 0.5).astype(int).T
    inside = (row >= 0) & (row < prob.shape[1]) & (col >= 0) & (col < prob.shape[2])
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = np.hypot(xx, yy) <= max(radius, 0.5)
    # the disc's pixels around each candidate only (not a filter over whole maps); the edge repeats
    rows = np.clip(row[:, None] + yy[disc][None, :], 0, prob.shape[1] - 1)
    cols = np.clip(col[:, None] + xx[disc][None, :], 0, prob.shape[2] - 1)
    peak = prob[:, rows, cols].max(axis=2).astype(float) if len(xy) else np.zeros((len(classes), 0))
    peak[:, ~inside] = np.nan
    for name, values in zip(classes, peak, strict=True):
        out[f"unet_{name}"] = values
    return out


def candidate_positions(
    candidates: pd.DataFrame | ArrayLike, name: str = "candidates"
) -> tuple[np.ndarray, pd.Index]:
    """Return the pixel positions of candidates and the index their results should carry.

    Parameters
    ----------
    candidates : pandas.DataFrame or array_like
        A table with ``x``, ``y`` columns (0-based pixels), or an ``(N, 2)``
        array (an empty array gives no positions).
    name : str
        What ``candidates`` is called in error messages.

    Returns
    -------
    xy : numpy.ndarray
        ``(N, 2)`` float ``(x, y)``.
    index : pandas.Index
        The table's index, or ``RangeIndex(N)`` for an array.

    Raises
    ------
    ValueError
        When the table lacks ``x``/``y`` or a position is NaN or infinite.

    Examples
    --------
    >>> xy, index = candidate_positions(pd.DataFrame({"x": [1.0], "y": [2.5]}, index=[7]))
    >>> xy.tolist(), list(index)
    ([[1.0, 2.5]], [7])
    >>> candidate_positions(np.zeros((0, 2)))[0].shape
    (0, 2)
    """
    if isinstance(candidates, pd.DataFrame):
        missing = [c for c in ("x", "y") if c not in candidates.columns]
        if missing:
            msg = f"{name} lacks columns {missing}"
            raise ValueError(msg)
        xy = candidates[["x", "y"]].to_numpy(dtype=float)
        index = candidates.index
    else:
        xy = np.asarray(candidates, dtype=float)
        xy = xy.reshape(-1, 2) if xy.size else np.zeros((0, 2))
        index = pd.RangeIndex(len(xy))
    if not np.all(np.isfinite(xy)):
        msg = f"{name} contains NaN or infinite positions"
        raise ValueError(msg)
    return xy, index


def candidate_features(
    candidates: pd.DataFrame | ArrayLike,
    *,
    score: ArrayLike,
    difference: ArrayLike,
    science: ArrayLike,
    reference: ArrayLike,
    psf_difference: ArrayLike | None = None,
    fwhm: float = 3.0,
    noise: float | ArrayLike | None = None,
    stars: ArrayLike | None = None,
    star_threshold: float = 5.0,
    aperture_radius: float | None = None,
) -> pd.DataFrame:
    """Hand features of candidates for the traditional real/bogus classifier.

    Every feature is measured at the candidate's nearest pixel with the
    definitions of :func:`candidates_from_score`, and every value is finite.
    The sign of the candidate is that of the larger of ``max S_corr`` and
    ``-min S_corr`` in its 3x3 box; fading candidates are measured on ``-D``
    and ``-S_corr`` like the negative peaks of :func:`candidates_from_score`.

    Parameters
    ----------
    candidates : pandas.DataFrame or array_like
        A table with ``x`` and ``y`` columns (any candidate table), or an
        ``(N, 2)`` array of positions.
    score, difference, science, reference : array_like, shape (H, W)
        S_corr, D and the two input images on the same grid (NaNs in
        ``score`` and ``difference`` are treated as missing pixels).
    psf_difference : array_like, optional
        PSF of D; default a Gaussian of ``fwhm`` pixels.
    fwhm : float
        FWHM in pixels of the default PSF, and of the stars when
        ``psf_difference`` is given too (then its width is used instead).
    noise : float or array_like, optional
        Standard deviation of D; default the local robust scatter.
    stars : array_like, shape (K, 2), optional
        Star positions; default :func:`find_stars` on ``reference``.
    star_threshold : float
        Star detection threshold in sigma when ``stars`` is not given.
    aperture_radius : float, optional
        Aperture radius in pixels (default 2 FWHM).

    Returns
    -------
    pandas.DataFrame
        Same index as ``candidates``, columns :data:`FEATURE_COLUMNS`:
        ``peak_score`` (max of ``sign * S_corr`` in the 3x3 box), ``sign``
        (+1 brightening, -1 fading), ``psf_snr`` (PSF-fit flux
        over its error), ``psf_chi2`` (reduced chi-square of that fit),
        ``sharpness``, ``roundness``, ``elongation``, ``dipole_ratio``,
        ``star_distance`` (pixels to the nearest reference star; the image
        diagonal when there is none), ``local_noise`` (robust scatter of D in
        the annulus), ``reference_snr`` and ``science_snr`` (PSF-matched S/N of
        the background-subtracted input images at the position). Where a
        measure is undefined (e.g. a stamp fully off the image) it takes its
        neutral value: 0 for S/Ns, sharpness, roundness and the dipole ratio,
        1 for elongation and chi-square.

    Raises
    ------
    ValueError
        On missing ``x``/``y`` columns, non-finite positions, or images of
        different shapes.

    Examples
    --------
    >>> yy, xx = np.mgrid[:16, :16]
    >>> blob = 20 * np.exp(-((xx - 8) ** 2 + (yy - 7) ** 2) / 4.5)
    >>> f = candidate_features([[8, 7]], score=blob, difference=blob, science=blob + 1,
    ...                        reference=np.ones((16, 16)), stars=np.zeros((0, 2)))
    >>> bool(np.isfinite(f.to_numpy()).all()), list(f.columns) == list(FEATURE_COLUMNS)
    (True, True)
    """
    xy, index = candidate_positions(candidates)
    s = _image(score, "score", allow_nan=True)
    d = _image(difference, "difference", allow_nan=True)
    sci = _image(science, "science", allow_nan=True)
    ref = _image(reference, "reference", allow_nan=True)
    _same_shape(s, difference=d, science=sci, reference=ref)
    sigma = _noise_map(noise, s.shape)
    kernel = _Kernel.build(psf_difference, fwhm, aperture_radius)
    if stars is None:
        star_fwhm = fwhm if psf_difference is None else _FWHM_PER_SIGMA * kernel.sigma
        star_xy = find_stars(ref, threshold=star_threshold, fwhm=star_fwhm)
    else:
        star_xy = np.asarray(stars, dtype=float)
        star_xy = star_xy.reshape(0, 2) if star_xy.size == 0 else star_xy
        if star_xy.ndim != 2 or star_xy.shape[1] != 2 or not np.all(np.isfinite(star_xy)):
            msg = f"stars must be a finite (K, 2) array of (x, y), got shape {star_xy.shape}"
            raise ValueError(msg)
    ref_std = _standardise(ref)
    sci_std = _standardise(sci)
    diagonal = math.hypot(*s.shape)
    rows = []
    w = kernel.window
    for xp, yp in np.floor(xy + 0.5).astype(int):
        xp, yp = int(xp), int(yp)
        s_win = _window(s, xp, yp, w)
        box = s_win[w - 1 : w + 2, w - 1 : w + 2]
        sign = -1.0 if -_nan_reduce(np.min, box, default=0.0) > _nan_reduce(np.max, box, default=0.0) else 1.0
        m = kernel.measure(
            sign * _window(d, xp, yp, w),
            sign * s_win,
            None if sigma is None else _window(sigma, xp, yp, w),
        )
        dist = np.hypot(star_xy[:, 0] - xp, star_xy[:, 1] - yp) if len(star_xy) else []
        rows.append(
            {
                "peak_score": m["peak_score"],
                "sign": sign,
                "psf_snr": m["psf_snr"],
                "psf_chi2": m["psf_chi2"],
                "sharpness": m["sharpness"],
                "roundness": m["roundness"],
                "elongation": m["elongation"],
                "dipole_ratio": m["dipole_ratio"],
                "star_distance": float(np.min(dist)) if len(dist) else diagonal,
                "local_noise": m["local_noise"],
                "reference_snr": _matched_snr(ref_std, kernel, xp, yp),
                "science_snr": _matched_snr(sci_std, kernel, xp, yp),
            }
        )
    table = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS), index=index, dtype=float)
    neutral = dict.fromkeys(FEATURE_COLUMNS, 0.0) | {"elongation": 1.0, "psf_chi2": 1.0}
    table = table.replace([np.inf, -np.inf], np.nan).fillna(neutral)
    return table


def forced_photometry(
    difference: ArrayLike,
    positions: pd.DataFrame | ArrayLike,
    *,
    psf: ArrayLike | None = None,
    fwhm: float = 3.0,
    noise: float | ArrayLike | None = None,
    aperture_radius: float | None = None,
    min_coverage: float = 0.5,
) -> pd.DataFrame:
    """PSF-fit flux of a difference image at given positions (forced photometry).

    At each position the PSF, shifted by spline interpolation to the position's
    sub-pixel offset, is fitted for its amplitude alone by least squares: the
    fit that gives ``psf_flux`` in :func:`candidates_from_score`, so a source
    is measured alike wherever it was detected.

    Parameters
    ----------
    difference : array_like, shape (H, W)
        Difference image (e.g. ZOGY D); NaN pixels are left out of the fit.
    positions : pandas.DataFrame or array_like
        A table with ``x``, ``y`` columns or an ``(N, 2)`` array, 0-based pixels.
    psf : array_like, optional
        PSF of ``difference``, a centred stamp with odd sides; default a
        circular Gaussian of ``fwhm`` pixels.
    fwhm : float
        FWHM in pixels of the default PSF.
    noise : float or array_like, optional
        Standard deviation of ``difference`` per pixel; default the robust
        scatter in an annulus ``R < r <= 2R`` around each position.
    aperture_radius : float, optional
        ``R`` above, in pixels (default 2 FWHM).
    min_coverage : float
        Smallest fraction of the PSF's ``sum P^2`` that must fall on finite
        pixels (masked pixels are NaN) for a measurement.

    Returns
    -------
    pandas.DataFrame
        Same index as ``positions``; ``flux`` (units of ``difference`` times
        pixels, the PSF summing to one), ``flux_error`` (1 sigma) and ``snr``;
        all NaN where too little of the PSF is on usable pixels or (without
        ``noise``) the annulus has no finite scatter.

    Raises
    ------
    ValueError
        On a bad image, positions or options.

    Examples
    --------
    >>> from scipy import ndimage
    >>> yy, xx = np.mgrid[:32, :32]
    >>> image = 50 * np.exp(-((xx - 16.3) ** 2 + (yy - 15.8) ** 2) / 4.5) / (4.5 * np.pi)
    >>> image += np.random.default_rng(0).normal(0, 0.05, image.shape)
    >>> out = forced_photometry(image, [[16.3, 15.8]], fwhm=3.53)
    >>> bool(abs(out.flux[0] - 50) < 3 * out.flux_error[0])
    True
    """
    d = _image(difference, "difference", allow_nan=True)
    xy, index = candidate_positions(positions, "positions")
    sigma = _noise_map(noise, d.shape)
    if not 0 <= min_coverage <= 1:
        msg = f"min_coverage must be in [0, 1], got {min_coverage!r}"
        raise ValueError(msg)
    base = _Kernel.build(psf, fwhm, aperture_radius)
    rows = []
    for x, y in xy:
        xp, yp = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        shifted = ndimage.shift(base.psf, (y - yp, x - xp), order=3, mode="constant")
        kernel = _Kernel.build(shifted, fwhm, base.radius)
        w = kernel.window
        m = kernel.measure(_window(d, xp, yp, w), np.zeros((2 * w + 1, 2 * w + 1)),
                           None if sigma is None else _window(sigma, xp, yp, w))
        inner = np.isfinite(_window(d, xp, yp, kernel.half))
        coverage = float(np.sum(kernel.psf[inner] ** 2) / np.sum(kernel.psf**2))
        has_noise = sigma is not None or m["local_noise"] > 0
        flux, snr = m["psf_flux"], m["psf_snr"]
        if coverage < min_coverage or not has_noise or not (np.isfinite(snr) and snr != 0):
            flux = snr = math.nan
        rows.append({"flux": flux, "flux_error": flux / snr, "snr": snr})
    return pd.DataFrame(rows, columns=["flux", "flux_error", "snr"], index=index, dtype=float)

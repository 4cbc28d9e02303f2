"""Objects that change between reference and science, their masks and the label maps.

Every transient and artifact is held as a :class:`SimObject`: its noise-free
contribution to the ideal difference on a small stamp (electrons of the science
epoch), plus a *core* region that is always labelled. Masks are the pixels
where the object's contribution exceeds ``mask_sigma`` times the local
difference noise, plus its core (for PSF-like objects a disk of radius
``max(FWHM/2, 1.5 px)``), restricted to the object's own support, so a mask
covers its object and nothing else.

Overlaps are resolved by :data:`PRIORITY`: transients over artifacts over
background; among artifacts the small, sharp ones win over the extended ones
(cosmic ray > hot pixel > satellite trail > bleed trail > dipole); between two
objects of the same class the one with the larger local S/N wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from astrid.classes import CLASS_CODES
from astrid.simulate.psf import add_stamps

__all__ = ["CATALOG_COLUMNS", "PRIORITY", "SimObject", "build_labels", "canvas", "disk_core"]

PRIORITY: tuple[str, ...] = (
    "supernova",
    "variable",
    "moving",
    "cosmic_ray",
    "hot_pixel",
    "satellite_trail",
    "bleed_trail",
    "dipole",
)
"""Kinds from highest to lowest priority where masks overlap."""

CATALOG_COLUMNS: tuple[str, ...] = (
    "instance",
    "object_id",
    "kind",
    "subtype",
    "x",
    "y",
    "flux",
    "mag",
    "snr",
    "ambiguous",
    "npix",
    "sci_flux",
    "ref_flux",
    "peak_mag",
    "t_peak",
    "tau_rise",
    "tau_fall",
    "period",
    "amplitude",
    "rate",
    "angle",
    "length",
    "width",
    "host_x",
    "host_y",
    "host_r_eff",
    "x_start",
    "y_start",
    "x_end",
    "y_end",
)
"""Catalogue columns, in order; generator parameters that do not apply are NaN."""


@dataclass
class SimObject:
    """One changing object of one science epoch.

    Attributes
    ----------
    kind : str
        Class name (``classes.CLASS_NAMES``).
    object_id : str
        Stable name across the epochs of a field (``"sn0"``, ``"cr3"``...).
    x, y : float
        Position where it appears, 0-based pixels of the reference grid.
    signal : numpy.ndarray
        Noise-free contribution to the difference (e-), float32 stamp.
    x0, y0 : int
        Lower-left pixel of ``signal`` in the image.
    flux : float
        Catalogue flux in e- (the change, science minus reference).
    core : numpy.ndarray or None
        Pixels always labelled when the signal there is non-zero.
    subtype : str
        Finer description (``"track"``, ``"comet"``, ``"bad_column"``...).
    params : dict
        Generator parameters for the catalogue.
    mask_mode : str
        ``"sigma"`` (threshold plus core) or ``"support"`` (every non-zero pixel).
    """

    kind: str
    object_id: str
    x: float
    y: float
    signal: np.ndarray
    x0: int
    y0: int
    flux: float
    core: np.ndarray | None = None
    subtype: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    mask_mode: str = "sigma"
    mask: np.ndarray | None = None
    snr: float = 0.0

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of the stamp in the image."""
        h, w = self.signal.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def crop(self, shape: tuple[int, int]) -> bool:
        """Clip the stamp to an image of ``shape``; return False when nothing is left."""
        h, w = self.signal.shape
        ya, xa = max(0, -self.y0), max(0, -self.x0)
        yb, xb = min(h, shape[0] - self.y0), min(w, shape[1] - self.x0)
        if yb <= ya or xb <= xa:
            return False
        self.signal = self.signal[ya:yb, xa:xb]
        if self.core is not None:
            self.core = self.core[ya:yb, xa:xb]
        self.x0 += xa
        self.y0 += ya
        return bool(np.any(self.signal != 0))


def canvas(
    stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """Sum stamps into one stamp covering their union.

    Returns
    -------
    image : numpy.ndarray
        float32 canvas.
    cx0, cy0 : int
        Its lower-left pixel.

    Examples
    --------
    >>> img, cx0, cy0 = canvas(np.ones((2, 3, 3), np.float32), np.array([0, 2]), np.array([0, 0]))
    >>> img.shape, cx0, float(img.sum())
    ((3, 5), 0, 18.0)
    """
    h, w = stamps.shape[1:]
    cx0, cy0 = int(np.min(x0)), int(np.min(y0))
    out = np.zeros((int(np.max(y0)) - cy0 + h, int(np.max(x0)) - cx0 + w), np.float32)
    add_stamps(out, stamps, np.asarray(x0) - cx0, np.asarray(y0) - cy0, weights=weights)
    return out, cx0, cy0


def disk_core(
    shape: tuple[int, int],
    x0: int,
    y0: int,
    xs: np.ndarray,
    ys: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Pixels of a stamp within ``radius`` of the polyline through ``(xs, ys)``.

    Examples
    --------
    >>> disk_core((5, 5), 0, 0, np.array([2.0]), np.array([2.0]), 1.0).sum()
    np.int64(5)
    """
    yy, xx = np.mgrid[y0 : y0 + shape[0], x0 : x0 + shape[1]]
    xs, ys = np.atleast_1d(xs).astype(float), np.atleast_1d(ys).astype(float)
    if xs.size == 1:
        d2 = (xx - xs[0]) ** 2 + (yy - ys[0]) ** 2
    else:
        ax, ay, bx, by = xs[0], ys[0], xs[-1], ys[-1]
        lx, ly = bx - ax, by - ay
        t = np.clip(((xx - ax) * lx + (yy - ay) * ly) / max(lx * lx + ly * ly, 1e-12), 0, 1)
        d2 = (xx - ax - t * lx) ** 2 + (yy - ay - t * ly) ** 2
    return d2 <= radius * radius


def build_labels(
    objects: list[SimObject],
    variance: np.ndarray,
    *,
    mask_sigma: float,
    min_snr: float,
    ambiguous_snr: float,
    zero_point: float,
    exposure: float,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, list[SimObject]]:
    """Compute masks and S/N, keep detectable objects, paint the maps, build the catalogue.

    Parameters
    ----------
    objects : list of SimObject
        Candidate objects of one epoch (already cropped to the image).
    variance : numpy.ndarray
        Per-pixel variance of the difference (e-²).
    mask_sigma : float
        Threshold of the mask in units of the local noise.
    min_snr : float
        Objects whose optimal S/N is below this are not labelled (they are
        invisible in the data; their signal stays in the image).
    ambiguous_snr : float
        Objects with S/N below this are flagged ``ambiguous``.
    zero_point, exposure : float
        AB zero point (e-/s) and effective exposure (transparency × seconds)
        to turn fluxes into magnitudes.

    Returns
    -------
    class_map : numpy.ndarray
        uint8 class codes.
    instance_map : numpy.ndarray
        int32 instance numbers (0 = none).
    catalog : pandas.DataFrame
        One row per kept object, columns :data:`CATALOG_COLUMNS`.
    kept : list of SimObject
        The kept objects with ``mask`` and ``snr`` set (objects whose every
        pixel went to higher-priority objects are dropped).
    """
    shape = variance.shape
    kept: list[SimObject] = []
    for obj in objects:
        rows, cols = obj.slices
        var = variance[rows, cols]
        s = obj.signal
        obj.snr = float(np.sqrt(np.sum(s.astype(np.float64) ** 2 / var)))
        if obj.snr < min_snr:
            continue
        nonzero = s != 0
        if obj.mask_mode == "support":
            mask = nonzero
        else:
            mask = np.abs(s) > mask_sigma * np.sqrt(var)
            if obj.core is not None:
                mask |= obj.core & nonzero
        if not mask.any():
            continue
        obj.mask = mask
        kept.append(obj)

    class_map = np.zeros(shape, np.uint8)
    instance_map = np.zeros(shape, np.int32)
    best_rank = np.full(shape, -1, np.int16)
    best_strength = np.zeros(shape, np.float32)
    for number, obj in enumerate(kept, start=1):
        rows, cols = obj.slices
        rank = len(PRIORITY) - PRIORITY.index(obj.kind)
        strength = np.abs(obj.signal) / np.sqrt(variance[rows, cols])
        br, bs = best_rank[rows, cols], best_strength[rows, cols]
        win = obj.mask & ((rank > br) | ((rank == br) & (strength > bs)))
        br[win] = rank
        bs[win] = strength[win]
        class_map[rows, cols][win] = CLASS_CODES[obj.kind]
        instance_map[rows, cols][win] = number

    # Objects that lost every pixel to higher-priority ones are dropped; renumber the rest.
    npix_all = np.bincount(instance_map.ravel(), minlength=len(kept) + 1)
    visible = npix_all[1:] > 0
    renumber = np.zeros(len(kept) + 1, np.int32)
    renumber[1:][visible] = np.arange(1, int(visible.sum()) + 1, dtype=np.int32)
    instance_map = renumber[instance_map]
    kept = [obj for obj, v in zip(kept, visible, strict=True) if v]
    npix = npix_all[np.concatenate([[True], visible])]
    records = []
    for number, obj in enumerate(kept, start=1):
        flux = float(obj.flux)
        mag = zero_point - 2.5 * math.log10(abs(flux) / exposure) if flux != 0 else math.nan
        row = dict.fromkeys(CATALOG_COLUMNS, math.nan)
        row.update(obj.params)
        row.update(
            instance=number,
            object_id=obj.object_id,
            kind=obj.kind,
            subtype=obj.subtype,
            x=round(float(obj.x), 4),
            y=round(float(obj.y), 4),
            flux=flux,
            mag=mag,
            snr=obj.snr,
            ambiguous=bool(obj.snr < ambiguous_snr),
            npix=int(npix[number]),
        )
        records.append(row)
    catalog = pd.DataFrame(records, columns=list(CATALOG_COLUMNS))
    return class_map, instance_map, catalog, kept

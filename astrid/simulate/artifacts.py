"""Artifacts: cosmic rays, hot pixels and bad columns, satellites, bleeds, dipoles.

Cosmic rays, hot pixels, bad columns and satellite trails exist in single
science exposures only (a reference coadd rejects them). Saturation and
bleeding happen in every image whose stars exceed the full well. Dipoles are
the residuals of static stars that the small registration error between the
science epoch and the reference leaves in a perfectly PSF-matched difference.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.special import erf

from astrid.simulate.labels import SimObject, canvas
from astrid.simulate.psf import MoffatPSF, point_stamps

__all__ = [
    "bad_columns",
    "bleed",
    "cosmic_rays",
    "deposit",
    "dipole",
    "hot_pixels",
    "satellite_trails",
]


def deposit(
    x: np.ndarray, y: np.ndarray, charge: np.ndarray, *, sigma: float = 0.3
) -> tuple[np.ndarray, int, int]:
    """Deposit point charges with pixel-integrated Gaussian diffusion (sharper than any PSF).

    Returns
    -------
    image : numpy.ndarray
        float32 stamp.
    x0, y0 : int
        Its lower-left pixel.

    Examples
    --------
    >>> img, x0, y0 = deposit(np.array([5.0]), np.array([5.0]), np.array([100.0]))
    >>> round(float(img.sum()), 3), x0, y0
    (100.0, 3, 3)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    g = np.arange(-2, 3, dtype=float)
    s = sigma * math.sqrt(2.0)

    def weights(f):
        edges = (g[None, :] + 0.5 - f[:, None]) / s, (g[None, :] - 0.5 - f[:, None]) / s
        w = 0.5 * (erf(edges[0]) - erf(edges[1]))
        return w / w.sum(axis=1, keepdims=True)

    wx, wy = weights(x - ix), weights(y - iy)
    stamps = (wy[:, :, None] * wx[:, None, :]).astype(np.float32)
    return canvas(stamps, ix - 2, iy - 2, np.asarray(charge, np.float32))


def cosmic_rays(
    rng: np.random.Generator, n: int, *, shape: tuple[int, int], start: int = 0
) -> list[SimObject]:
    """Draw ``n`` cosmic rays: 65 % compact hits, 35 % straight tracks.

    Hits put 200-30000 e- (log-uniform) into 1-4 nearby points; tracks are
    3-25 px long at a random angle with 100-3000 e- per pixel of path and
    Landau-like (log-normal) fluctuations along it.

    Examples
    --------
    >>> crs = cosmic_rays(np.random.default_rng(0), 3, shape=(32, 32))
    >>> [c.kind for c in crs]
    ['cosmic_ray', 'cosmic_ray', 'cosmic_ray']
    """
    out = []
    for i in range(n):
        x, y = rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[0] - 1)
        if rng.random() < 0.65:
            k = int(rng.integers(1, 5))
            xs, ys = x + rng.normal(0, 0.6, k), y + rng.normal(0, 0.6, k)
            total = math.exp(rng.uniform(math.log(200.0), math.log(30000.0)))
            charge = total * rng.dirichlet(np.ones(k))
            subtype, length, angle = "hit", 0.0, math.nan
        else:
            length = rng.uniform(3.0, 25.0)
            angle = rng.uniform(0, math.pi)
            k = max(2, math.ceil(length / 0.25))
            t = np.linspace(-0.5, 0.5, k) * length
            xs, ys = x + t * math.cos(angle), y + t * math.sin(angle)
            per_px = math.exp(rng.uniform(math.log(100.0), math.log(3000.0)))
            charge = per_px * length / k * rng.lognormal(0.0, 0.4, k)
            subtype, total = "track", float(charge.sum())
            angle = math.degrees(angle)
        signal, x0, y0 = deposit(xs, ys, charge)
        core = signal >= 0.5 * signal.max()
        obj = SimObject("cosmic_ray", f"cr{start + i}", float(np.average(xs, weights=charge)),
                        float(np.average(ys, weights=charge)), signal, x0, y0, float(total),
                        core=core, subtype=subtype, params={"length": length, "angle": angle})
        if obj.crop(shape):
            obj.flux = float(obj.signal.sum())
            out.append(obj)
    return out


def hot_pixels(
    rng: np.random.Generator, n: int, *, shape: tuple[int, int], start: int = 0
) -> list[SimObject]:
    """Draw ``n`` hot pixels with 50-20000 e- of excess dark charge (log-uniform).

    Examples
    --------
    >>> [o.signal.shape for o in hot_pixels(np.random.default_rng(0), 2, shape=(8, 8))]
    [(1, 1), (1, 1)]
    """
    out = []
    for i in range(n):
        ix, iy = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))
        q = math.exp(rng.uniform(math.log(50.0), math.log(20000.0)))
        sig = np.full((1, 1), q, np.float32)
        out.append(SimObject("hot_pixel", f"hot{start + i}", float(ix), float(iy), sig, ix, iy,
                             q, core=np.ones((1, 1), bool), subtype="hot_pixel"))
    return out


def bad_columns(
    rng: np.random.Generator,
    n: int,
    *,
    sky: np.ndarray,
    pixel_sigma: float,
    start: int = 0,
) -> list[SimObject]:
    """Draw ``n`` bad columns (class ``hot_pixel``): hot (+1-10 σ) or cold (-70 % of the sky).

    A column runs from a random defect row to the top or the bottom edge.

    Examples
    --------
    >>> cols = bad_columns(np.random.default_rng(0), 1, sky=np.full((16, 16), 100.0, np.float32),
    ...                    pixel_sigma=10.0)
    >>> cols[0].signal.shape[1]
    1
    """
    ny, nx = sky.shape
    out = []
    for i in range(n):
        ix, defect = int(rng.integers(0, nx)), int(rng.integers(0, ny))
        lo, hi = (defect, ny) if rng.random() < 0.5 else (0, defect + 1)
        if rng.random() < 0.7:
            level = pixel_sigma * math.exp(rng.uniform(0.0, math.log(10.0)))
            sig = np.full((hi - lo, 1), level, np.float32)
            subtype = "hot_column"
        else:
            sig = -0.7 * sky[lo:hi, ix : ix + 1]
            subtype = "cold_column"
        out.append(SimObject("hot_pixel", f"col{start + i}", float(ix), 0.5 * (lo + hi - 1),
                             sig.astype(np.float32), ix, lo, float(sig.sum()), subtype=subtype,
                             mask_mode="support", params={"length": float(hi - lo)}))
    return out


def satellite_trails(
    rng: np.random.Generator,
    n: int,
    *,
    shape: tuple[int, int],
    psf: MoffatPSF,
    pixel_sigma: float,
    start: int = 0,
) -> list[SimObject]:
    """Draw ``n`` satellite trails crossing the whole image.

    The cross-section is the line integral of the epoch's Moffat PSF, widened
    1-2.5× for defocused low orbits; the peak per pixel is 1-100× the pixel
    noise (log-uniform).

    Examples
    --------
    >>> t = satellite_trails(np.random.default_rng(0), 1, shape=(32, 32), psf=MoffatPSF(2.0),
    ...                      pixel_sigma=10.0)
    >>> t[0].kind, t[0].flux > 0
    ('satellite_trail', True)
    """
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    out = []
    for i in range(n):
        px, py = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        angle = rng.uniform(0, math.pi)
        widen = rng.uniform(1.0, 2.5)
        peak = pixel_sigma * math.exp(rng.uniform(0.0, math.log(100.0)))
        c, s = math.cos(angle), math.sin(angle)
        dist = (xx - px) * s - (yy - py) * c
        prof0 = float(psf.line_profile(np.zeros(1), widen=widen)[0])
        sb = peak / prof0  # e- per pixel of trail length
        signal = (sb * psf.line_profile(dist, widen=widen)).astype(np.float32)
        signal[np.abs(dist) > 8.0 * psf.fwhm * widen] = 0.0
        core = np.abs(dist) <= max(0.5 * psf.fwhm * widen, 1.5)
        ends = _clip_line(px, py, c, s, nx, ny)
        params = {"angle": math.degrees(angle), "width": psf.fwhm * widen,
                  "length": math.hypot(ends[2] - ends[0], ends[3] - ends[1]),
                  "x_start": ends[0], "y_start": ends[1], "x_end": ends[2], "y_end": ends[3]}
        out.append(SimObject("satellite_trail", f"sat{start + i}", float(px), float(py), signal,
                             0, 0, float(signal.sum()), core=core, params=params))
    return out


def _clip_line(px, py, c, s, nx, ny):
    """End points of the line through (px, py) with direction (c, s) inside the image."""
    lo, hi = -np.inf, np.inf
    for p, d, n in ((px, c, nx), (py, s, ny)):
        if abs(d) > 1e-12:
            a, b = (-0.5 - p) / d, (n - 0.5 - p) / d
            lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    return px + lo * c, py + lo * s, px + hi * c, py + hi * s


def bleed(expected: np.ndarray, full_well: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip pixels at the full well and spread the excess charge along their columns.

    The charge above the full well in each saturated run of a column flows
    half up and half down, filling neighbouring pixels to the full well until
    it is used up (or lost off the edge), as in a CCD bleed trail.

    Returns
    -------
    image : numpy.ndarray
        The clipped and bled image (float32).
    saturated : numpy.ndarray
        Bool map of pixels at the full well.

    Examples
    --------
    >>> img = np.zeros((9, 1), np.float32); img[4, 0] = 300.0
    >>> out, sat = bleed(img, 100.0)
    >>> out[:, 0].tolist(), int(sat.sum())
    ([0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0.0], 3)
    """
    out = np.array(expected, dtype=np.float32, copy=True)
    over = out > full_well
    if not over.any():
        return out, over
    ny = out.shape[0]
    for col in np.flatnonzero(over.any(axis=0)):
        v = out[:, col].astype(np.float64)
        runs, n_runs = ndimage.label(v > full_well)
        for r in range(1, n_runs + 1):
            idx = np.flatnonzero(runs == r)
            lo, hi = int(idx[0]), int(idx[-1])
            excess = float(np.sum(v[lo : hi + 1] - full_well))
            v[lo : hi + 1] = full_well
            for step, share in ((-1, 0.5 * excess), (1, 0.5 * excess)):
                k = lo - 1 if step < 0 else hi + 1
                while share > 0 and 0 <= k < ny:
                    room = max(0.0, full_well - v[k])
                    take = min(room, share)
                    v[k] += take
                    share -= take
                    k += step
        out[:, col] = v
    return out, out >= np.float32(full_well) * np.float32(1 - 1e-6)


def dipole(
    object_id: str,
    x: float,
    y: float,
    x_sci: float,
    y_sci: float,
    flux: float,
    psf: MoffatPSF,
    *,
    params: dict,
    radius: int | None = None,
) -> SimObject:
    """Registration residual of one static star: its science image minus the matched reference.

    ``radius`` must be the stamp half-size the star was rendered with, so that
    the residual equals the star's term in the ideal difference exactly.

    Examples
    --------
    >>> d = dipole("dip0", 8.0, 8.0, 8.1, 8.0, 1e5, MoffatPSF(2.0), params={})
    >>> abs(float(d.signal.sum())) < 1.0, float(d.signal.max()) > 0
    (True, True)
    """
    stamps, x0, y0 = point_stamps(psf, np.array([x_sci, x]), np.array([y_sci, y]), radius=radius)
    signal, sx0, sy0 = canvas(stamps, x0, y0, np.array([flux, -flux], np.float32))
    positive = float(signal[signal > 0].sum())
    return SimObject("dipole", object_id, x_sci, y_sci, signal, sx0, sy0, positive,
                     params=params, subtype="registration")


"""Genuine transients: supernovae, variable stars and moving objects.

Each generator draws the field-level parameters once (a light curve, an
orbit-like linear motion) and each science epoch then samples them at its MJD,
rendering the *change* against the reference with the epoch's PSF at the
epoch's (slightly misregistered) position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from astrid.simulate.labels import SimObject, canvas, disk_core
from astrid.simulate.psf import MoffatPSF, point_stamps
from astrid.simulate.scene import Conditions, sersic_stamps

__all__ = [
    "MovingObject",
    "Supernova",
    "VariableStar",
    "bazin",
    "moving_objects",
    "periodic_shape",
    "render_moving",
    "render_point",
    "supernovae",
    "variable_stars",
]


def bazin(t: np.ndarray, *, t_peak: float, tau_rise: float, tau_fall: float) -> np.ndarray:
    """Bazin et al. (2009) light curve normalised to 1 at its maximum.

    ``f(t) ∝ exp(-(t - t0)/τ_fall) / (1 + exp(-(t - t0)/τ_rise))`` with ``t0``
    chosen so that the maximum falls at ``t_peak``.

    Examples
    --------
    >>> float(bazin(np.array([10.0]), t_peak=10.0, tau_rise=3.0, tau_fall=30.0)[0])
    1.0
    """
    if not (tau_rise > 0 and tau_fall > tau_rise):
        msg = f"need 0 < tau_rise < tau_fall, got tau_rise={tau_rise}, tau_fall={tau_fall}"
        raise ValueError(msg)
    shift = tau_rise * math.log(tau_fall / tau_rise - 1.0)
    t0 = t_peak - shift

    def raw(tt):
        x = -(np.asarray(tt, float) - t0)
        return np.exp(np.minimum(x / tau_fall, 700)) / (1.0 + np.exp(np.minimum(x / tau_rise, 700)))

    return raw(t) / raw(t_peak)


def periodic_shape(phase: np.ndarray, kind: str) -> np.ndarray:
    """Magnitude offset (in units of the amplitude, -0.5..0.5) of a periodic variable.

    ``kind`` is ``"sine"``, ``"rrlyrae"`` (fast rise, slow decline) or
    ``"eclipsing"`` (flat with a primary and a secondary dip). Negative = brighter.

    Examples
    --------
    >>> periodic_shape(np.array([0.25, 0.75]), "sine").tolist()
    [0.5, -0.5]
    """
    p = np.mod(phase, 1.0)
    if kind == "sine":
        return 0.5 * np.sin(2 * np.pi * p)
    if kind == "rrlyrae":
        rise = 0.15
        return np.where(p < rise, 0.5 - p / rise, -0.5 + (p - rise) / (1 - rise))
    if kind == "eclipsing":
        primary = np.exp(-0.5 * ((p - 0.25) / 0.03) ** 2)
        dip = primary + 0.4 * np.exp(-0.5 * ((p - 0.75) / 0.03) ** 2)
        return dip - 0.5
    msg = f"kind must be 'sine', 'rrlyrae' or 'eclipsing', got {kind!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Supernova:
    """A supernova: position on the reference grid, host and Bazin light curve."""

    x: float
    y: float
    peak_mag: float
    t_peak: float
    tau_rise: float
    tau_fall: float
    host_x: float = math.nan
    host_y: float = math.nan
    host_r_eff: float = math.nan

    def rate(self, mjd: float, zero_point: float) -> float:
        """Electrons per second (at transparency 1) at ``mjd``."""
        peak = 10 ** (-0.4 * (self.peak_mag - zero_point))
        lc = bazin(np.array([mjd]), t_peak=self.t_peak, tau_rise=self.tau_rise,
                   tau_fall=self.tau_fall)
        return float(peak * lc[0])


@dataclass(frozen=True)
class VariableStar:
    """A periodic variable: index of its star, mean magnitude and light curve."""

    star: int
    mean_mag: float
    amplitude: float
    period: float
    phase: float
    shape: str

    def mag(self, mjd: float) -> float:
        """Magnitude at ``mjd``."""
        off = periodic_shape(np.array([mjd / self.period + self.phase]), self.shape)[0]
        return float(self.mean_mag + self.amplitude * off)

    def reference_mag(self) -> float:
        """Magnitude of the phase-averaged flux (what a coadd of many epochs records)."""
        grid = np.linspace(0, 1, 512, endpoint=False)
        mags = self.mean_mag + self.amplitude * periodic_shape(grid, self.shape)
        return float(-2.5 * np.log10(np.mean(10 ** (-0.4 * mags))))


@dataclass(frozen=True)
class MovingObject:
    """A solar-system body moving linearly across the field.

    ``rate`` in arcsec/hour, ``angle`` in radians, ``x``, ``y`` its position at
    ``mjd``; comets carry a coma (``coma_r_eff`` px, a fraction ``coma_fraction``
    of the light) elongated towards ``tail_angle``.
    """

    x: float
    y: float
    mjd: float
    mag: float
    rate: float
    angle: float
    comet: bool = False
    coma_r_eff: float = 0.0
    coma_fraction: float = 0.0
    tail_angle: float = 0.0

    def position(self, mjd: float, pixel_scale: float) -> tuple[float, float]:
        """Pixel position at ``mjd``."""
        d = self.rate * 24.0 * (mjd - self.mjd) / pixel_scale
        return self.x + d * math.cos(self.angle), self.y + d * math.sin(self.angle)


def supernovae(
    rng: np.random.Generator,
    n: int,
    *,
    hosts: list[tuple[float, float, float, float, float]],
    shape: tuple[int, int],
    mjd_range: tuple[float, float],
    limit_mag: float,
) -> list[Supernova]:
    """Draw ``n`` supernovae, in host galaxies where ``hosts`` gives one.

    ``hosts`` holds ``(x, y, r_eff, axis_ratio, angle)`` per supernova or
    ``nan`` x for a hostless event. Offsets from the host follow an
    exponential disc; peak magnitudes are uniform from 4 mag above to 0.3 mag
    below the single-epoch limit, so some events sit at the detection limit.

    Examples
    --------
    >>> sn = supernovae(np.random.default_rng(0), 1, hosts=[(10.0, 10.0, 2.0, 1.0, 0.0)],
    ...                 shape=(32, 32), mjd_range=(0.0, 10.0), limit_mag=21.0)
    >>> 17.0 <= sn[0].peak_mag <= 21.3
    True
    """
    out = []
    for i in range(n):
        hx, hy, re, q, ang = hosts[i]
        if math.isfinite(hx):
            r = rng.gamma(2.0, re / 1.68)
            phi = rng.uniform(0, 2 * math.pi)
            u, v = r * math.cos(phi) / math.sqrt(q), r * math.sin(phi) * math.sqrt(q)
            x = hx + u * math.cos(ang) - v * math.sin(ang)
            y = hy + u * math.sin(ang) + v * math.cos(ang)
            x, y = float(np.clip(x, 0, shape[1] - 1)), float(np.clip(y, 0, shape[0] - 1))
        else:
            x, y = rng.uniform(2, shape[1] - 3), rng.uniform(2, shape[0] - 3)
        tau_rise = rng.uniform(1.5, 6.0)
        out.append(
            Supernova(
                x=x,
                y=y,
                peak_mag=rng.uniform(limit_mag - 4.0, limit_mag + 0.3),
                t_peak=rng.uniform(mjd_range[0] - 15.0, mjd_range[1] + 5.0),
                tau_rise=tau_rise,
                tau_fall=rng.uniform(15.0, 60.0),
                host_x=hx,
                host_y=hy,
                host_r_eff=re,
            )
        )
    return out


def variable_stars(
    rng: np.random.Generator, stars: np.ndarray, mags: np.ndarray
) -> list[VariableStar]:
    """Make variables of the stars with indices ``stars`` (their mean magnitudes ``mags``).

    Periods are log-uniform in 0.2-30 d, amplitudes 0.2-1.0 mag; shapes are
    sine, RR Lyrae-like saw-tooth or eclipsing.

    Examples
    --------
    >>> v = variable_stars(np.random.default_rng(0), np.array([3]), np.array([18.0]))
    >>> v[0].star, 0.2 <= v[0].amplitude <= 1.0
    (3, True)
    """
    out = []
    for idx, mag in zip(stars, mags, strict=True):
        out.append(
            VariableStar(
                star=int(idx),
                mean_mag=float(mag),
                amplitude=rng.uniform(0.2, 1.0),
                period=math.exp(rng.uniform(math.log(0.2), math.log(30.0))),
                phase=rng.uniform(0, 1),
                shape=str(rng.choice(["sine", "rrlyrae", "eclipsing"])),
            )
        )
    return out


def moving_objects(
    rng: np.random.Generator,
    n: int,
    *,
    mjd: float,
    shape: tuple[int, int],
    limit_mag: float,
    fwhm: float,
) -> list[MovingObject]:
    """Draw ``n`` moving objects inside the image at ``mjd``.

    Asteroids move at 5-1500 "/h (log-uniform: main belt to fast near-Earth
    objects); 15 % are comets (1-30 "/h) with a coma of 1.5-4 FWHM.

    Examples
    --------
    >>> m = moving_objects(np.random.default_rng(0), 2, mjd=0.0, shape=(32, 32),
    ...                    limit_mag=21.0, fwhm=2.0)
    >>> len(m)
    2
    """
    out = []
    for _ in range(n):
        comet = bool(rng.random() < 0.15)
        if comet:
            rate = rng.uniform(1.0, 30.0)
        else:
            rate = math.exp(rng.uniform(math.log(5.0), math.log(1500.0)))
        out.append(
            MovingObject(
                x=rng.uniform(0, shape[1] - 1),
                y=rng.uniform(0, shape[0] - 1),
                mjd=mjd,
                mag=rng.uniform(limit_mag - 4.0, limit_mag + 0.3 - (1.0 if comet else 0.0)),
                rate=rate,
                angle=rng.uniform(0, 2 * math.pi),
                comet=comet,
                coma_r_eff=rng.uniform(1.5, 4.0) * fwhm if comet else 0.0,
                coma_fraction=rng.uniform(0.5, 0.9) if comet else 0.0,
                tail_angle=rng.uniform(0, 2 * math.pi),
            )
        )
    return out


def _core_radius(psf: MoffatPSF) -> float:
    return max(0.5 * psf.fwhm, 1.5)


def render_point(
    kind: str,
    object_id: str,
    x: float,
    y: float,
    flux: float,
    psf: MoffatPSF,
    *,
    params: dict,
    subtype: str = "",
) -> SimObject:
    """Make a PSF-shaped object of total ``flux`` e- at ``(x, y)``.

    Examples
    --------
    >>> o = render_point("supernova", "sn0", 8.2, 8.0, 1000.0, MoffatPSF(2.0), params={})
    >>> round(float(o.signal.sum()), 1)
    1000.0
    """
    stamps, x0, y0 = point_stamps(psf, np.array([x]), np.array([y]))
    signal = stamps[0] * np.float32(flux)
    core = disk_core(signal.shape, int(x0[0]), int(y0[0]), np.array([x]), np.array([y]),
                     _core_radius(psf))
    return SimObject(kind, object_id, x, y, signal, int(x0[0]), int(y0[0]), float(flux),
                     core=core, subtype=subtype, params=params)


def render_moving(
    body: MovingObject,
    object_id: str,
    conditions: Conditions,
    *,
    pixel_scale: float,
    zero_point: float,
    shape: tuple[int, int],
) -> SimObject | None:
    """Render a moving object trailed over the exposure, or None when it is off the image.

    The trail is a line of PSFs spaced by 0.25 px from the start to the end of
    the exposure (length = rate × exposure time); a comet adds its coma.
    """
    cond = conditions
    x, y = body.position(cond.mjd, pixel_scale)
    half = 0.5 * cond.exposure_time / 86400.0
    xa, ya = body.position(cond.mjd - half, pixel_scale)
    xb, yb = body.position(cond.mjd + half, pixel_scale)
    margin = cond.psf.radius + 4 * body.coma_r_eff
    if max(xa, xb) < -margin or min(xa, xb) > shape[1] + margin:
        return None
    if max(ya, yb) < -margin or min(ya, yb) > shape[0] + margin:
        return None
    length = math.hypot(xb - xa, yb - ya)
    k = max(1, math.ceil(length / 0.25) + 1)
    t = np.linspace(0.0, 1.0, k)
    xs, ys = xa + t * (xb - xa), ya + t * (yb - ya)
    flux = 10 ** (-0.4 * (body.mag - zero_point)) * cond.exposure_time * cond.transparency
    point_flux = flux * (1.0 - body.coma_fraction)
    stamps, x0, y0 = point_stamps(cond.psf, xs, ys)
    weights = np.full(k, point_flux / k, np.float32)
    if body.comet:
        offset = 0.5 * body.coma_r_eff
        cx = x + offset * math.cos(body.tail_angle)
        cy = y + offset * math.sin(body.tail_angle)
        batch = sersic_stamps(
            np.array([cx]), np.array([cy]), np.array([1.0]), np.array([body.coma_r_eff]),
            np.array([0.6]), np.array([body.tail_angle]), pad=cond.psf.radius,
        )
        coma, cx0, cy0, _ = batch.convolve(cond.psf)[0]
        pad = (coma.shape[1] - stamps.shape[1]) // 2
        if pad > 0:
            stamps = np.pad(stamps, ((0, 0), (pad, pad), (pad, pad)))
            x0, y0 = x0 - pad, y0 - pad
        else:
            coma = np.pad(coma, ((0, 0), (-pad, -pad), (-pad, -pad)))
            cx0, cy0 = cx0 + pad, cy0 + pad
        stamps = np.concatenate([stamps, coma])
        x0, y0 = np.concatenate([x0, cx0]), np.concatenate([y0, cy0])
        weights = np.append(weights, np.float32(flux * body.coma_fraction))
    signal, sx0, sy0 = canvas(stamps, x0, y0, weights)
    core = disk_core(signal.shape, sx0, sy0, np.array([xa, xb]), np.array([ya, yb]),
                     _core_radius(cond.psf))
    params = {
        "rate": body.rate,
        "angle": math.degrees(body.angle) % 360.0,
        "length": length,
        "x_start": xa,
        "y_start": ya,
        "x_end": xb,
        "y_end": yb,
        "sci_flux": flux,
        "ref_flux": 0.0,
        "peak_mag": body.mag,
    }
    obj = SimObject("moving", object_id, x, y, signal, sx0, sy0, float(flux), core=core,
                    subtype="comet" if body.comet else "asteroid", params=params)
    return obj if obj.crop(shape) else None

"""Genuine transients: supernovae, variable stars and moving objects.

Each generator draws the field-level parameters once (a light curve, an
orbit-like linear motion) and each science epoch then samples them at its MJD,
rendering the *change* against the reference with the epoch's PSF at the
epoch's (slightly misregistered) position.

Colours (used when a field is taken in several bands): magnitudes of the
generators are those of the field's main band; another band adds a colour from
a blackbody spectral energy distribution (:func:`astrid.simulate.scene.blackbody_colour`):

* supernovae have a colour temperature that depends on their type and phase
  (:data:`SN_COLOUR_TEMPERATURES`): a Ia is bluest near peak and reddens by
  about 1 mag in g-r over the following month; a II starts hot (blue) and cools
  onto its plateau; a Ib/c is redder at peak than a Ia;
* pulsating variables (``sine``, ``rrlyrae``) change temperature over their
  cycle (hotter when brighter, so the amplitude is larger in bluer bands);
  eclipsing binaries of equal-temperature components dim alike in every band;
* moving objects reflect sunlight (a 5800 K blackbody) with a reflectance
  slope ``∝ λ^γ`` (γ = 0 for C-type, up to 0.8 for red S-type asteroids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from astrid.simulate.labels import SimObject, canvas, disk_core
from astrid.simulate.psf import MoffatPSF, point_stamps
from astrid.simulate.scene import (
    HC_OVER_K,
    Conditions,
    blackbody_colour,
    draw_star_temperatures,
    sersic_stamps,
)

__all__ = [
    "SN_COLOUR_TEMPERATURES",
    "SN_TYPE_FRACTIONS",
    "SUN_TEMPERATURE",
    "MovingObject",
    "Supernova",
    "VariableStar",
    "bazin",
    "draw_colours",
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


SUN_TEMPERATURE = 5800.0
"""Colour temperature (K) of sunlight reflected by moving objects."""

SN_COLOUR_TEMPERATURES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # (days from the main-band peak, colour temperature in K); log T is interpolated
    # linearly and held at the ends. Tuned so that g-r (ZTF wavelengths) is about
    # -0.1 at a Ia's peak and +1.0 a month later, -0.3 for a young II cooling to
    # +0.6-0.8 on its plateau, and +0.3 at a Ib/c's peak.
    "Ia": ((-20.0, -10.0, -3.0, 0.0, 7.0, 15.0, 30.0, 60.0, 120.0),
           (7500.0, 10000.0, 11500.0, 11000.0, 8500.0, 5800.0, 4200.0, 4800.0, 5200.0)),
    "II": ((-15.0, -7.0, -2.0, 0.0, 5.0, 15.0, 30.0, 60.0, 120.0),
           (30000.0, 25000.0, 17000.0, 15000.0, 11000.0, 8000.0, 6000.0, 5000.0, 4800.0)),
    "Ibc": ((-20.0, -10.0, 0.0, 10.0, 20.0, 40.0, 120.0),
            (6000.0, 7500.0, 7000.0, 5500.0, 4500.0, 4400.0, 4600.0)),
}
"""Colour-temperature evolution of each supernova type."""

SN_TYPE_FRACTIONS: dict[str, float] = {"Ia": 0.7, "II": 0.2, "Ibc": 0.1}
"""Type mix of a magnitude-limited supernova sample (rounded from ZTF's Bright Transient Survey)."""


@dataclass(frozen=True)
class Supernova:
    """A supernova: position on the reference grid, host, Bazin light curve and type.

    ``peak_mag`` and the light curve are those of the field's main band;
    ``sn_type`` (a key of :data:`SN_COLOUR_TEMPERATURES`, empty when the field
    has one band) sets the colour in the other bands.
    """

    x: float
    y: float
    peak_mag: float
    t_peak: float
    tau_rise: float
    tau_fall: float
    host_x: float = math.nan
    host_y: float = math.nan
    host_r_eff: float = math.nan
    sn_type: str = ""

    def rate(self, mjd: float, zero_point: float, *, mag_offset: float = 0.0) -> float:
        """Electrons per second (at transparency 1) at ``mjd``, ``mag_offset`` fainter."""
        peak = 10 ** (-0.4 * (self.peak_mag + mag_offset - zero_point))
        lc = bazin(np.array([mjd]), t_peak=self.t_peak, tau_rise=self.tau_rise,
                   tau_fall=self.tau_fall)
        return float(peak * lc[0])

    def colour_temperature(self, mjd: float) -> float:
        """Colour temperature in K at ``mjd`` (needs ``sn_type``).

        Raises
        ------
        ValueError
            When the supernova has no known type.
        """
        if self.sn_type not in SN_COLOUR_TEMPERATURES:
            msg = f"supernova type {self.sn_type!r} has no colour; known: {sorted(SN_COLOUR_TEMPERATURES)}"
            raise ValueError(msg)
        phases, temps = SN_COLOUR_TEMPERATURES[self.sn_type]
        return float(np.exp(np.interp(mjd - self.t_peak, phases, np.log(temps))))

    def mag_offset(self, mjd: float, wavelength: float, main_wavelength: float) -> float:
        """Magnitude in the band at ``wavelength`` minus that in the main band, at ``mjd``."""
        return float(blackbody_colour(self.colour_temperature(mjd), wavelength, main_wavelength))

    def band_mag(self, mjd: float, wavelength: float, main_wavelength: float) -> float:
        """AB magnitude at ``mjd`` in the band at ``wavelength`` (nm)."""
        lc = bazin(np.array([mjd]), t_peak=self.t_peak, tau_rise=self.tau_rise,
                   tau_fall=self.tau_fall)[0]
        if not lc > 0:
            return math.inf
        return self.peak_mag + self.mag_offset(mjd, wavelength, main_wavelength) - 2.5 * math.log10(lc)


def _pulsation_temperature(
    delta_mag: np.ndarray, temperature: float, wavelength: float
) -> np.ndarray:
    """Temperatures at which a blackbody of fixed radius changes by ``delta_mag`` at ``wavelength``.

    Solves ``-2.5 log10(B(λ, T) / B(λ, T0)) = Δm`` for ``T`` by Newton steps in
    ``ln T`` (``d ln B / d ln T = x e^x / (e^x - 1)`` with ``x = hc / λkT``).
    """
    target = -0.4 * math.log(10.0) * np.asarray(delta_mag, dtype=float)  # ln(B / B0)
    x0 = HC_OVER_K / (wavelength * temperature)
    ln_t = np.full(target.shape, math.log(temperature))
    for _ in range(50):
        x = HC_OVER_K / (wavelength * np.exp(ln_t))
        ln_ratio = -(x + np.log1p(-np.exp(-x))) + (x0 + math.log1p(-math.exp(-x0)))
        slope = x / -np.expm1(-x)
        step = (ln_ratio - target) / slope
        ln_t -= step
        if np.all(np.abs(step) < 1e-10):
            break
    return np.exp(ln_t)


@dataclass(frozen=True)
class VariableStar:
    """A periodic variable: index of its star, mean magnitude, light curve and temperature.

    ``mean_mag`` and the light curve are those of the field's main band;
    ``temperature`` (K, NaN when the field has one band) is the star's
    temperature at its mean brightness and sets its colours.
    """

    star: int
    mean_mag: float
    amplitude: float
    period: float
    phase: float
    shape: str
    temperature: float = math.nan

    def mag(self, mjd: float) -> float:
        """Magnitude at ``mjd``."""
        off = periodic_shape(np.array([mjd / self.period + self.phase]), self.shape)[0]
        return float(self.mean_mag + self.amplitude * off)

    def reference_mag(self) -> float:
        """Magnitude of the phase-averaged flux (what a coadd of many epochs records)."""
        grid = np.linspace(0, 1, 512, endpoint=False)
        mags = self.mean_mag + self.amplitude * periodic_shape(grid, self.shape)
        return float(-2.5 * np.log10(np.mean(10 ** (-0.4 * mags))))

    def _band_mags(self, phases: np.ndarray, wavelength: float, main_wavelength: float) -> np.ndarray:
        """Magnitudes at the cycle ``phases`` in the band at ``wavelength``.

        A pulsator's main-band change comes from its temperature alone (fixed
        radius); an eclipsing binary of equal components dims alike in every band.
        """
        if not math.isfinite(self.temperature):
            msg = "the variable has no temperature: its field was simulated in one band"
            raise ValueError(msg)
        delta_main = self.amplitude * periodic_shape(phases, self.shape)
        colour = float(blackbody_colour(self.temperature, wavelength, main_wavelength))
        if self.shape == "eclipsing":
            return self.mean_mag + colour + delta_main
        temps = _pulsation_temperature(delta_main, self.temperature, main_wavelength)
        change = blackbody_colour(temps, wavelength, main_wavelength) - colour
        return self.mean_mag + colour + delta_main + change

    def band_mag(self, mjd: float, wavelength: float, main_wavelength: float) -> float:
        """AB magnitude at ``mjd`` in the band at ``wavelength`` (nm)."""
        phase = np.array([mjd / self.period + self.phase])
        return float(self._band_mags(phase, wavelength, main_wavelength)[0])

    def band_reference_mag(self, wavelength: float, main_wavelength: float) -> float:
        """Magnitude of the phase-averaged flux in the band at ``wavelength`` (nm)."""
        grid = np.linspace(0, 1, 512, endpoint=False)
        mags = self._band_mags(grid, wavelength, main_wavelength)
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
    reflectance_slope: float = 0.0

    def position(self, mjd: float, pixel_scale: float) -> tuple[float, float]:
        """Pixel position at ``mjd``."""
        d = self.rate * 24.0 * (mjd - self.mjd) / pixel_scale
        return self.x + d * math.cos(self.angle), self.y + d * math.sin(self.angle)

    def band_mag(self, wavelength: float, main_wavelength: float) -> float:
        """AB magnitude in the band at ``wavelength`` (nm): reflected sunlight, reflectance ∝ λ^γ."""
        solar = float(blackbody_colour(SUN_TEMPERATURE, wavelength, main_wavelength))
        return self.mag + solar - 2.5 * self.reflectance_slope * math.log10(wavelength / main_wavelength)


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


def draw_colours(
    rng: np.random.Generator,
    sne: list[Supernova],
    variables: list[VariableStar],
    bodies: list[MovingObject],
) -> tuple[list[Supernova], list[VariableStar], list[MovingObject]]:
    """Return copies of the transients with their colour parameters drawn.

    Supernova types follow :data:`SN_TYPE_FRACTIONS`; pulsating variables get
    instability-strip temperatures (6000-7500 K), eclipsing binaries field-star
    temperatures; asteroids are C-type (40 %, reflectance slope γ in -0.1-0.2)
    or S-type (γ in 0.4-0.8), comets' dust γ in 0-0.3.

    Examples
    --------
    >>> sn = Supernova(1.0, 1.0, 19.0, 10.0, 3.0, 30.0)
    >>> (typed,), _, _ = draw_colours(np.random.default_rng(0), [sn], [], [])
    >>> typed.sn_type in SN_TYPE_FRACTIONS
    True
    """
    names = list(SN_TYPE_FRACTIONS)
    types = rng.choice(len(names), size=len(sne), p=list(SN_TYPE_FRACTIONS.values()))
    sne = [replace(sn, sn_type=names[k]) for sn, k in zip(sne, types, strict=True)]
    strip = rng.uniform(6000.0, 7500.0, len(variables))
    field_stars = draw_star_temperatures(rng, len(variables))
    variables = [
        replace(v, temperature=float(field_stars[i] if v.shape == "eclipsing" else strip[i]))
        for i, v in enumerate(variables)
    ]
    c_type = rng.random(len(bodies)) < 0.4
    slopes = np.where(c_type, rng.uniform(-0.1, 0.2, len(bodies)), rng.uniform(0.4, 0.8, len(bodies)))
    dust = rng.uniform(0.0, 0.3, len(bodies))
    bodies = [replace(b, reflectance_slope=float(dust[i] if b.comet else slopes[i]))
              for i, b in enumerate(bodies)]
    return sne, variables, bodies


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

    Rates follow what a survey like ZTF detects near opposition: 10 % comets
    (1-30 "/h, uniform) with a coma of 1.5-4 FWHM; of the asteroids, 98 % in
    the main belt (log-normal rate around 30 "/h, i.e. 0.2 deg/day, with
    sigma 0.5 in ln, kept to 3-150 "/h, the slow end being bodies near their
    stationary points) and 2 % near-Earth objects (log-uniform 100-1500 "/h,
    trailed by up to 12" in a 30 s exposure).

    Examples
    --------
    >>> m = moving_objects(np.random.default_rng(0), 2, mjd=0.0, shape=(32, 32),
    ...                    limit_mag=21.0, fwhm=2.0)
    >>> len(m)
    2
    """
    out = []
    for _ in range(n):
        comet = bool(rng.random() < 0.10)
        if comet:
            rate = rng.uniform(1.0, 30.0)
        elif rng.random() < 0.02:
            rate = math.exp(rng.uniform(math.log(100.0), math.log(1500.0)))
        else:
            rate = float(np.clip(30.0 * math.exp(0.5 * rng.standard_normal()), 3.0, 150.0))
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

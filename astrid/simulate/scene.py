"""The static sky and the observing conditions of each exposure.

Stars follow a truncated power-law number count ``dN/dm ∝ 10^(slope·m)``
from a few magnitudes brighter than saturation to one magnitude below the 5σ
limit; galaxies are PSF-convolved Sérsic profiles with sizes that shrink with
magnitude. Each exposure has its own Moffat seeing, transparency, sky level
with a gradient and a small residual registration error (shift and rotation)
against the reference pixel grid.

Colours: every static source has an effective (colour) temperature and its
magnitude in another band follows a blackbody spectral energy distribution
(:func:`blackbody_colour`) at the bands' effective wavelengths. Stars sit on
the main-sequence locus (g-r reddens as the temperature falls: about -0.1 at
10000 K, 0.48 for the Sun, 1.4 at 3500 K with the ZTF wavelengths); galaxies
are red-sequence spheroids (g-r ~ 0.8) or blue-cloud discs (g-r ~ 0.3-0.5).
Blackbodies follow the real stellar locus to about 0.1 mag from A to early M
stars; M dwarfs' real r-i (molecular bands) is redder than a blackbody's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft
from scipy.special import gammaincinv

from astrid.simulate.psf import MoffatPSF
from astrid.surveys import SurveyPreset

__all__ = [
    "HC_OVER_K",
    "Conditions",
    "Depth",
    "SersicBatch",
    "blackbody_colour",
    "depth",
    "draw_conditions",
    "draw_galaxies",
    "draw_galaxy_temperatures",
    "draw_star_temperatures",
    "draw_stars",
    "expose",
    "sersic_stamps",
    "sky_image",
]


HC_OVER_K = 1.4388e7
"""h c / k in nm K (second radiation constant)."""


def _log_expm1(x: np.ndarray) -> np.ndarray:
    """``log(exp(x) - 1)`` without overflow for large ``x`` (x > 0)."""
    return x + np.log1p(-np.exp(-x))


def blackbody_colour(
    temperature: float | np.ndarray, wavelength: float, reference_wavelength: float
) -> np.ndarray:
    """AB magnitude at ``wavelength`` minus that at ``reference_wavelength`` of a blackbody.

    AB magnitudes measure ``f_nu``, so the colour is ``-2.5 log10(B_nu(λ) / B_nu(λ_ref))``
    with ``B_nu ∝ nu^3 / (exp(h nu / k T) - 1)``.

    Parameters
    ----------
    temperature : float or numpy.ndarray
        Effective (colour) temperature in K (> 0).
    wavelength, reference_wavelength : float
        Effective wavelengths of the two bands in nm.

    Returns
    -------
    numpy.ndarray
        Colour in magnitudes (positive: fainter at ``wavelength``), shaped like ``temperature``.

    Raises
    ------
    ValueError
        For a non-positive temperature or wavelength.

    Examples
    --------
    >>> round(float(blackbody_colour(5800.0, 480.0, 640.0)), 2)  # the Sun's g-r
    0.48
    >>> bool(blackbody_colour(3500.0, 480.0, 640.0) > blackbody_colour(10000.0, 480.0, 640.0))
    True
    """
    t = np.asarray(temperature, dtype=float)
    if not (np.all(t > 0) and wavelength > 0 and reference_wavelength > 0):
        msg = (f"temperature and wavelengths must be positive, got T={temperature!r}, "
               f"wavelengths {wavelength!r}, {reference_wavelength!r}")
        raise ValueError(msg)
    ln_ratio = (-3.0 * math.log(wavelength / reference_wavelength)
                - _log_expm1(HC_OVER_K / (wavelength * t))
                + _log_expm1(HC_OVER_K / (reference_wavelength * t)))
    return -2.5 / math.log(10.0) * ln_ratio


def draw_star_temperatures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw effective temperatures (K) of field stars at mid to high Galactic latitude.

    A mix of thick-disc and halo main-sequence turn-off stars (55 %, about
    6300 ± 500 K), K and M dwarfs (35 %, log-uniform 3200-5200 K) and hot A/F
    stars (10 %, log-uniform 7500-11000 K).

    Examples
    --------
    >>> t = draw_star_temperatures(np.random.default_rng(0), 1000)
    >>> bool(3000 < t.min() and t.max() < 12000)
    True
    """
    kind = rng.random(n)
    turnoff = np.clip(rng.normal(6300.0, 500.0, n), 5000.0, 8000.0)
    cool = np.exp(rng.uniform(math.log(3200.0), math.log(5200.0), n))
    hot = np.exp(rng.uniform(math.log(7500.0), math.log(11000.0), n))
    return np.where(kind < 0.55, turnoff, np.where(kind < 0.9, cool, hot))


def draw_galaxy_temperatures(rng: np.random.Generator, sersic_n: np.ndarray) -> np.ndarray:
    """Draw colour temperatures (K) of galaxies from their Sérsic index.

    Spheroids (``n >= 2``) lie on the red sequence (4800 ± 150 K, g-r ~ 0.75),
    discs in the blue cloud (6300 ± 600 K, g-r ~ 0.2-0.55).

    Examples
    --------
    >>> t = draw_galaxy_temperatures(np.random.default_rng(0), np.array([4.0, 1.0]))
    >>> bool(t[0] < t[1])
    True
    """
    n_index = np.asarray(sersic_n, dtype=float)
    red = rng.normal(4800.0, 150.0, n_index.size)
    blue = np.clip(rng.normal(6300.0, 600.0, n_index.size), 5000.0, 9000.0)
    return np.where(n_index >= 2.0, red, blue)


@dataclass(frozen=True)
class Depth:
    """Photometric depth of a single median-seeing science exposure.

    Attributes
    ----------
    limit_mag : float
        5σ point-source limit (AB).
    saturation_mag : float
        Magnitude whose peak pixel reaches saturation.
    pixel_sigma : float
        Sky + dark + read noise per pixel in electrons.
    """

    limit_mag: float
    saturation_mag: float
    pixel_sigma: float


def depth(survey: SurveyPreset, band: str | None = None) -> Depth:
    """Return the 5σ limit and saturation magnitude of a median science exposure.

    Examples
    --------
    >>> from astrid.surveys import get_survey
    >>> d = depth(get_survey("ztf"), "r")
    >>> 20 < d.limit_mag < 22 and d.saturation_mag < 15
    True
    """
    t = survey.exposure_time
    sky = survey.sky_electrons(band)
    var = sky + survey.dark_current * t + survey.read_noise**2
    stamp = MoffatPSF(survey.seeing_median / survey.pixel_scale).stamp()
    n_eff = 1.0 / float(np.sum(stamp.astype(np.float64) ** 2))
    flux = (25.0 + math.sqrt(625.0 + 100.0 * var * n_eff)) / 2.0
    zp = survey.band(band).zero_point
    limit = zp - 2.5 * math.log10(flux / t)
    full_well = survey.saturation * survey.gain - sky
    saturation = zp - 2.5 * math.log10(full_well / float(stamp.max()) / t)
    return Depth(limit_mag=limit, saturation_mag=saturation, pixel_sigma=math.sqrt(var))


@dataclass(frozen=True)
class Conditions:
    """How one exposure (or the reference coadd) was taken.

    Attributes
    ----------
    mjd : float
        Mid-exposure MJD.
    psf : MoffatPSF
        The exposure's PSF.
    seeing : float
        FWHM in arcsec.
    transparency : float
        Flux throughput relative to the reference (1 for the reference).
    sky : float
        Mean sky electrons per pixel (summed over the coadded exposures).
    sky_gradient : tuple of float
        Fractional sky change per image width along x and y.
    shift : tuple of float
        Residual registration shift (dx, dy) in pixels against the reference grid.
    rotation : float
        Residual rotation in radians about the image centre.
    exposure_time : float
        Seconds per exposure.
    n_exposures : int
        Number of coadded exposures (1 for a science epoch).
    """

    mjd: float
    psf: MoffatPSF
    seeing: float
    transparency: float
    sky: float
    sky_gradient: tuple[float, float]
    shift: tuple[float, float]
    rotation: float
    exposure_time: float
    n_exposures: int = 1

    def transform(self, x: np.ndarray, y: np.ndarray, shape: tuple[int, int]):
        """Map reference-grid positions to where this exposure puts them (same grid).

        Examples
        --------
        >>> c = Conditions(0.0, MoffatPSF(2.0), 2.0, 1.0, 100.0, (0, 0), (0.1, 0.0), 0.0, 30.0)
        >>> c.transform(np.array([5.0]), np.array([5.0]), (11, 11))[0].tolist()
        [5.1]
        """
        cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        dx, dy = np.asarray(x, float) - cx, np.asarray(y, float) - cy
        return cx + c * dx - s * dy + self.shift[0], cy + s * dx + c * dy + self.shift[1]


def draw_conditions(
    survey: SurveyPreset,
    band: str | None,
    rng: np.random.Generator,
    *,
    mjd: float,
    reference: bool = False,
    registration_sigma: float = 0.1,
    rotation_sigma: float = 1.5e-4,
) -> Conditions:
    """Draw seeing, transparency, sky and registration error for one exposure.

    The reference is a coadd of ``survey.reference_exposures`` exposures with
    seeing ``reference_seeing_factor`` × median, nominal sky, transparency 1
    and no registration error (it defines the grid).

    Examples
    --------
    >>> from astrid.surveys import get_survey
    >>> c = draw_conditions(get_survey("ztf"), None, np.random.default_rng(0), mjd=0.0)
    >>> 0.3 <= c.transparency <= 1.0
    True
    """
    t = survey.exposure_time
    if reference:
        n_exp = survey.reference_exposures
        seeing = survey.seeing_median * survey.reference_seeing_factor * rng.lognormal(0, 0.03)
        beta = rng.uniform(2.8, 3.5)
        ellip = rng.uniform(0.0, 0.03)
        transparency, sky_mag_offset = 1.0, 0.0
        shift, rotation = (0.0, 0.0), 0.0
    else:
        n_exp = 1
        seeing = survey.seeing_median * rng.lognormal(0.0, survey.seeing_scatter)
        beta = rng.uniform(2.5, 4.0)
        ellip = rng.uniform(0.0, 0.12)
        transparency = float(max(0.3, math.exp(-rng.exponential(0.08))))
        sky_mag_offset = rng.normal(0.0, 0.25)
        shift = (float(rng.normal(0, registration_sigma)), float(rng.normal(0, registration_sigma)))
        rotation = float(rng.normal(0.0, rotation_sigma))
    angle = rng.uniform(0.0, math.pi)
    sky = survey.sky_electrons(band) * 10 ** (-0.4 * sky_mag_offset) * n_exp
    grad = rng.normal(0.0, 0.02, size=2)
    psf = MoffatPSF(seeing / survey.pixel_scale, beta=beta, ellipticity=ellip, angle=angle)
    return Conditions(
        mjd=float(mjd),
        psf=psf,
        seeing=float(seeing),
        transparency=transparency,
        sky=float(sky),
        sky_gradient=(float(grad[0]), float(grad[1])),
        shift=shift,
        rotation=rotation,
        exposure_time=t,
        n_exposures=n_exp,
    )


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Draw ``n`` magnitudes in [lo, hi] with dN/dm ∝ 10^(slope·m)."""
    u = rng.random(n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def draw_stars(
    survey: SurveyPreset,
    band: str | None,
    rng: np.random.Generator,
    *,
    shape: tuple[int, int],
    n: int | None = None,
    slope: float = 0.35,
) -> pd.DataFrame:
    """Draw stars with a power-law number count from saturated to 1 mag below the limit.

    When ``n`` is None the count is Poisson around a density of
    ``N(<20 mag)`` per deg², drawn log-uniformly in 1500-8000 (mid to high
    Galactic latitude), extrapolated with ``slope``.

    Returns
    -------
    pandas.DataFrame
        Columns ``x``, ``y`` (reference pixels), ``mag`` and ``rate`` (e-/s).

    Examples
    --------
    >>> from astrid.surveys import get_survey
    >>> s = draw_stars(get_survey("ztf"), None, np.random.default_rng(1), shape=(32, 32), n=5)
    >>> list(s.columns), len(s)
    (['x', 'y', 'mag', 'rate'], 5)
    """
    d = depth(survey, band)
    lo, hi = d.saturation_mag - 3.0, d.limit_mag + 1.0
    if n is None:
        area = shape[0] * shape[1] * (survey.pixel_scale / 3600.0) ** 2
        n20 = math.exp(rng.uniform(math.log(1500.0), math.log(8000.0)))
        n = int(rng.poisson(n20 * 10 ** (slope * (hi - 20.0)) * area))
    mags = _power_law_mags(rng, n, lo, hi, slope)
    return pd.DataFrame(
        {
            "x": rng.uniform(-0.5, shape[1] - 0.5, n),
            "y": rng.uniform(-0.5, shape[0] - 0.5, n),
            "mag": mags,
            "rate": [survey.electrons_per_second(m, band) for m in mags],
        }
    )


def draw_galaxies(
    survey: SurveyPreset,
    band: str | None,
    rng: np.random.Generator,
    *,
    shape: tuple[int, int],
    n: int | None = None,
    mag_range: tuple[float, float] | None = None,
    xy: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Draw Sérsic galaxies (discs and spheroids) with magnitude-dependent sizes.

    Counts follow ``dN/dm ∝ 10^(0.4 m)`` normalised to about 1.2e4 per deg²
    brighter than 22 mag; half-light radii are ``1.6" × 10^(-0.1 (m - 20))``
    with 0.3 dex log-normal scatter; 60 % are discs (n = 0.7-1.5), 40 %
    spheroids (n = 2.5-4).

    Returns
    -------
    pandas.DataFrame
        ``x``, ``y``, ``mag``, ``rate`` (e-/s), ``sersic_n``, ``r_eff`` (px),
        ``axis_ratio``, ``angle`` (rad).

    Examples
    --------
    >>> from astrid.surveys import get_survey
    >>> g = draw_galaxies(get_survey("ztf"), None, np.random.default_rng(0), shape=(32, 32), n=3)
    >>> len(g), bool((g.r_eff > 0).all())
    (3, True)
    """
    d = depth(survey, band)
    lo, hi = mag_range if mag_range is not None else (d.limit_mag - 6.0, d.limit_mag + 0.5)
    if n is None:
        area = shape[0] * shape[1] * (survey.pixel_scale / 3600.0) ** 2
        n = int(rng.poisson(1.2e4 * 10 ** (0.4 * (hi - 22.0)) * area))
    mags = _power_law_mags(rng, n, lo, hi, 0.4)
    disc = rng.random(n) < 0.6
    sersic = np.where(disc, rng.uniform(0.7, 1.5, n), rng.uniform(2.5, 4.0, n))
    r_eff = 1.6 * 10 ** (-0.1 * (mags - 20.0)) * 10 ** rng.normal(0, 0.3, n) / survey.pixel_scale
    if xy is None:
        x, y = rng.uniform(-0.5, shape[1] - 0.5, n), rng.uniform(-0.5, shape[0] - 0.5, n)
    else:
        x, y = xy
    return pd.DataFrame(
        {
            "x": x,
            "y": y,
            "mag": mags,
            "rate": [survey.electrons_per_second(m, band) for m in mags],
            "sersic_n": sersic,
            "r_eff": np.clip(r_eff, 0.3, 40.0),
            "axis_ratio": rng.uniform(0.3, 1.0, n),
            "angle": rng.uniform(0, math.pi, n),
        }
    )


_SIZES = (6, 10, 16, 24, 32, 48, 64)


@dataclass
class SersicBatch:
    """Unit-flux Sérsic profiles, rendered once and convolved with any PSF and sub-pixel shift.

    Build it with :func:`sersic_stamps`. Profiles are held as the Fourier
    transforms of zero-padded stamps, grouped by stamp size, so convolving all
    galaxies with a PSF (and shifting each by its own sub-pixel offset, as a
    residual registration error does) costs one batched inverse FFT per group.
    """

    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    pad: int
    size: int

    def convolve(
        self,
        psf: MoffatPSF,
        *,
        dx: np.ndarray | None = None,
        dy: np.ndarray | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Return ``(stamps, x0, y0, index)`` groups convolved with ``psf`` and shifted.

        Parameters
        ----------
        psf : MoffatPSF
            PSF with ``radius <= pad``.
        dx, dy : numpy.ndarray, optional
            Per-galaxy shifts in pixels (``|shift| <= pad - psf.radius``).

        Raises
        ------
        ValueError
            If the PSF stamp does not fit in the padding.
        """
        if psf.radius > self.pad:
            msg = f"psf radius {psf.radius} exceeds the stamp padding {self.pad}"
            raise ValueError(msg)
        kernel = psf.stamp()
        out = []
        for spec, x0, y0, idx in self.groups:
            n_side = (spec.shape[1])
            ker = np.zeros((n_side, n_side), np.float64)
            r = kernel.shape[0] // 2
            ker[: r + 1, : r + 1] = kernel[r:, r:]
            ker[: r + 1, -r:] = kernel[r:, :r]
            ker[-r:, : r + 1] = kernel[:r, r:]
            ker[-r:, -r:] = kernel[:r, :r]
            prod = spec * scipy.fft.rfft2(ker.astype(np.float32))[None]
            if dx is not None or dy is not None:
                ky = np.fft.fftfreq(n_side).astype(np.float32)[None, :, None]
                kx = np.fft.rfftfreq(n_side).astype(np.float32)[None, None, :]
                sx = np.zeros(idx.size) if dx is None else np.asarray(dx, float)[idx]
                sy = np.zeros(idx.size) if dy is None else np.asarray(dy, float)[idx]
                sx = sx.astype(np.float32)[:, None, None]
                sy = sy.astype(np.float32)[:, None, None]
                prod = prod * np.exp(np.complex64(-2j * np.pi) * (kx * sx + ky * sy))
            conv = scipy.fft.irfft2(prod, s=(n_side, n_side)).astype(np.float32)
            np.clip(conv, 0.0, None, out=conv)
            conv /= conv.sum(axis=(1, 2), keepdims=True)
            out.append((conv, x0, y0, idx))
        return out


def sersic_stamps(
    x: np.ndarray,
    y: np.ndarray,
    sersic_n: np.ndarray,
    r_eff: np.ndarray,
    axis_ratio: np.ndarray,
    angle: np.ndarray,
    *,
    pad: int,
) -> SersicBatch:
    """Render unit-flux Sérsic profiles ready to be convolved with PSFs.

    Profiles are sampled 3× per axis, binned, truncated at about 4 half-light
    radii (at most 64 px), normalised, and zero-padded by ``pad`` pixels (at
    least the largest PSF radius to be used) before their FFTs are stored.

    Examples
    --------
    >>> b = sersic_stamps(np.array([8.0]), np.array([8.0]), np.array([1.0]), np.array([2.0]),
    ...                   np.array([1.0]), np.array([0.0]), pad=8)
    >>> stamps, x0, y0, idx = b.convolve(MoffatPSF(2.0))[0]
    >>> round(float(stamps.sum()), 4), stamps.shape[1] == stamps.shape[2]
    (1.0, True)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    groups: list = []
    if x.size == 0:
        return SersicBatch(groups, int(pad), 0)
    need = np.ceil(4.0 * r_eff / np.sqrt(np.clip(axis_ratio, 0.1, 1))) + 2
    size_class = np.searchsorted(_SIZES, np.minimum(need, _SIZES[-1]))
    bn = gammaincinv(2.0 * sersic_n, 0.5)
    for k in np.unique(size_class):
        idx = np.flatnonzero(size_class == k)
        h = _SIZES[k]
        os_ = 3 if h <= 10 else 1  # small (cuspy, undersampled) profiles are oversampled 3x
        ix, iy = np.rint(x[idx]).astype(np.int64), np.rint(y[idx]).astype(np.int64)
        f32 = np.float32
        fx, fy = (x[idx] - ix).astype(f32)[:, None, None], (y[idx] - iy).astype(f32)[:, None, None]
        g = (np.arange(-h * os_, (h + 1) * os_, dtype=f32) - (os_ - 1) / 2) / os_
        du = g[None, None, :] - fx
        dv = g[None, :, None] - fy
        c = np.cos(angle[idx]).astype(f32)[:, None, None]
        s = np.sin(angle[idx]).astype(f32)[:, None, None]
        q = axis_ratio[idx].astype(f32)[:, None, None]
        u = du * c + dv * s
        v = -du * s + dv * c
        r2 = (u * u * q + v * v / q) / (r_eff[idx].astype(f32) ** 2)[:, None, None]
        inv2n = (0.5 / sersic_n[idx]).astype(f32)[:, None, None]
        prof = np.exp(-bn[idx].astype(f32)[:, None, None] * (np.exp(np.log(r2 + f32(1e-12)) * inv2n)
                                                             - 1.0))
        m = prof.shape[1] // os_
        prof = prof.reshape(idx.size, m, os_, m, os_).sum(axis=(2, 4))
        prof /= prof.sum(axis=(1, 2), keepdims=True)
        prof = np.pad(prof, ((0, 0), (pad, pad), (pad, pad)))
        half = prof.shape[1] // 2
        groups.append((scipy.fft.rfft2(prof), ix - half, iy - half, idx))
    return SersicBatch(groups, int(pad), int(x.size))


def sky_image(conditions: Conditions, shape: tuple[int, int]) -> np.ndarray:
    """Return the sky electrons per pixel with a linear gradient (float32).

    Examples
    --------
    >>> c = Conditions(0.0, MoffatPSF(2.0), 2.0, 1.0, 100.0, (0.02, 0.0), (0, 0), 0.0, 30.0)
    >>> float(sky_image(c, (4, 8)).mean())
    100.0
    """
    ny, nx = shape
    gx = np.linspace(-0.5, 0.5, nx, dtype=np.float32) * conditions.sky_gradient[0]
    gy = np.linspace(-0.5, 0.5, ny, dtype=np.float32) * conditions.sky_gradient[1]
    return (conditions.sky * (1.0 + gy[:, None] + gx[None, :])).astype(np.float32)


def expose(
    expected: np.ndarray,
    rng: np.random.Generator,
    *,
    survey: SurveyPreset,
    n_exposures: int = 1,
) -> np.ndarray:
    """Turn expected electrons into a calibrated noisy image in electrons.

    Adds dark current, draws Poisson counts, subtracts the mean dark (as a
    dark-calibrated frame does) and adds Gaussian read noise, all for the sum
    of ``n_exposures`` exposures.

    Examples
    --------
    >>> from astrid.surveys import get_survey
    >>> img = expose(np.full((64, 64), 1000.0), np.random.default_rng(0), survey=get_survey("ztf"))
    >>> 900 < float(img.mean()) < 1100
    True
    """
    dark = survey.dark_current * survey.exposure_time * n_exposures
    counts = rng.poisson(np.asarray(expected, np.float64) + dark).astype(np.float32)
    read = rng.standard_normal(counts.shape, dtype=np.float32)
    counts += read * np.float32(survey.read_noise * math.sqrt(n_exposures)) - np.float32(dark)
    return counts

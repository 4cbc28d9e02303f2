"""Simulate one field: a reference coadd and its science epochs with full truth.

Units: images are float32 ADU with sky, as a survey delivers them; truth that
lives in the difference (``ideal_difference``, ``variance``, catalogue fluxes)
is in electrons of the science epoch. The *ideal difference* is the noise-free
science image minus the noise-free reference rendered with the science PSF at
the science transparency (a perfect PSF-matching subtraction): it holds the
transients, the artifacts, the registration residuals of static sources and the
saturation residuals, and nothing else.

Several bands: with ``bands=("g", "r", "i")`` each science epoch is taken in
one band, cycling through the bands within a night (exposures 15-60 minutes
apart, so moving objects move between bands; nights 1-5 days apart), and each
band has its own reference coadd. Sources get their colours from spectral
energy distributions (:mod:`astrid.simulate.scene`, :mod:`astrid.simulate.transients`);
magnitudes drawn by the generators are those of the main band (``band``).
Without ``bands`` a field is taken in one band exactly as before.

Survey-like cadence (both off by default, so every existing dataset stays the
same byte for byte): ``visits_per_night=2`` takes the epochs in nights of two
visits 30-60 minutes apart, as ZTF revisits a field within a night so that
asteroids can be linked (bands still cycle from epoch to epoch: g and r in the
same night give a colour); ``hot_pixels_fixed=True`` puts a field's hot pixels
at the same detector pixels with the same charge in every epoch, as a real
detector's are, instead of drawing new ones per epoch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from astropy.time import Time
from scipy import ndimage

from astrid.simulate.artifacts import (
    bad_columns,
    bleed,
    cosmic_rays,
    dipole,
    hot_pixels,
    satellite_trails,
)
from astrid.simulate.labels import SimObject, build_labels
from astrid.simulate.psf import MoffatPSF, add_stamps, point_stamps
from astrid.simulate.scene import (
    Conditions,
    Depth,
    SersicBatch,
    blackbody_colour,
    depth,
    draw_conditions,
    draw_galaxies,
    draw_galaxy_temperatures,
    draw_star_temperatures,
    draw_stars,
    expose,
    sersic_stamps,
    sky_image,
)
from astrid.simulate.transients import (
    draw_colours,
    moving_objects,
    render_moving,
    render_point,
    supernovae,
    variable_stars,
)
from astrid.surveys import SurveyPreset, get_survey

__all__ = [
    "SimulatedEpoch",
    "SimulatedField",
    "SimulatedReference",
    "check_parameters",
    "simulate_field",
]

Count = int | tuple[int, int] | list[int] | None


@dataclass
class SimulatedEpoch:
    """One science epoch of a field with its truth.

    Attributes
    ----------
    science : numpy.ndarray
        float32 ADU with sky, on the reference pixel grid.
    psf : numpy.ndarray
        True PSF stamp (odd, centred, sums to 1).
    class_map : numpy.ndarray
        uint8 codes of :data:`astrid.classes.CLASS_NAMES`.
    instance_map : numpy.ndarray
        int32, 0 = none, else the catalogue row's ``instance``.
    catalog : pandas.DataFrame
        One row per labelled object (see :data:`labels.CATALOG_COLUMNS`).
    ideal_difference : numpy.ndarray
        Noise-free science minus PSF-matched reference, e- of this epoch (float32).
    variance : numpy.ndarray
        Per-pixel variance of the difference noise, e-² (float32).
    header : dict
        FITS keywords of the science image.
    mjd : float
        Mid-exposure MJD.
    conditions : Conditions
        Seeing, transparency, sky and registration error of the exposure.
    band : str
        Photometric band of the exposure.
    objects : list of SimObject
        The labelled objects with their noise-free signals and masks.
    """

    science: np.ndarray
    psf: np.ndarray
    class_map: np.ndarray
    instance_map: np.ndarray
    catalog: pd.DataFrame
    ideal_difference: np.ndarray
    variance: np.ndarray
    header: dict[str, Any]
    mjd: float
    conditions: Conditions
    band: str
    objects: list[SimObject] = field(default_factory=list, repr=False)

    @property
    def noise_sigma(self) -> np.ndarray:
        """Per-pixel standard deviation of the difference noise (e-)."""
        return np.sqrt(self.variance)


@dataclass
class SimulatedReference:
    """The reference coadd of one band.

    Attributes
    ----------
    band : str
        Photometric band.
    image : numpy.ndarray
        float32 ADU coadd with sky.
    psf : numpy.ndarray
        Its PSF stamp.
    header : dict
        FITS keywords.
    conditions : Conditions
        How it was taken.
    """

    band: str
    image: np.ndarray
    psf: np.ndarray
    header: dict[str, Any]
    conditions: Conditions


@dataclass
class SimulatedField:
    """A field: its reference coadd, its science epochs and the static scene.

    Attributes
    ----------
    survey : SurveyPreset
        The preset used.
    band : str
        Main photometric band (the band of ``reference`` and of the generators' magnitudes).
    reference : numpy.ndarray
        float32 ADU coadd (mean of ``reference_exposures`` exposures) with sky.
    psf_reference : numpy.ndarray
        The reference PSF stamp.
    reference_header : dict
        FITS keywords of the reference.
    reference_conditions : Conditions
        How the reference was taken.
    epochs : list of SimulatedEpoch
        The science epochs in time order.
    stars, galaxies : pandas.DataFrame
        The static scene on the reference grid (``rate`` in e-/s of the main
        band; with several bands also ``temperature`` in K and ``mag_<band>``).
    ra, dec : float
        Field centre in degrees.
    bands : tuple of str
        The bands of the epochs (``(band,)`` for a one-band field).
    references : dict
        Band -> :class:`SimulatedReference` (the main band's is ``reference`` above).
    """

    survey: SurveyPreset
    band: str
    reference: np.ndarray
    psf_reference: np.ndarray
    reference_header: dict[str, Any]
    reference_conditions: Conditions
    epochs: list[SimulatedEpoch]
    stars: pd.DataFrame = field(repr=False)
    galaxies: pd.DataFrame = field(repr=False)
    ra: float = 0.0
    dec: float = 0.0
    bands: tuple[str, ...] = ()
    references: dict[str, SimulatedReference] = field(default_factory=dict, repr=False)


FIELD_COUNTS = ("n_stars", "n_galaxies", "n_supernovae", "n_variables", "n_saturated")
EPOCH_COUNTS = ("n_moving", "n_cosmic_rays", "n_hot_pixels", "n_satellites", "n_bad_columns")


def _check_count(name: str, value: Count, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, list | tuple):
        ok = len(value) == 2 and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
        )
        if ok and 0 <= value[0] <= value[1]:
            return
    elif isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0:
        return
    msg = (
        f"{name} must be a non-negative int or a (low, high) pair of them"
        f"{' or None' if allow_none else ''}, got {value!r}"
    )
    raise ValueError(msg)


def _draw_count(value: Count, rng: np.random.Generator) -> int | None:
    if value is None or isinstance(value, int | np.integer):
        return None if value is None else int(value)
    return int(rng.integers(value[0], value[1] + 1))


def _seed_sequence(seed: int | np.random.Generator | np.random.SeedSequence | None):
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(0, 2**63)))
    if seed is not None and (not isinstance(seed, int | np.integer) or isinstance(seed, bool)):
        msg = f"seed must be None, an int, a SeedSequence or a numpy Generator, got {seed!r}"
        raise ValueError(msg)
    if seed is not None and seed < 0:
        msg = f"seed must be non-negative, got {seed}"
        raise ValueError(msg)
    return np.random.SeedSequence(seed)


def _star_radii(flux: np.ndarray, psf: MoffatPSF, sigma: float) -> np.ndarray:
    """Stamp half-size per star: wings are drawn until they fall below 0.05 σ."""
    peak = (psf.beta - 1.0) / (math.pi * psf.alpha**2)
    ratio = np.maximum(flux * peak / (0.05 * sigma), 1.0)
    need = psf.alpha * np.sqrt(np.maximum(ratio ** (1.0 / psf.beta) - 1.0, 0.0))
    tiers = np.array([max(3, math.ceil(2.0 * psf.fwhm)), psf.radius] + [
        psf.radius * k for k in (2, 4, 8, 16)
    ])
    return tiers[np.minimum(np.searchsorted(tiers, need), tiers.size - 1)]


def _render_static(
    shape: tuple[int, int],
    xs: np.ndarray,
    ys: np.ndarray,
    star_flux: np.ndarray,
    radii: np.ndarray,
    galaxies: SersicBatch,
    gal_flux: np.ndarray,
    psf: MoffatPSF,
    *,
    gal_shift: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    image = np.zeros(shape, np.float32)
    for r in np.unique(radii):
        sel = radii == r
        stamps, x0, y0 = point_stamps(psf, xs[sel], ys[sel], radius=int(r))
        add_stamps(image, stamps, x0, y0, weights=star_flux[sel])
    dx, dy = gal_shift if gal_shift is not None else (None, None)
    for stamps, x0, y0, idx in galaxies.convolve(psf, dx=dx, dy=dy):
        add_stamps(image, stamps, x0, y0, weights=gal_flux[idx])
    return image


def _header(
    survey: SurveyPreset,
    band: str,
    cond: Conditions,
    *,
    shape: tuple[int, int],
    ra: float,
    dec: float,
    field_id: int,
    epoch: int,
) -> dict[str, Any]:
    n = cond.n_exposures
    gain = survey.gain * n
    t = cond.exposure_time
    dark = survey.dark_current * t * n
    sky_var = cond.sky + dark + n * survey.read_noise**2
    zp = survey.band(band).zero_point + 2.5 * math.log10(cond.transparency * t / survey.gain)
    scale = survey.pixel_scale / 3600.0
    return {
        "BUNIT": ("adu", "pixel unit"),
        "IMAGETYP": ("reference" if epoch < 0 else "science", "coadd reference or single epoch"),
        "SURVEY": (survey.name, "survey preset"),
        "BAND": (band, "photometric band"),
        "FILTER": (band, "photometric band"),
        "FIELD": (int(field_id), "field number"),
        "EPOCH": (int(epoch), "science epoch (-1: reference)"),
        "CTYPE1": ("RA---TAN", ""),
        "CTYPE2": ("DEC--TAN", ""),
        "CUNIT1": ("deg", ""),
        "CUNIT2": ("deg", ""),
        "CRPIX1": ((shape[1] + 1) / 2.0, "reference pixel (1-based)"),
        "CRPIX2": ((shape[0] + 1) / 2.0, "reference pixel (1-based)"),
        "CRVAL1": (float(ra), "RA at CRPIX [deg]"),
        "CRVAL2": (float(dec), "Dec at CRPIX [deg]"),
        "CD1_1": (-scale, "deg per pixel"),
        "CD1_2": (0.0, ""),
        "CD2_1": (0.0, ""),
        "CD2_2": (scale, "deg per pixel"),
        "RADESYS": ("ICRS", ""),
        "EQUINOX": (2000.0, ""),
        "GAIN": (float(gain), "effective gain [e-/ADU]"),
        "RDNOISE": (float(survey.read_noise * math.sqrt(n)), "effective read noise [e-]"),
        "SATURATE": (float(survey.saturation), "saturation level [ADU]"),
        "SEEING": (float(cond.seeing), "PSF FWHM [arcsec]"),
        "FWHMPIX": (float(cond.psf.fwhm), "PSF FWHM [pixel]"),
        "PSFBETA": (float(cond.psf.beta), "Moffat beta"),
        "PSFELLIP": (float(cond.psf.ellipticity), "PSF ellipticity 1-b/a"),
        "PSFANGLE": (float(math.degrees(cond.psf.angle)), "PSF major axis angle [deg]"),
        "MJD": (float(cond.mjd), "mid-exposure MJD"),
        "MJD-OBS": (float(cond.mjd), "mid-exposure MJD"),
        "DATE-OBS": (Time(cond.mjd, format="mjd", scale="utc").isot, "mid-exposure UTC"),
        "EXPTIME": (float(t * n), "total exposure [s]"),
        "NCOMBINE": (int(n), "exposures combined"),
        "ZP": (float(zp), "AB magnitude of 1 ADU"),
        "SKYLEVEL": (float(cond.sky / gain), "mean sky [ADU]"),
        "SKYSIG": (float(math.sqrt(sky_var) / gain), "sky noise [ADU]"),
        "TRANSP": (float(cond.transparency), "true transparency vs reference"),
        "REGDX": (float(cond.shift[0]), "true residual registration dx [pixel]"),
        "REGDY": (float(cond.shift[1]), "true residual registration dy [pixel]"),
        "REGROT": (float(cond.rotation), "true residual rotation [rad]"),
    }


def _epoch_mjds(rng: np.random.Generator, n: int, n_bands: int = 1,
                visits_per_night: int | None = None) -> tuple[float, list[float]]:
    """First epoch in 2018-2022, then revisits; returns the reference MJD and the epochs'.

    With ``visits_per_night``: nights of that many epochs, 30-60 minutes apart,
    each night 1-5 nights after the last. Otherwise, one band: each revisit is
    the same night (30 %) or 1-5 nights later; several bands: the epochs cycle
    through the bands, 15-60 minutes apart within a night, and a new cycle
    starts 1-5 nights later.
    """
    mjd = 58300.0 + rng.uniform(0.0, 1500.0)
    mjds = [mjd]
    for k in range(1, n):
        if visits_per_night is not None:
            gap = rng.uniform(30.0, 60.0) / 1440.0 if k % visits_per_night else rng.uniform(1.0, 5.0)
        elif n_bands > 1:
            gap = rng.uniform(15.0, 60.0) / 1440.0 if k % n_bands else rng.uniform(1.0, 5.0)
        else:
            gap = rng.uniform(0.02, 0.08) if rng.random() < 0.3 else rng.uniform(1.0, 5.0)
        mjds.append(mjds[-1] + gap)
    return mjd - rng.uniform(60.0, 400.0), mjds


def _band_list(bands: Sequence[str] | None, band: str | None, preset: SurveyPreset) -> tuple[str, ...]:
    """Return the field's bands (validated): ``bands``, or ``(band,)`` for one band."""
    if bands is None:
        return (band or preset.default_band,)
    if isinstance(bands, str) or not isinstance(bands, Sequence) or not bands:
        msg = f"bands must be None or a non-empty sequence of band names, got {bands!r}"
        raise ValueError(msg)
    names = tuple(str(b) for b in bands)
    if len(set(names)) != len(names):
        msg = f"bands must be distinct, got {list(names)}"
        raise ValueError(msg)
    for name in names:
        if name not in preset.bands:
            msg = f"bands: band {name!r} not in survey {preset.name!r}; known: {sorted(preset.bands)}"
            raise ValueError(msg)
        if len(names) > 1 and preset.bands[name].wavelength is None:
            msg = f"bands: band {name!r} of survey {preset.name!r} has no wavelength, so no colours"
            raise ValueError(msg)
    if band is not None and band not in names:
        msg = f"band {band!r} must be one of bands {list(names)}"
        raise ValueError(msg)
    return names


def _main_band(bands: tuple[str, ...], band: str | None, preset: SurveyPreset) -> str:
    if band is not None:
        return band
    return preset.default_band if preset.default_band in bands else bands[0]


def check_parameters(survey: str | SurveyPreset, **params: Any) -> tuple[SurveyPreset, str]:
    """Validate :func:`simulate_field` parameters; return the preset and the (main) band.

    Raises
    ------
    ValueError
        Naming the first bad or unknown parameter.

    Examples
    --------
    >>> check_parameters("ztf", image_size=64)[1]
    'r'
    """
    known = {
        k: p for k, p in inspect.signature(simulate_field).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    unknown = sorted(set(params) - set(known) - {"survey", "seed"})
    if unknown:
        msg = f"unknown simulation parameter(s): {', '.join(unknown)}; known: {', '.join(known)}"
        raise ValueError(msg)
    values = {k: p.default for k, p in known.items() if p.default is not inspect.Parameter.empty}
    values.update(params)
    preset = get_survey(survey)
    band_arg = values["band"] or None
    if band_arg is not None:
        preset.band(band_arg)
    band = _main_band(_band_list(values["bands"], band_arg, preset), band_arg, preset)
    image_size, n_epochs = values["image_size"], values["n_epochs"]
    if not isinstance(image_size, int | np.integer) or isinstance(image_size, bool):
        msg = f"image_size must be an int, got {image_size!r}"
        raise ValueError(msg)
    if image_size < 16:
        msg = f"image_size must be >= 16 pixels, got {image_size}"
        raise ValueError(msg)
    if not isinstance(n_epochs, int | np.integer) or isinstance(n_epochs, bool) or n_epochs < 1:
        msg = f"n_epochs must be an int >= 1, got {n_epochs!r}"
        raise ValueError(msg)
    for name in (*FIELD_COUNTS, *EPOCH_COUNTS):
        _check_count(name, values[name], allow_none=name in {"n_stars", "n_galaxies"})
    for name, lo, hi in (
        ("star_count_slope", 0.05, 1.0),
        ("host_fraction", 0.0, 1.0),
        ("registration_sigma", 0.0, 5.0),
        ("rotation_sigma", 0.0, 0.01),
        ("mask_sigma", 1e-3, 100.0),
        ("min_snr", 0.0, 1e3),
        ("ambiguous_snr", 0.0, 1e3),
    ):
        value = values[name]
        if isinstance(value, bool) or not (isinstance(value, int | float) and lo <= value <= hi):
            msg = f"{name} must be a number in [{lo}, {hi}], got {value!r}"
            raise ValueError(msg)

    visits = values["visits_per_night"]
    if visits is not None and (not isinstance(visits, int | np.integer) or isinstance(visits, bool)
                               or visits < 1):
        msg = f"visits_per_night must be None or an int >= 1, got {visits!r}"
        raise ValueError(msg)
    if not isinstance(values["hot_pixels_fixed"], bool | np.bool_):
        msg = f"hot_pixels_fixed must be True or False, got {values['hot_pixels_fixed']!r}"
        raise ValueError(msg)
    if not isinstance(values["field_id"], int | np.integer) or values["field_id"] < 0:
        msg = f"field_id must be a non-negative int, got {values['field_id']!r}"
        raise ValueError(msg)
    return preset, band


def simulate_field(
    survey: str | SurveyPreset = "ztf",
    *,
    image_size: int = 256,
    n_epochs: int = 2,
    n_stars: Count = None,
    n_galaxies: Count = None,
    n_supernovae: Count = 2,
    n_variables: Count = 2,
    n_moving: Count = 1,
    n_cosmic_rays: Count = 4,
    n_hot_pixels: Count = 4,
    n_satellites: Count = 0,
    n_bad_columns: Count = 0,
    n_saturated: Count = 0,
    band: str | None = None,
    bands: Sequence[str] | None = None,
    visits_per_night: int | None = None,
    hot_pixels_fixed: bool = False,
    host_fraction: float = 0.9,
    star_count_slope: float = 0.35,
    registration_sigma: float = 0.1,
    rotation_sigma: float = 1.5e-4,
    mask_sigma: float = 1.0,
    min_snr: float = 3.0,
    ambiguous_snr: float = 7.0,
    field_id: int = 0,
    seed: int | np.random.Generator | np.random.SeedSequence | None = None,
    **unknown: Any,
) -> SimulatedField:
    """Simulate a reference coadd and ``n_epochs`` science epochs of one field with truth.

    Counts are ints, or ``(low, high)`` pairs drawn uniformly (inclusive) per
    field (stars, galaxies, supernovae, variables, saturated stars) or per
    epoch (moving objects, cosmic rays, hot pixels, satellites, bad columns).

    Parameters
    ----------
    survey : str or SurveyPreset
        Preset name (``"ztf"``, ``"decam"``) or a preset.
    image_size : int
        Width and height in pixels (>= 16).
    n_epochs : int
        Number of science epochs (>= 1).
    n_stars, n_galaxies : int, pair or None
        Static sources; None draws them from sky densities for the field's area.
    n_supernovae : int or pair
        Supernovae per field, each in a host galaxy added for it (see ``host_fraction``).
    n_variables : int or pair
        Periodic variable stars per field.
    n_moving : int or pair
        Moving objects anchored in each epoch (they also appear in other
        epochs while their motion keeps them in the image).
    n_cosmic_rays, n_hot_pixels, n_satellites, n_bad_columns : int or pair
        Artifacts per science epoch.
    n_saturated : int or pair
        Extra bright stars that saturate and bleed (the number counts add a
        few on large images).
    band : str, optional
        Band of the preset (default band when None); with ``bands``, the main
        band whose magnitudes the generators draw (default: the preset's default
        band when it is one of ``bands``, else the first).
    bands : sequence of str, optional
        Take the epochs in several bands (e.g. ``("g", "r", "i")``): epoch ``k``
        is in ``bands[k % len(bands)]``, the bands of a cycle 15-60 minutes
        apart in one night; each band has its own reference. None (default):
        every epoch in ``band``.
    visits_per_night : int, optional
        Take the epochs in nights of this many visits, 30-60 minutes apart
        (2: ZTF's paired visits, which let asteroids be linked within a night),
        nights 1-5 days apart; bands keep cycling per epoch. None (default):
        the cadence described under ``bands`` (one band: a revisit is the same
        night 30 % of the time).
    hot_pixels_fixed : bool
        Keep the field's hot pixels (count, detector pixels and charge) the
        same in every epoch, as a detector's are; False (default) draws new
        ones per epoch.
    host_fraction : float
        Fraction of supernovae given a host galaxy (the rest are hostless).
    star_count_slope : float
        ``d log N / dm`` of the star counts (0.3-0.6; 0.6 is Euclidean).
    registration_sigma : float
        RMS residual registration shift per axis of a science epoch (pixels).
    rotation_sigma : float
        RMS residual rotation of a science epoch about the image centre (radians).
    mask_sigma : float
        Masks hold pixels where an object exceeds this many σ of the difference noise.
    min_snr : float
        Objects below this optimal S/N in an epoch are not labelled there.
    ambiguous_snr : float
        Labelled objects below this S/N are flagged ``ambiguous``.
    field_id : int
        Field number written to the headers.
    seed : int, SeedSequence, numpy.random.Generator or None
        Randomness; the same int gives the same field.
    **unknown
        Rejected with a ValueError that names them.

    Returns
    -------
    SimulatedField
        The images, PSFs, headers, label maps and catalogues.

    Raises
    ------
    ValueError
        For an unknown preset or band, non-positive sizes, negative counts or
        out-of-range options.

    Examples
    --------
    >>> f = simulate_field("ztf", image_size=32, n_epochs=1, seed=1)
    >>> f.reference.shape, f.epochs[0].class_map.dtype.name
    ((32, 32), 'uint8')
    >>> g = simulate_field("ztf", image_size=32, n_epochs=3, bands=("g", "r", "i"), seed=1)
    >>> [ep.band for ep in g.epochs], sorted(g.references)
    (['g', 'r', 'i'], ['g', 'i', 'r'])
    """
    params = {k: v for k, v in locals().items() if k not in {"survey", "seed", "unknown"}}
    params.update(unknown)
    preset, band = check_parameters(survey, **params)
    band_list = _band_list(bands, band, preset)
    multi = len(band_list) > 1
    shape = (int(image_size), int(image_size))
    ss = _seed_sequence(seed)
    s_static, s_trans, s_ref, *s_epochs = ss.spawn(3 + n_epochs)
    rng = np.random.default_rng(s_static)
    dep = depth(preset, band)
    t = preset.exposure_time

    ra = rng.uniform(0.0, 360.0)
    sin_dec = rng.uniform(math.sin(math.radians(-30.0)), math.sin(math.radians(70.0)))
    dec = math.degrees(math.asin(sin_dec))
    ref_mjd, mjds = _epoch_mjds(rng, n_epochs, len(band_list), visits_per_night)
    epoch_bands = [band_list[k % len(band_list)] for k in range(n_epochs)]
    stars = draw_stars(preset, band, rng, shape=shape, n=_draw_count(n_stars, rng),
                       slope=star_count_slope)
    n_sat = _draw_count(n_saturated, rng)
    if n_sat:
        extra = draw_stars(preset, band, rng, shape=shape, n=n_sat)
        extra["mag"] = rng.uniform(dep.saturation_mag - 2.5, dep.saturation_mag - 0.3, n_sat)
        extra["rate"] = [preset.electrons_per_second(m, band) for m in extra.mag]
        stars = pd.concat([stars, extra], ignore_index=True)
    galaxies = draw_galaxies(preset, band, rng, shape=shape, n=_draw_count(n_galaxies, rng))

    # Transients: field-level parameters, sampled per epoch below.
    rt = np.random.default_rng(s_trans)
    n_sn = _draw_count(n_supernovae, rt)
    margin = min(8.0, image_size / 8)
    hosts = []
    for _ in range(n_sn):
        if rt.random() < host_fraction:
            hx, hy = rt.uniform(margin, shape[1] - 1 - margin, 2)
            host = draw_galaxies(preset, band, rt, shape=shape, n=1,
                                 mag_range=(dep.limit_mag - 4.5, dep.limit_mag - 1.5),
                                 xy=(np.array([hx]), np.array([hy])))
            galaxies = pd.concat([galaxies, host], ignore_index=True)
            h = host.iloc[0]
            hosts.append((h.x, h.y, h.r_eff, h.axis_ratio, h.angle))
        else:
            hosts.append((math.nan, math.nan, math.nan, 1.0, 0.0))
    sne = supernovae(rt, n_sn, hosts=hosts, shape=shape, mjd_range=(mjds[0], mjds[-1]),
                     limit_mag=dep.limit_mag)
    n_var = _draw_count(n_variables, rt)
    var_stars = draw_stars(preset, band, rt, shape=shape, n=n_var)
    var_mags = rt.uniform(dep.limit_mag - 5.0, dep.limit_mag - 1.0, n_var)
    variables = variable_stars(rt, np.arange(len(stars), len(stars) + n_var), var_mags)
    var_stars["mag"] = [v.reference_mag() for v in variables]
    var_stars["rate"] = [preset.electrons_per_second(m, band) for m in var_stars.mag]
    stars = pd.concat([stars, var_stars], ignore_index=True)
    bodies = []
    for k, mjd in enumerate(mjds):
        n_mov = _draw_count(n_moving, rt)
        for body in moving_objects(rt, n_mov, mjd=mjd, shape=shape, limit_mag=dep.limit_mag,
                                   fwhm=preset.seeing_median / preset.pixel_scale):
            bodies.append((f"mov{k}_{len(bodies)}", body))

    # Colours (several bands only, from their own random streams): every source's
    # magnitude and rate in each band.
    ref_seeds = {band: s_ref}
    if multi:
        s_colour, *s_refs = ss.spawn(len(band_list))
        ref_seeds.update(zip([b for b in band_list if b != band], s_refs, strict=True))
        rc = np.random.default_rng(s_colour)
        sne, variables, moved = draw_colours(rc, sne, variables, [b for _, b in bodies])
        bodies = [(name, b) for (name, _), b in zip(bodies, moved, strict=True)]
        stars["temperature"] = np.concatenate([draw_star_temperatures(rc, len(stars) - n_var),
                                               [v.temperature for v in variables]])
        galaxies["temperature"] = draw_galaxy_temperatures(rc, galaxies.sersic_n.to_numpy())
    wavelength = {b: preset.band(b).wavelength for b in band_list}
    rates = {band: (stars.rate.to_numpy(), galaxies.rate.to_numpy())}
    if multi:
        for b in band_list:
            star_mag, gal_mag = stars.mag.to_numpy(), galaxies.mag.to_numpy()
            if b != band:
                star_mag = star_mag + blackbody_colour(stars.temperature.to_numpy(), wavelength[b],
                                                       wavelength[band])
                for v in variables:
                    star_mag[v.star] = v.band_reference_mag(wavelength[b], wavelength[band])
                gal_mag = gal_mag + blackbody_colour(galaxies.temperature.to_numpy(), wavelength[b],
                                                     wavelength[band])
                zp_b = preset.band(b).zero_point
                rates[b] = (10.0 ** (-0.4 * (star_mag - zp_b)), 10.0 ** (-0.4 * (gal_mag - zp_b)))
            stars[f"mag_{b}"] = star_mag
            galaxies[f"mag_{b}"] = gal_mag
    depths = {b: dep if b == band else depth(preset, b) for b in band_list}

    star_x, star_y = stars.x.to_numpy(), stars.y.to_numpy()
    gal_x, gal_y = galaxies.x.to_numpy(), galaxies.y.to_numpy()

    # Reference coadds (one per band) and the epochs' conditions.
    ref_rngs = {b: np.random.default_rng(ref_seeds[b]) for b in band_list}
    crefs = {b: draw_conditions(preset, b, ref_rngs[b], mjd=ref_mjd, reference=True)
             for b in band_list}
    epoch_rngs = [np.random.default_rng(s) for s in s_epochs]
    conditions = [
        draw_conditions(preset, b, re, mjd=mjd, registration_sigma=registration_sigma,
                        rotation_sigma=rotation_sigma)
        for re, mjd, b in zip(epoch_rngs, mjds, epoch_bands, strict=True)
    ]
    pad = max(c.psf.radius for c in [*crefs.values(), *conditions]) + 2
    gal_batch = sersic_stamps(gal_x, gal_y, galaxies.sersic_n.to_numpy(),
                              galaxies.r_eff.to_numpy(), galaxies.axis_ratio.to_numpy(),
                              galaxies.angle.to_numpy(), pad=pad)
    references, ref_noise = {}, {}
    for b in band_list:
        references[b], ref_noise[b] = _render_reference(
            preset, b, crefs[b], ref_rngs[b], shape=shape, star_xy=(star_x, star_y),
            rates=rates[b], galaxies=gal_batch, depth_=depths[b], ra=ra, dec=dec,
            field_id=field_id,
        )
    n_ref = crefs[band].n_exposures
    full_well = preset.saturation * preset.gain
    dark = preset.dark_current * t

    def band_truth(mag_of: Callable[[float, float], float]) -> dict[str, float]:
        """``mag_<band>`` of a transient in every band (several bands only)."""
        if not multi:
            return {}
        return {f"mag_{c}": float(mag_of(wavelength[c], wavelength[band])) for c in band_list}

    s_hot = ss.spawn(1)[0] if hot_pixels_fixed else None  # the detector's hot pixels, one draw per field

    epochs = []
    for k, mjd in enumerate(mjds):
        re, cond, b = epoch_rngs[k], conditions[k], epoch_bands[k]
        dep_b, zp_b = depths[b], preset.band(b).zero_point
        star_rate, gal_rate = rates[b]
        ref_resid, ref_var = ref_noise[b]
        psf = cond.psf
        scale = cond.transparency * t
        xs, ys = cond.transform(star_x, star_y, shape)
        gxs, gys = cond.transform(gal_x, gal_y, shape)
        flux = star_rate * scale
        radii = _star_radii(flux, psf, dep_b.pixel_sigma)
        static = _render_static(shape, xs, ys, flux, radii, gal_batch, gal_rate * scale, psf,
                                gal_shift=(gxs - gal_x, gys - gal_y))
        model = _render_static(shape, star_x, star_y, flux, radii, gal_batch, gal_rate * scale,
                               psf)
        sky = sky_image(cond, shape)

        objects: list[SimObject] = []
        for i, sn in enumerate(sne):
            offset = 0.0 if b == band else sn.mag_offset(mjd, wavelength[b], wavelength[band])
            f = sn.rate(mjd, zp_b, mag_offset=offset) * scale
            x, y = cond.transform(sn.x, sn.y, shape)
            params = {"sci_flux": f, "ref_flux": 0.0, "peak_mag": sn.peak_mag,
                      "t_peak": sn.t_peak, "tau_rise": sn.tau_rise, "tau_fall": sn.tau_fall,
                      "host_x": sn.host_x, "host_y": sn.host_y, "host_r_eff": sn.host_r_eff,
                      **band_truth(partial(sn.band_mag, mjd))}
            if multi:
                params["sn_type"] = sn.sn_type
            subtype = "hosted" if math.isfinite(sn.host_x) else "hostless"
            objects.append(render_point("supernova", f"sn{i}", float(x), float(y), f, psf,
                                        params=params, subtype=subtype))
        for i, v in enumerate(variables):
            mag_now = v.mag(mjd) if b == band else v.band_mag(mjd, wavelength[b], wavelength[band])
            f_now = preset.electrons_per_second(mag_now, b) * scale
            f_ref = star_rate[v.star] * scale
            params = {"sci_flux": f_now, "ref_flux": f_ref, "peak_mag": v.mean_mag,
                      "period": v.period, "amplitude": v.amplitude,
                      **band_truth(partial(v.band_mag, mjd))}
            objects.append(render_point("variable", f"var{i}", float(xs[v.star]),
                                        float(ys[v.star]), f_now - f_ref, psf, params=params,
                                        subtype=v.shape))
        for name, body in bodies:
            seen = body if b == band else replace(body, mag=body.band_mag(wavelength[b],
                                                                          wavelength[band]))
            obj = render_moving(seen, name, cond, pixel_scale=preset.pixel_scale,
                                zero_point=zp_b, shape=shape)
            if obj is not None:
                obj.params.update(band_truth(body.band_mag))
                objects.append(obj)
        objects += cosmic_rays(re, _draw_count(n_cosmic_rays, re), shape=shape)
        rh = re if s_hot is None else np.random.default_rng(s_hot)  # fixed: the same draw each epoch
        objects += hot_pixels(rh, _draw_count(n_hot_pixels, rh), shape=shape)
        objects += bad_columns(re, _draw_count(n_bad_columns, re), sky=sky,
                               pixel_sigma=dep_b.pixel_sigma)
        objects += satellite_trails(re, _draw_count(n_satellites, re), shape=shape, psf=psf,
                                    pixel_sigma=dep_b.pixel_sigma)
        objects = [o for o in objects if o.crop(shape)]

        expected = sky + static
        for obj in objects:
            rows, cols = obj.slices
            expected[rows, cols] += obj.signal
        bled, sat = bleed(expected, full_well)
        sci_e = expose(bled, re, survey=preset)
        sci_e[sat] = full_well
        science = np.minimum(sci_e / np.float32(preset.gain), np.float32(preset.saturation))
        del sci_e

        ratio = np.float32(cond.transparency / n_ref)
        saturation_resid = (bled - expected) - ratio * ref_resid
        ideal = (bled - sky) - model - ratio * ref_resid
        variance = bled + np.float32(dark + preset.read_noise**2) + ratio**2 * ref_var
        objects += _bleed_objects(saturation_resid, star_x, star_y, xs, ys)
        star_mags = stars[f"mag_{b}"].to_numpy() if multi else stars.mag.to_numpy()
        objects += _dipoles(star_x, star_y, star_mags, xs, ys, flux, radii, psf, variance, min_snr)
        del expected, static, model

        class_map, instance_map, catalog, kept = build_labels(
            objects, variance, mask_sigma=mask_sigma, min_snr=min_snr,
            ambiguous_snr=ambiguous_snr, zero_point=zp_b, exposure=scale,
        )
        catalog.insert(1, "epoch", k)
        if multi:
            catalog.insert(2, "band", b)
            catalog["sn_type"] = [o.params.get("sn_type", "") for o in kept]
            for c in band_list:
                catalog[f"mag_{c}"] = [o.params.get(f"mag_{c}", math.nan) for o in kept]
        epochs.append(
            SimulatedEpoch(
                science=science.astype(np.float32),
                psf=psf.stamp(),
                class_map=class_map,
                instance_map=instance_map,
                catalog=catalog,
                ideal_difference=ideal.astype(np.float32),
                variance=variance.astype(np.float32),
                header=_header(preset, b, cond, shape=shape, ra=ra, dec=dec,
                               field_id=field_id, epoch=k),
                mjd=float(mjd),
                conditions=cond,
                band=b,
                objects=kept,
            )
        )
    main = references[band]
    return SimulatedField(
        survey=preset,
        band=band,
        reference=main.image,
        psf_reference=main.psf,
        reference_header=main.header,
        reference_conditions=main.conditions,
        epochs=epochs,
        stars=stars,
        galaxies=galaxies,
        ra=float(ra),
        dec=float(dec),
        bands=band_list,
        references=references,
    )


def _render_reference(
    preset: SurveyPreset,
    band: str,
    cref: Conditions,
    rng: np.random.Generator,
    *,
    shape: tuple[int, int],
    star_xy: tuple[np.ndarray, np.ndarray],
    rates: tuple[np.ndarray, np.ndarray],
    galaxies: SersicBatch,
    depth_: Depth,
    ra: float,
    dec: float,
    field_id: int,
) -> tuple[SimulatedReference, tuple[np.ndarray, np.ndarray]]:
    """Render one band's reference coadd: the sum of N exposures, delivered as their mean in ADU.

    Returns the reference and, for the epochs' difference truth, its saturation
    residual and variance (e- of the coadd).
    """
    t = preset.exposure_time
    star_rate, gal_rate = rates
    n_ref = cref.n_exposures
    ref_sky = sky_image(cref, shape)
    ref_flux = star_rate * t * n_ref
    ref_radii = _star_radii(ref_flux / n_ref, cref.psf, depth_.pixel_sigma)
    ref_expected = ref_sky + _render_static(shape, *star_xy, ref_flux, ref_radii, galaxies,
                                            gal_rate * t * n_ref, cref.psf)
    full_well = preset.saturation * preset.gain
    ref_bled, ref_sat = bleed(ref_expected, full_well * n_ref)
    ref_e = expose(ref_bled, rng, survey=preset, n_exposures=n_ref)
    ref_e[ref_sat] = full_well * n_ref
    reference = np.minimum(ref_e / np.float32(preset.gain * n_ref), np.float32(preset.saturation))
    dark = preset.dark_current * t
    ref_var = ref_bled + np.float32(n_ref * (dark + preset.read_noise**2))
    ref_resid = ref_bled - ref_expected
    header = _header(preset, band, cref, shape=shape, ra=ra, dec=dec, field_id=field_id, epoch=-1)
    out = SimulatedReference(band=band, image=reference.astype(np.float32), psf=cref.psf.stamp(),
                             header=header, conditions=cref)
    return out, (ref_resid, ref_var)


def _bleed_objects(
    resid: np.ndarray, star_x: np.ndarray, star_y: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> list[SimObject]:
    """One ``bleed_trail`` object per connected region changed by saturation."""
    changed = resid != 0
    if not changed.any():
        return []
    regions, n = ndimage.label(changed, structure=np.ones((3, 3)))
    out = []
    for j, sl in enumerate(ndimage.find_objects(regions)):
        own = regions[sl] == j + 1
        signal = np.where(own, resid[sl], 0).astype(np.float32)
        rows, cols = sl
        inside = ((star_x >= cols.start) & (star_x < cols.stop) & (star_y >= rows.start)
                  & (star_y < rows.stop))
        if inside.any():
            k = np.flatnonzero(inside)
            x, y = float(xs[k[0]]), float(ys[k[0]])
        else:
            cy, cx = ndimage.center_of_mass(np.abs(signal))
            x, y = cols.start + cx, rows.start + cy
        out.append(SimObject("bleed_trail", f"bleed{j}", x, y, signal, cols.start, rows.start,
                             float(signal[signal > 0].sum()), subtype="saturation",
                             mask_mode="support",
                             params={"length": float(rows.stop - rows.start)}))
    return out


def _dipoles(
    x: np.ndarray,
    y: np.ndarray,
    mags: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    flux: np.ndarray,
    radii: np.ndarray,
    psf: MoffatPSF,
    variance: np.ndarray,
    min_snr: float,
) -> list[SimObject]:
    """Registration residuals of the static stars whose residual reaches ``min_snr``.

    Candidates are pre-selected with the first-order estimate
    ``S/N ≈ F |δ| sqrt(Σ (∂P/∂δ)²) / σ`` (σ at the star) and then computed exactly.
    """
    stamp = psf.stamp().astype(np.float64)
    gy, gx = np.gradient(stamp)
    grad = math.sqrt(max(float(np.sum(gx * gx)), float(np.sum(gy * gy))))
    shift = np.hypot(xs - x, ys - y)
    iy = np.clip(np.rint(ys).astype(int), 0, variance.shape[0] - 1)
    ix = np.clip(np.rint(xs).astype(int), 0, variance.shape[1] - 1)
    estimate = flux * shift * grad / np.sqrt(variance[iy, ix])
    out = []
    for i in np.flatnonzero(estimate >= 0.7 * min_snr):
        obj = dipole(f"dip{i}", float(x[i]), float(y[i]), float(xs[i]), float(ys[i]),
                     float(flux[i]), psf, radius=int(radii[i]),
                     params={"ref_flux": float(flux[i]), "sci_flux": float(flux[i]),
                             "peak_mag": float(mags[i]), "length": float(shift[i])})
        if obj.crop(variance.shape):
            out.append(obj)
    return out

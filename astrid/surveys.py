"""Survey presets: the instrument and site numbers the simulator renders with.

Values are representative of the real surveys (public instrument papers and
data-release documentation), rounded; they are not calibration products.
Zero points are AB magnitudes that give 1 electron per second on the detector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["AB_MICROJANSKY", "SURVEYS", "BandParameters", "SurveyPreset", "get_survey", "microjansky"]

AB_MICROJANSKY = 23.9
"""AB magnitude of 1 microjansky: ``flux_uJy = 10**(-0.4 (mag - AB_MICROJANSKY))``."""


def microjansky(mag: float) -> float:
    """Return the flux in microjansky of an AB magnitude (a zero point gives the flux of one unit).

    Examples
    --------
    >>> microjansky(23.9), round(microjansky(16.4), 1)
    (1.0, 1000.0)
    """
    return 10.0 ** (-0.4 * (float(mag) - AB_MICROJANSKY))


@dataclass(frozen=True)
class BandParameters:
    """Per-band photometric numbers.

    Attributes
    ----------
    zero_point : float
        AB magnitude giving 1 e-/s.
    sky_mag : float
        Dark-sky brightness in AB mag per arcsec².
    wavelength : float, optional
        Effective wavelength in nm; the simulator needs it to give sources
        their colours (spectral energy distributions) in several bands.
    """

    zero_point: float
    sky_mag: float
    wavelength: float | None = None

    def __post_init__(self) -> None:
        if self.wavelength is not None and not (math.isfinite(self.wavelength) and self.wavelength > 0):
            msg = f"band wavelength must be a positive number of nm, got {self.wavelength!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class SurveyPreset:
    """One survey's detector, site and cadence numbers.

    Attributes
    ----------
    name : str
        Preset name.
    pixel_scale : float
        Arcsec per pixel.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons per pixel.
    dark_current : float
        Dark current in electrons per pixel per second.
    saturation : float
        Full-well / saturation level in ADU (after bias).
    exposure_time : float
        Single-epoch exposure in seconds.
    seeing_median : float
        Median single-epoch seeing FWHM in arcsec (log-normal distribution).
    seeing_scatter : float
        Log-normal sigma of the seeing distribution (natural log).
    reference_exposures : int
        Number of exposures coadded into a reference image.
    reference_seeing_factor : float
        Reference seeing relative to the median (coadds select good seeing).
    bands : dict
        Photometric numbers per band name.
    default_band : str
        Band used when none is given.
    """

    name: str
    pixel_scale: float
    gain: float
    read_noise: float
    dark_current: float
    saturation: float
    exposure_time: float
    seeing_median: float
    seeing_scatter: float
    reference_exposures: int
    reference_seeing_factor: float
    bands: dict[str, BandParameters] = field(default_factory=dict)
    default_band: str = "r"

    def __post_init__(self) -> None:
        for name in (
            "pixel_scale",
            "gain",
            "read_noise",
            "saturation",
            "exposure_time",
            "seeing_median",
            "reference_seeing_factor",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                msg = f"survey preset {self.name!r}: {name} must be positive, got {value!r}"
                raise ValueError(msg)
        if self.dark_current < 0 or self.seeing_scatter < 0:
            msg = f"survey preset {self.name!r}: dark_current and seeing_scatter must be >= 0"
            raise ValueError(msg)
        if self.reference_exposures < 1:
            msg = f"survey preset {self.name!r}: reference_exposures must be >= 1"
            raise ValueError(msg)
        if self.default_band not in self.bands:
            msg = f"survey preset {self.name!r}: default_band {self.default_band!r} not in bands"
            raise ValueError(msg)
        for band in self.bands:
            sky = self.sky_electrons(band)
            if sky >= self.saturation * self.gain:
                msg = (
                    f"survey preset {self.name!r}: saturation ({self.saturation} ADU) is below "
                    f"the sky level ({sky / self.gain:.0f} ADU) in band {band!r}"
                )
                raise ValueError(msg)

    def band(self, band: str | None = None) -> BandParameters:
        """Return the photometric numbers of ``band`` (default band when None)."""
        name = band or self.default_band
        if name not in self.bands:
            msg = f"band {name!r} not in survey {self.name!r}; known: {sorted(self.bands)}"
            raise ValueError(msg)
        return self.bands[name]

    def electrons_per_second(self, magnitude: float, band: str | None = None) -> float:
        """Convert an AB magnitude to detected electrons per second."""
        return 10.0 ** (-0.4 * (magnitude - self.band(band).zero_point))

    def sky_electrons(self, band: str | None = None, *, exposure_time: float | None = None) -> float:
        """Sky electrons per pixel in one exposure (default exposure time)."""
        t = self.exposure_time if exposure_time is None else exposure_time
        per_arcsec2 = self.electrons_per_second(self.band(band).sky_mag, band)
        return per_arcsec2 * self.pixel_scale**2 * t

    def to_dict(self) -> dict[str, Any]:
        """Return the preset as plain data (for manifests and headers)."""
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> SurveyPreset:
        """Return a copy with some fields replaced (validated again).

        Raises
        ------
        ValueError
            For a field name the preset does not have.
        """
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            msg = f"unknown survey parameter(s): {sorted(unknown)}"
            raise ValueError(msg)
        return replace(self, **overrides)


SURVEYS: dict[str, SurveyPreset] = {
    # ZTF: 47 deg² camera, 1.01"/px, 30 s exposures, median seeing ~2" (Bellm et al. 2019;
    # Masci et al. 2019); references are coadds of 15-40 good-seeing epochs. Effective
    # wavelengths of the ZTF g, r, i filters ~480, 640, 790 nm (rounded).
    "ztf": SurveyPreset(
        name="ztf",
        pixel_scale=1.01,
        gain=6.2,
        read_noise=8.0,
        dark_current=0.1,
        saturation=20000.0,
        exposure_time=30.0,
        seeing_median=2.0,
        seeing_scatter=0.2,
        reference_exposures=20,
        reference_seeing_factor=0.9,
        bands={
            "g": BandParameters(zero_point=24.9, sky_mag=21.8, wavelength=480.0),
            "r": BandParameters(zero_point=24.6, sky_mag=20.8, wavelength=640.0),
            "i": BandParameters(zero_point=24.1, sky_mag=20.0, wavelength=790.0),
        },
    ),
    # DECam on the Blanco 4 m: 0.263"/px, ~90 s survey exposures, median seeing ~1.0"
    # (Flaugher et al. 2015; DES DR2); effective wavelengths from DES DR2 (rounded).
    "decam": SurveyPreset(
        name="decam",
        pixel_scale=0.263,
        gain=4.0,
        read_noise=7.0,
        dark_current=0.01,
        saturation=30000.0,
        exposure_time=90.0,
        seeing_median=1.0,
        seeing_scatter=0.2,
        reference_exposures=10,
        reference_seeing_factor=0.9,
        bands={
            "g": BandParameters(zero_point=28.3, sky_mag=22.0, wavelength=482.0),
            "r": BandParameters(zero_point=28.4, sky_mag=21.1, wavelength=642.0),
            "i": BandParameters(zero_point=28.2, sky_mag=20.3, wavelength=784.0),
        },
    ),
}
"""Named survey presets."""


def get_survey(name: str | SurveyPreset, **overrides: Any) -> SurveyPreset:
    """Return the survey preset ``name``, optionally with fields overridden.

    Parameters
    ----------
    name : str or SurveyPreset
        Preset name (``"ztf"``, ``"decam"``) or a preset to pass through.
    **overrides
        Fields to replace, e.g. ``read_noise=5.0``.

    Raises
    ------
    ValueError
        For an unknown preset or field, or inconsistent values.

    Examples
    --------
    >>> get_survey("ztf").pixel_scale
    1.01
    """
    if isinstance(name, SurveyPreset):
        preset = name
    else:
        key = str(name).lower()
        if key not in SURVEYS:
            msg = f"unknown survey preset {name!r}; known: {', '.join(sorted(SURVEYS))}"
            raise ValueError(msg)
        preset = SURVEYS[key]
    return preset.with_overrides(**overrides) if overrides else preset

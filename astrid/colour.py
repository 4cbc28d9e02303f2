"""Colour of candidates: the same change measured in the other bands of the same night.

A field observed in several bands (the simulator's ``bands=("g", "r", "i")``,
or ZTF's g, r and i filters) sees a transient in each band a few minutes to an
hour apart. The colour of the *difference* flux tells kinds apart: a young
supernova is blue and reddens as it ages, a pulsating star is bluer in its
bright phases, an asteroid has moved away by the time the next band is taken
(so the other bands see nothing at its position), and an artifact of one
exposure is absent from the others.

* :func:`colour_features` - forced PSF photometry
  (:func:`astrid.detect.forced_photometry`) of each candidate in the
  difference images of the other bands' samples of the same field and night;
* :func:`alert_colour_features` - the same columns for a real ZTF alert, from
  its own ``magpsf`` and the latest ``prv_candidates`` entry in each other
  filter (``fid``) within a time window;
* :data:`COLOUR_FEATURES` - the scale-free columns for the kind classifier
  (compare models with and without them with
  :func:`astrid.classic.feature_ablation`).

Fluxes are in microjansky and signed along the candidate's change (positive
when a band changes the same way as the detection, so a fading variable has
positive fluxes too). Colours are differences of asinh magnitudes (Lupton,
Gunn & Szalay 1999) softened at each flux's error: equal to ordinary
magnitudes at high S/N and finite when a band sees nothing. Every column is
NaN where a band has no sample within the window: the classifier takes NaN as
missing, so models run with or without colour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from astrid import detect
from astrid.manifest import Manifest, read_fits
from astrid.surveys import AB_MICROJANSKY, microjansky

__all__ = [
    "COLOUR_COLUMNS",
    "COLOUR_FEATURES",
    "ZTF_FILTERS",
    "alert_colour_features",
    "colour_columns",
    "colour_features",
]

ZTF_FILTERS: dict[int, str] = {1: "g", 2: "r", 3: "i"}
"""ZTF filter id (``fid``) -> band name."""

_POGSON = 2.5 / math.log(10.0)


def colour_columns(bands: Sequence[str] = ("g", "r", "i")) -> tuple[str, ...]:
    """Return the columns of :func:`colour_features` for ``bands`` (ordered blue to red).

    Per band ``flux_<b>``, ``flux_err_<b>`` (microjansky) and ``snr_<b>``; per
    pair of neighbouring bands ``colour_<b1>_<b2>`` and ``colour_err_<b1>_<b2>``.

    Raises
    ------
    ValueError
        For fewer than two bands or repeated bands.

    Examples
    --------
    >>> colour_columns(("g", "r"))
    ('flux_g', 'flux_err_g', 'snr_g', 'flux_r', 'flux_err_r', 'snr_r', 'colour_g_r', 'colour_err_g_r')
    """
    names = [str(b) for b in bands]
    if len(names) < 2 or len(set(names)) != len(names):
        msg = f"bands must be at least two distinct band names, got {list(bands)!r}"
        raise ValueError(msg)
    per_band = [c for b in names for c in (f"flux_{b}", f"flux_err_{b}", f"snr_{b}")]
    pairs = [c for b1, b2 in zip(names, names[1:], strict=False)
             for c in (f"colour_{b1}_{b2}", f"colour_err_{b1}_{b2}")]
    return (*per_band, *pairs)


COLOUR_COLUMNS: tuple[str, ...] = colour_columns(("g", "r", "i"))
"""Columns of :func:`colour_features` for the g, r, i bands."""

COLOUR_FEATURES: tuple[str, ...] = tuple(c for c in COLOUR_COLUMNS if not c.startswith("flux"))
"""The scale-free colour columns a classifier uses (per-band S/N, colours and their errors)."""


def _asinh_mag(flux: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Asinh magnitude of ``flux`` (microjansky) softened at ``error``, and its 1-sigma error."""
    soft = np.where(error > 0, error, np.nan)
    mag = -_POGSON * (np.arcsinh(flux / (2 * soft)) + np.log(soft)) + AB_MICROJANSKY
    mag_err = _POGSON * error / np.sqrt(flux**2 + 4 * soft**2)
    return mag, mag_err


def _finish(flux: dict[str, np.ndarray], error: dict[str, np.ndarray], bands: Sequence[str],
            index: pd.Index) -> pd.DataFrame:
    """Assemble the per-band fluxes into the :func:`colour_columns` table."""
    out: dict[str, np.ndarray] = {}
    mags = {}
    for b in bands:
        f, e = flux[b], error[b]
        out[f"flux_{b}"], out[f"flux_err_{b}"] = f, e
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"snr_{b}"] = np.where(e > 0, f / e, np.nan)
            mags[b] = _asinh_mag(f, e)
    for b1, b2 in zip(bands, bands[1:], strict=False):
        (m1, e1), (m2, e2) = mags[b1], mags[b2]
        out[f"colour_{b1}_{b2}"] = m1 - m2
        out[f"colour_err_{b1}_{b2}"] = np.hypot(e1, e2)
    return pd.DataFrame(out, index=index, columns=list(colour_columns(bands)), dtype=float)


def _companions(manifest: Manifest, sample: Mapping[str, Any], bands: Sequence[str],
                max_gap: float) -> dict[str, dict[str, Any]]:
    """Return the sample nearest in time to ``sample`` in each band (same field, within ``max_gap`` days)."""
    for key in ("field", "band", "mjd"):
        if sample.get(key) is None:
            msg = f"sample {sample.get('id')!r} lacks {key!r}, needed to find its other bands"
            raise ValueError(msg)
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for other in manifest.samples:
        if other.get("field") != sample["field"] or other.get("band") not in bands:
            continue
        if other.get("survey") != sample.get("survey") or other.get("mjd") is None:
            continue
        gap = abs(float(other["mjd"]) - float(sample["mjd"]))
        if other["id"] == sample["id"]:
            gap = -1.0  # a sample is its own band's measurement
        if gap <= max_gap and (other["band"] not in best or gap < best[other["band"]][0]):
            best[other["band"]] = (gap, other)
    return {b: s for b, (_, s) in best.items()}


def colour_features(
    manifest: Manifest,
    sample: Mapping[str, Any],
    candidates: pd.DataFrame | np.ndarray,
    *,
    bands: Sequence[str] = ("g", "r", "i"),
    max_gap: float = 0.5,
) -> pd.DataFrame:
    """Measure each candidate's difference flux in every band of the same night, and its colours.

    For each band the sample of the same field and survey nearest in time
    (within ``max_gap`` days; the sample itself for its own band) is measured
    by forced PSF photometry of its ZOGY difference image at the candidate's
    position. The samples of a field share one pixel grid (as the simulator
    writes them), so positions carry over; the flux scale comes from the
    difference header (``FD``, ``ZP``).

    Parameters
    ----------
    manifest : Manifest
        A dataset with the differencing products (``difference``,
        ``psf_difference``, ``diff_mask``) on the samples of ``bands``.
    sample : dict
        The entry the candidates were found on (needs ``field``, ``band``, ``mjd``).
    candidates : pandas.DataFrame or numpy.ndarray
        A table with ``x``, ``y`` (and optionally ``sign``, -1 for a fading
        candidate) or an ``(N, 2)`` array of positions.
    bands : sequence of str
        Bands to measure, ordered blue to red.
    max_gap : float
        Largest time between the sample and another band's sample, in days.

    Returns
    -------
    pandas.DataFrame
        Index of ``candidates``, columns :func:`colour_columns` ``(bands)``;
        NaN for a band without a sample in the window.

    Raises
    ------
    ValueError
        On bad ``bands``, ``max_gap`` or candidates, or a sample without ``field``/``band``/``mjd``.
    ManifestError
        When a sample to measure lacks its differencing products.

    Examples
    --------
    >>> import tempfile
    >>> from astrid.differencing import difference_dataset
    >>> from astrid.simulate import generate_dataset
    >>> m = generate_dataset(tempfile.mkdtemp(), n_fields=1, n_epochs=2, image_size=48,
    ...                      bands=("g", "r"), seed=1)
    >>> m = difference_dataset(m)
    >>> c = colour_features(m, m.samples[0], np.array([[20.0, 20.0]]), bands=("g", "r"))
    >>> bool(np.isfinite(c.loc[0, "colour_g_r"]))
    True
    """
    colour_columns(bands)  # validates the bands
    if not (isinstance(max_gap, int | float) and max_gap >= 0):
        msg = f"max_gap must be a non-negative number of days, got {max_gap!r}"
        raise ValueError(msg)
    xy, index = detect.candidate_positions(candidates)
    sign = np.ones(len(xy))
    if isinstance(candidates, pd.DataFrame) and "sign" in candidates.columns:
        sign = np.where(candidates["sign"].to_numpy(float) < 0, -1.0, 1.0)
    flux, error = {}, {}
    for b, other in _companions(manifest, sample, bands, float(max_gap)).items():
        difference, header = read_fits(manifest.file(other, "difference"), dtype=np.float64)
        if "diff_mask" in other:
            difference[manifest.read(other, "diff_mask").astype(bool)] = np.nan
        psf = manifest.read(other, "psf_difference", dtype=np.float64)
        for key in ("FD", "ZP"):
            if key not in header:
                msg = f"difference of sample {other['id']!r} lacks header {key!r} (flux scale)"
                raise ValueError(msg)
        forced = detect.forced_photometry(difference, xy, psf=psf)
        to_microjansky = microjansky(header["ZP"]) / float(header["FD"])
        flux[b] = forced["flux"].to_numpy() * to_microjansky * sign
        error[b] = forced["flux_error"].to_numpy() * to_microjansky
    for b in bands:
        flux.setdefault(b, np.full(len(xy), np.nan))
        error.setdefault(b, np.full(len(xy), np.nan))
    return _finish(flux, error, list(bands), index)


def _alert_flux(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """Signed flux and error (microjansky) of an alert or history entry; 0 ± limit/5 for an upper limit."""
    from astrid.alerts import difference_flux, python_value

    flux, error = difference_flux(entry)
    if math.isfinite(flux) and math.isfinite(error):
        return flux, error
    if python_value(entry.get("magpsf")) is not None:  # a detection without its sign or error
        return None
    limit = python_value(entry.get("diffmaglim"))
    if limit is not None and math.isfinite(limit):
        return 0.0, microjansky(limit) / 5.0
    return None


def alert_colour_features(
    alert: Mapping[str, Any],
    *,
    bands: Sequence[str] = ("g", "r", "i"),
    max_gap: float = 1.0,
) -> dict[str, float]:
    """Return the :func:`colour_columns` of a real ZTF alert from its own photometry and its history.

    The alert's own band uses its ``magpsf``/``sigmapsf``/``isdiffpos``; each
    other band uses the ``prv_candidates`` entry of that ``fid`` nearest in
    time within ``max_gap`` days, preferring a detection to an upper limit (a
    non-detection counts as flux 0 with error ``diffmaglim`` / 5). Fluxes are
    signed along the alert's own change.

    Parameters
    ----------
    alert : mapping
        An alert record (``candidate`` struct and ``prv_candidates`` list, as
        :mod:`fastavro` reads a ZTF packet).
    bands : sequence of str
        Bands, ordered blue to red (names of :data:`ZTF_FILTERS`).
    max_gap : float
        Largest time between the alert and a history entry, in days.

    Returns
    -------
    dict
        Column -> value, NaN where a band has nothing in the window.

    Raises
    ------
    ValueError
        When the alert has no candidate with ``fid``, ``jd`` and a usable
        ``magpsf``/``sigmapsf``/``isdiffpos``, or on bad ``bands``/``max_gap``.

    Examples
    --------
    >>> alert = {"candidate": {"fid": 1, "jd": 2460000.80, "magpsf": 19.0, "sigmapsf": 0.05,
    ...                        "isdiffpos": "t"},
    ...          "prv_candidates": [{"fid": 2, "jd": 2460000.75, "magpsf": 19.3, "sigmapsf": 0.05,
    ...                              "isdiffpos": "t", "candid": 1}]}
    >>> round(alert_colour_features(alert, bands=("g", "r"))["colour_g_r"], 2)
    -0.3
    """
    from astrid.alerts import candidate_fields

    columns = colour_columns(bands)
    if not (isinstance(max_gap, int | float) and max_gap >= 0):
        msg = f"max_gap must be a non-negative number of days, got {max_gap!r}"
        raise ValueError(msg)
    candidate = candidate_fields(alert)
    fid, jd = candidate.get("fid"), candidate.get("jd")
    own = _alert_flux(candidate) if candidate.get("magpsf") is not None else None
    if fid not in ZTF_FILTERS or jd is None or own is None:
        msg = "alert lacks a candidate with fid, jd and magpsf/sigmapsf/isdiffpos"
        raise ValueError(msg)
    sign = 1.0 if own[0] >= 0 else -1.0
    found: dict[str, tuple[float, float]] = {ZTF_FILTERS[fid]: own}
    history = alert.get("prv_candidates") or []
    best: dict[str, tuple[tuple[bool, float], tuple[float, float]]] = {}
    for entry in history:
        if not isinstance(entry, Mapping) or entry.get("fid") not in ZTF_FILTERS or entry.get("jd") is None:
            continue
        band = ZTF_FILTERS[entry["fid"]]
        gap = abs(float(entry["jd"]) - float(jd))
        measured = _alert_flux(entry)
        if band == ZTF_FILTERS[fid] or gap > max_gap or measured is None:
            continue
        rank = (entry.get("magpsf") is None, gap)  # detections first, then the nearest
        if band not in best or rank < best[band][0]:
            best[band] = (rank, measured)
    found.update({b: m for b, (_, m) in best.items()})
    flux = {b: np.array([sign * found[b][0] if b in found else np.nan]) for b in bands}
    error = {b: np.array([found[b][1] if b in found else np.nan]) for b in bands}
    row = _finish(flux, error, list(bands), pd.RangeIndex(1))
    return {c: float(row.loc[0, c]) for c in columns}

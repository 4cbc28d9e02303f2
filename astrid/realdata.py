"""Real ZTF alerts through AstrID: scores, ZOGY on cutouts, agreement with ZTF, fine-tuning, catalogs.

The study of the real-data gap, on alert triplets read by :mod:`astrid.alerts`
(science, reference, difference; the difference always science minus
reference):

* :func:`cutout_zogy` / :func:`zogy_on_alerts` run AstrID's ZOGY on each
  alert's science and reference stamps and compare the result with ZTF's own
  difference stamp (:func:`summarise_zogy` gives the distribution).
* :func:`score_alerts` scores every alert with a U-Net (bundle, registered
  model or URI, resolved by :func:`resolve_model`); this is what
  ``astrid score-alerts`` runs. :func:`alert_inputs` builds the model inputs
  (cutout ZOGY) once, to score the same alerts with several models.
* :func:`compare_with_ztf` measures agreement with ZTF's ``drb`` and with
  known asteroids, and lists the alerts where the two scores disagree most.
* :func:`weak_label` / :func:`weak_label_map` / :func:`weak_label_manifest`
  turn alert-level evidence into per-pixel labels, so :func:`finetune_on_alerts`
  can fine-tune a synthetic model on real triplets
  (:func:`astrid.alert_study.crossval_alerts` does it out of fold for
  several synthetic:real ratios, each a tracked run).
* :func:`curate_catalogs` writes true-positive, false-positive and ambiguous
  catalogs with the evidence behind every label.

Cutout ZOGY
-----------
ZTF stamps are in DN and carry no PSF or noise model, so each stamp's
background is its median and its noise 1.4826·MAD. The science PSF is a
Gaussian of the candidate's ``fwhm`` (clipped to [1, 8] px, 2.5 px when
missing). With ``psf="match"`` (default) the reference PSF width comes from
a least-squares fit of a Gaussian kernel that matches one stamp to the other
on the pixels more than 6 px from the candidate (the stars in the stamp);
when the reference has too few bright pixels for the fit, or with
``psf="fwhm"``, both PSFs are the same Gaussian. The flux scale is 1: ZTF's
reference stamps are already on the science zero point (their sky levels
agree), and fitting a free ratio made the agreement with ZTF worse. Variance images
hold the background plus the sources' Poisson noise for a gain of ``gain``
e-/DN in the science stamp; the reference coadd gets the gain scaled by
``(sigma_science / sigma_reference)**2`` (more frames, less noise per DN).

How we compare with ZTF's difference
------------------------------------
ZTF's pipeline uses its own ZOGY-like subtraction, so both differences hold
the same science noise but pass it through different filters; pixel-level
noise only partly correlates even for identical signal. The headline
``correlation`` therefore compares both after the *same* matched filter:
our score image S (our D correlated with our P_D) against ZTF's difference
correlated with that same P_D, on the central 31×31 pixels, where the
candidate and the sky around it are. ``correlation_raw`` (our D against
ZTF's difference, unfiltered) is reported beside it. Signs compare the
candidate's polarity: ours is the sign of S_corr at its extreme within 1 px
of the centre (a wider search picks up dipole lobes next to bright
variables), ZTF's comes from ``isdiffpos``. Our S/N there (``|S_corr|``)
is set against ZTF's ``1.0857 / sigmapsf`` and ZTF's own peak ``scorr``.

Scoring a triplet with the U-Net
--------------------------------
The model's input channels are built from the triplet: ``science``,
``reference``, ``difference`` (ZTF's own, science minus reference; or ours
with ``difference="zogy"``) and ``score`` (our S_corr, computed only when the
model takes it). :func:`astrid.model.predict_image` pads the 63×63 stack to
one 64×64 tile (the padding counts as background). Within ``radius`` px of
the centre: ``score`` is the largest summed probability of the transient
classes, ``kind`` the transient class with the largest mean probability,
``top_class`` the most probable non-background class, and
``score_uncertainty`` the mean normalised predictive entropy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrid.alerts import STAMP_KEYS, STAMP_SIZE, AlertTable, read_alerts
from astrid.classes import ARTIFACT_KINDS, CLASS_CODES, TRANSIENT_KINDS
from astrid.differencing import ZogyResult, zogy
from astrid.manifest import Manifest, atomic_write, prepare_output_dir, provenance, write_fits

__all__ = [
    "CATALOG_COLUMNS",
    "SCORE_COLUMNS",
    "SIGN_SCORR_MIN",
    "ZOGY_COLUMNS",
    "AlertInputs",
    "CutoutZogy",
    "alert_inputs",
    "compare_with_ztf",
    "curate_catalogs",
    "cutout_zogy",
    "finetune_on_alerts",
    "load_alerts",
    "resolve_model",
    "score_alerts",
    "summarise_zogy",
    "weak_label",
    "weak_label_manifest",
    "weak_label_map",
    "zogy_on_alerts",
]

log = logging.getLogger(__name__)

SCORE_COLUMNS: tuple[str, ...] = (
    "candid", "objectId", "score", "score_uncertainty", "kind", "top_class", "model_name",
    "model_version", "skipped_reason", "source",
)  # fmt: skip
"""Columns of :func:`score_alerts`; skipped inputs have an empty ``score`` and a ``skipped_reason``."""

ZOGY_COLUMNS: tuple[str, ...] = (
    "candid", "objectId", "isdiffpos", "fwhm_science", "fwhm_reference", "psf_matched",
    "correlation", "correlation_raw", "sign_ours", "sign_ztf", "sign_agrees", "sign_from", "scorr_ours",
    "flux_aperture", "snr_ours", "snr_ztf", "scorr_ztf", "error",
)  # fmt: skip
"""Columns of :func:`zogy_on_alerts`."""

SIGN_SCORR_MIN = 5.0
"""|S_corr| at the centre from which its sign is the candidate's sign (below: the aperture flux's)."""

CATALOG_COLUMNS: tuple[str, ...] = (
    "candid", "objectId", "kind", "source", "labeller", "confidence", "evidence", "score", "drb",
)  # fmt: skip
"""Columns of the catalogs :func:`curate_catalogs` writes."""

_CENTRE = STAMP_SIZE // 2
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_MAD_TO_SIGMA = 1.4826
_MAG_TO_SNR = 2.5 / math.log(10.0)  # 1.0857: S/N of a flux whose magnitude error is 1 mag / this
_DEFAULT_FWHM = 2.5
_PSF_MODES = ("match", "fwhm")


# --------------------------------------------------------------------------- inputs


def _is_manifest(path: Path) -> bool:
    return path.name == "manifest.json" or (path.is_dir() and (path / "manifest.json").is_file())


def load_alerts(
    source: Any,
    *,
    max_alerts: int | None = None,
    max_nan_fraction: float = 0.05,
    splits: Sequence[str] | None = None,
) -> AlertTable:
    """Return alerts as an :class:`~astrid.alerts.AlertTable` from files, a manifest or a table.

    Parameters
    ----------
    source : AlertTable, Manifest, path-like or iterable of path-like
        A table (returned as it is, or filtered by ``splits``), an alerts
        manifest (its folder or ``manifest.json``), or Avro/Parquet files and
        folders (read with :func:`astrid.alerts.read_alerts`).
    max_alerts : int, optional
        Keep at most this many alerts.
    max_nan_fraction : float
        NaN tolerance when reading files (see :func:`astrid.alerts.iter_alerts`).
    splits : sequence of str, optional
        Keep only these splits (manifests and tables with a ``split`` column).

    Returns
    -------
    AlertTable
        For a manifest, ``meta`` holds every sample field (labels, split, id).

    Raises
    ------
    ValueError
        When a manifest is not made of alert triplets, or ``splits`` is given
        for input without splits.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "x.avro"; _ = bad.write_bytes(b"junk")
    >>> table = load_alerts(bad)
    >>> len(table), table.skipped[0]["reason"]
    (0, 'unreadable_file')
    """
    import pandas as pd

    if isinstance(source, AlertTable):
        table = source
    else:
        manifest = source if isinstance(source, Manifest) else None
        if manifest is None and isinstance(source, str | os.PathLike) and _is_manifest(Path(source)):
            manifest = Manifest.load(source)
        if manifest is None:
            if splits is not None:
                msg = "splits given but alert files have no splits: read them into a manifest first"
                raise ValueError(msg)
            return read_alerts(source, max_alerts=max_alerts, max_nan_fraction=max_nan_fraction)
        samples = manifest.samples
        lacking = [s["id"] for s in samples if any(k not in s for k in STAMP_KEYS)]
        if lacking:
            msg = (f"manifest {manifest.path} is not an alerts manifest: {len(lacking)} sample(s) lack "
                   f"{'/'.join(STAMP_KEYS)} stamps (e.g. {lacking[0]!r})")
            raise ValueError(msg)
        if splits is not None:
            samples = [s for s in samples if s.get("split") in set(splits)]
        if max_alerts is not None:
            samples = samples[:int(max_alerts)]
        stacks = [np.stack([manifest.read(s, k, dtype=np.float32) for k in STAMP_KEYS]) for s in samples]
        triplets = (np.stack(stacks) if stacks
                    else np.empty((0, 3, STAMP_SIZE, STAMP_SIZE), np.float32))
        meta = pd.DataFrame([{**s, "source": s.get("source_file", "")} for s in samples])
        return AlertTable(triplets=triplets, meta=meta, skipped=list(manifest.skipped))
    if splits is not None:
        if "split" not in table.meta.columns:
            msg = "splits given but the alert table has no 'split' column"
            raise ValueError(msg)
        keep = table.meta["split"].isin(list(splits)).to_numpy()
        table = AlertTable(triplets=table.triplets[keep], meta=table.meta[keep].reset_index(drop=True),
                           skipped=table.skipped)
    if max_alerts is not None and len(table) > max_alerts:
        table = AlertTable(triplets=table.triplets[:max_alerts],
                           meta=table.meta.iloc[:max_alerts].reset_index(drop=True), skipped=table.skipped)
    return table


def _value(row: Mapping[str, Any], key: str) -> Any:
    """Return a metadata value, ``None`` for missing/NaN/empty."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _fwhm(row: Mapping[str, Any]) -> float:
    value = _value(row, "fwhm")
    try:
        fwhm = float(value)
    except (TypeError, ValueError):
        return _DEFAULT_FWHM
    return float(np.clip(fwhm, 1.0, 8.0)) if math.isfinite(fwhm) and fwhm > 0 else _DEFAULT_FWHM


def _ztf_sign(row: Mapping[str, Any]) -> int:
    """+1 for a brightening (science above reference), -1 for a fading candidate, 0 if unknown."""
    flipped = _value(row, "diff_sign_flipped")
    if flipped is not None:
        return -1 if bool(flipped) else 1
    text = str(_value(row, "isdiffpos") or "").strip().lower()
    return 1 if text in {"t", "1", "true"} else -1 if text in {"f", "0", "false"} else 0


# --------------------------------------------------------------------------- cutout ZOGY


@dataclass
class CutoutZogy:
    """ZOGY on one alert's stamps and what was assumed to run it.

    Attributes
    ----------
    result : ZogyResult
        D, P_D, S, S_corr of the 63×63 stamps (no edge mask: only the centre is read).
    fwhm_science, fwhm_reference : float
        Gaussian PSF FWHM used for each stamp (pixels).
    flux_scale : float
        Science-to-reference flux ratio F_n / F_r.
    sigma_science, sigma_reference : float
        Background noise of each stamp (DN, 1.4826·MAD).
    psf_matched : bool
        Whether the reference width came from the kernel fit.
    """

    result: ZogyResult
    fwhm_science: float
    fwhm_reference: float
    flux_scale: float
    sigma_science: float
    sigma_reference: float
    psf_matched: bool


def _robust(image: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826·MAD (std, then 1, when the MAD is zero)."""
    med = float(np.median(image))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(image - med)))
    if not sigma > 0:
        sigma = float(np.std(image)) or 1.0
    return med, sigma


def _gaussian_psf(fwhm: float) -> np.ndarray:
    sigma = fwhm / _FWHM_PER_SIGMA
    half = int(min(15, max(3, math.ceil(4.0 * sigma))))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    psf = np.exp(-(xx**2 + yy**2) / (2.0 * sigma**2))
    return psf / psf.sum()


def _match_width(sci: np.ndarray, ref: np.ndarray, sig_n: float, sig_r: float,
                 *, exclude: float = 6.0, min_pixels: int = 8) -> float | None:
    """Signed sigma of the Gaussian kernel that best matches the stamps, or None without stars.

    Positive: ``sci ≈ a · (G_sigma ⊗ ref)`` (reference sharper); negative:
    ``ref ≈ a · (G_|sigma| ⊗ sci)`` (science sharper); ``a`` is fitted but not
    used (ZTF's reference stamps share the science zero point, and a free
    flux ratio made the comparison worse). Fitted on pixels more than
    ``exclude`` px from the candidate and 3 px from the edges.
    """
    from scipy.ndimage import gaussian_filter

    yy, xx = np.indices(sci.shape)
    use = np.hypot(yy - _CENTRE, xx - _CENTRE) > exclude
    use[:3], use[-3:], use[:, :3], use[:, -3:] = False, False, False, False
    if int(np.count_nonzero(use & (ref > 10.0 * sig_r) & (sci > 5.0 * sig_n))) < min_pixels:
        return None
    best: tuple[float, float] | None = None
    for s in np.arange(0.0, 3.01, 0.25):
        for direction in (1, -1) if s > 0 else (1,):
            src, tgt, s_src, s_tgt = (ref, sci, sig_r, sig_n) if direction > 0 else (sci, ref, sig_n, sig_r)
            smooth = gaussian_filter(src, s, mode="nearest") if s > 0 else src
            den = float(np.sum(smooth[use] ** 2))
            a = float(np.sum(smooth[use] * tgt[use])) / den if den > 0 else 0.0
            if not a > 0:
                continue
            g2 = 1.0 / (4.0 * math.pi * s * s) if s > 0.5 else 1.0
            chi = float(np.sum((tgt[use] - a * smooth[use]) ** 2)) / (s_tgt**2 + a * a * s_src**2 * g2)
            if best is None or chi < best[0]:
                best = (chi, direction * s)
    return None if best is None else best[1]


def cutout_zogy(
    triplet: np.ndarray,
    *,
    fwhm: float = _DEFAULT_FWHM,
    psf: str = "match",
    gain: float = 6.2,
    sigma_astrometric: float = 0.1,
    flux_scale: float = 1.0,
) -> CutoutZogy:
    """Run AstrID's ZOGY on one alert's science and reference stamps.

    Parameters
    ----------
    triplet : numpy.ndarray
        ``(3, H, W)`` science, reference, difference stamps (DN, finite).
    fwhm : float
        Science PSF FWHM in pixels (the candidate's ``fwhm``).
    psf : {"match", "fwhm"}
        ``"match"``: reference width from a Gaussian kernel fit between the
        stamps (falls back to ``"fwhm"`` without bright stars); ``"fwhm"``:
        the same Gaussian PSF for both.
    gain : float
        Science e-/DN for the sources' Poisson noise.
    sigma_astrometric : float
        Registration noise in pixels (ZOGY's astrometric term).
    flux_scale : float
        Science-to-reference flux ratio F_n / F_r (1: ZTF's reference stamps are
        already on the science zero point).

    Returns
    -------
    CutoutZogy

    Raises
    ------
    ValueError
        For a bad shape, non-finite pixels, bad options, or what :func:`~astrid.differencing.zogy`
        rejects (a constant stamp, say).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stamps = rng.normal(100.0, 5.0, (3, 63, 63))
    >>> yy, xx = np.indices((63, 63))
    >>> stamps[0] += 400 * np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.1**2))
    >>> out = cutout_zogy(stamps, fwhm=2.6)
    >>> bool(out.result.score_corr[31, 31] > 5), out.psf_matched
    (True, False)
    """
    stamps = np.asarray(triplet, dtype=np.float64)
    if stamps.ndim != 3 or stamps.shape[0] < 2 or min(stamps.shape[1:]) < 16:
        msg = f"triplet must be (3, H, W) stamps with H, W >= 16, got shape {stamps.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(stamps[:2])):
        msg = "triplet has non-finite science or reference pixels; replace them first"
        raise ValueError(msg)
    if psf not in _PSF_MODES:
        msg = f"psf must be one of {_PSF_MODES}, got {psf!r}"
        raise ValueError(msg)
    if not (gain > 0 and math.isfinite(gain)):
        msg = f"gain must be a positive number, got {gain!r}"
        raise ValueError(msg)
    fwhm_n = float(np.clip(fwhm, 1.0, 8.0)) if math.isfinite(fwhm) and fwhm > 0 else _DEFAULT_FWHM
    med_n, sig_n = _robust(stamps[0])
    med_r, sig_r = _robust(stamps[1])
    sci, ref = stamps[0] - med_n, stamps[1] - med_r
    fwhm_r, matched = fwhm_n, False
    if psf == "match":
        s_k = _match_width(sci, ref, sig_n, sig_r)
        if s_k is not None:
            k = _FWHM_PER_SIGMA * abs(s_k)
            fwhm_r = math.sqrt(max(fwhm_n**2 - k * k, 1.0)) if s_k > 0 else math.sqrt(fwhm_n**2 + k * k)
            matched = True
    gain_r = gain * (sig_n / sig_r) ** 2
    result = zogy(
        sci, ref, _gaussian_psf(fwhm_n), _gaussian_psf(fwhm_r), sigma_science=sig_n,
        sigma_reference=sig_r, flux_scale_science=flux_scale, flux_scale_reference=1.0,
        sigma_astrometric=sigma_astrometric, variance_science=sig_n**2 + np.clip(sci, 0, None) / gain,
        variance_reference=sig_r**2 + np.clip(ref, 0, None) / gain_r, mask_edges=False,
    )
    return CutoutZogy(result=result, fwhm_science=fwhm_n, fwhm_reference=fwhm_r, flux_scale=flux_scale,
                      sigma_science=sig_n, sigma_reference=sig_r, psf_matched=matched)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, float).ravel() - np.mean(a)
    b = np.asarray(b, float).ravel() - np.mean(b)
    den = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else math.nan


def _centre_extreme(image: np.ndarray, radius: float = 1.0) -> float:
    """Return the value of largest magnitude within ``radius`` px of the stamp centre."""
    yy, xx = np.indices(image.shape)
    near = np.hypot(yy - image.shape[0] // 2, xx - image.shape[1] // 2) <= radius
    values = image[near]
    return float(values[np.argmax(np.abs(values))])


def _aperture_flux(difference: np.ndarray, fwhm: float) -> float:
    """Sum of ``difference`` within 2·FWHM (at least 4 px) of the stamp centre."""
    yy, xx = np.indices(difference.shape)
    near = np.hypot(yy - difference.shape[0] // 2, xx - difference.shape[1] // 2) <= 2.0 * max(fwhm, 2.0)
    return float(np.sum(difference[near]))


def zogy_on_alerts(
    source: Any,
    *,
    psf: str = "match",
    gain: float = 6.2,
    sigma_astrometric: float = 0.1,
    central: int = 31,
    max_alerts: int | None = None,
) -> Any:
    """Run ZOGY on every alert's stamps and compare with ZTF's difference (one row per alert).

    See the module notes for the comparison: ``correlation`` is the Pearson
    correlation of our matched-filter score S with ZTF's difference filtered
    by the same P_D over the central ``central``×``central`` pixels;
    ``correlation_raw`` correlates our D with ZTF's difference directly.

    The candidate's sign (``sign_ours``) is that of S_corr's extreme within
    1 px of the centre where it is significant (``|S_corr|`` >=
    :data:`SIGN_SCORR_MIN`, ``sign_from="scorr"``), else that of our D summed
    within 2·FWHM (``flux_aperture``, ``sign_from="aperture"``): a faint
    change on a bright star leaves a PSF-mismatch ring whose centre pixel
    may have either sign, but whose summed flux is the change in brightness.

    Parameters
    ----------
    source : AlertTable, Manifest or path-like
        Alerts (see :func:`load_alerts`).
    psf, gain, sigma_astrometric
        As :func:`cutout_zogy`.
    central : int
        Side of the central box that is correlated (odd, at most 63).
    max_alerts : int, optional
        Use at most this many alerts.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ZOGY_COLUMNS`; a failed subtraction leaves NaNs and says
        why in ``error``.

    Raises
    ------
    ValueError
        For bad options.

    Examples
    --------
    >>> import pandas as pd
    >>> from astrid.alerts import AlertTable
    >>> rng = np.random.default_rng(1)
    >>> stamps = rng.normal(100.0, 5.0, (1, 3, 63, 63)).astype(np.float32)
    >>> yy, xx = np.indices((63, 63))
    >>> blob = 300 * np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 1.1**2))
    >>> stamps[0, 0] += blob; stamps[0, 2] = stamps[0, 0] - stamps[0, 1]
    >>> meta = pd.DataFrame([{"candid": 1, "objectId": "ZTFx", "isdiffpos": "t", "fwhm": 2.6,
    ...                       "sigmapsf": 0.05, "diff_sign_flipped": False}])
    >>> row = zogy_on_alerts(AlertTable(stamps, meta)).iloc[0]
    >>> bool(row.sign_agrees), bool(row.correlation > 0.9)
    (True, True)
    """
    import pandas as pd
    from scipy.ndimage import correlate

    if central % 2 != 1 or not 3 <= central <= STAMP_SIZE:
        msg = f"central must be odd and in [3, {STAMP_SIZE}], got {central}"
        raise ValueError(msg)
    table = load_alerts(source, max_alerts=max_alerts)
    half = central // 2
    rows = []
    for stamps, meta in zip(table.triplets, table.meta.to_dict("records"), strict=True):
        sign_ztf = _ztf_sign(meta)
        sigmapsf = _value(meta, "sigmapsf")
        row: dict[str, Any] = {
            "candid": int(meta["candid"]), "objectId": meta.get("objectId"),
            "isdiffpos": meta.get("isdiffpos"), "sign_ztf": sign_ztf,
            "snr_ztf": _MAG_TO_SNR / float(sigmapsf) if sigmapsf else math.nan,
            "scorr_ztf": float(_value(meta, "scorr") or math.nan), "sign_agrees": False, "error": "",
        }
        try:
            out = cutout_zogy(stamps, fwhm=_fwhm(meta), psf=psf, gain=gain,
                              sigma_astrometric=sigma_astrometric)
        except ValueError as err:
            row["error"] = str(err)
            rows.append(row)
            continue
        res = out.result
        cy, cx = stamps.shape[1] // 2, stamps.shape[2] // 2
        box = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
        ztf_filtered = correlate(np.asarray(stamps[2], float), np.asarray(res.psf_difference, float),
                                 mode="nearest")
        scorr = _centre_extreme(np.asarray(res.score_corr, float))
        flux = _aperture_flux(np.asarray(res.difference, float), out.fwhm_science)
        sign_from = "scorr" if abs(scorr) >= SIGN_SCORR_MIN else "aperture"
        sign = int(np.sign(scorr if sign_from == "scorr" else flux))
        row.update(
            fwhm_science=out.fwhm_science, fwhm_reference=out.fwhm_reference,
            psf_matched=out.psf_matched,
            correlation=_pearson(np.asarray(res.score)[box], ztf_filtered[box]),
            correlation_raw=_pearson(np.asarray(res.difference)[box], stamps[2][box]),
            sign_ours=sign, sign_agrees=bool(sign_ztf != 0 and sign == sign_ztf), sign_from=sign_from,
            scorr_ours=scorr, flux_aperture=flux, snr_ours=abs(scorr),
        )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(ZOGY_COLUMNS))
    frame["psf_matched"] = frame["psf_matched"].astype("boolean")
    frame["sign_agrees"] = frame["sign_agrees"].astype(bool)
    return frame


def summarise_zogy(frame: Any) -> dict[str, float]:
    """Headline numbers of :func:`zogy_on_alerts`: correlations, sign agreement, S/N ratios.

    Returns
    -------
    dict
        ``n_alerts``, ``n_failed``, ``median_correlation``, ``median_correlation_raw``,
        ``fraction_correlation_above_0.8``, ``sign_agreement``, ``median_snr_ratio``
        (ours / ZTF's 1.0857/sigmapsf), ``median_scorr_ratio`` (ours / ZTF's ``scorr``)
        and ``snr_rank_correlation`` (Spearman, ours vs ZTF's ``scorr``).

    Examples
    --------
    >>> import pandas as pd
    >>> f = pd.DataFrame({"correlation": [0.9, 0.5], "correlation_raw": [0.7, 0.4],
    ...                   "sign_agrees": [True, False], "snr_ours": [10.0, 5.0],
    ...                   "snr_ztf": [10.0, 10.0], "scorr_ztf": [8.0, 4.0], "error": ["", ""]})
    >>> s = summarise_zogy(f)
    >>> s["median_correlation"], s["sign_agreement"], s["median_snr_ratio"]
    (0.7, 0.5, 0.75)
    """
    from scipy.stats import spearmanr

    ok = frame[frame["error"].fillna("") == ""] if "error" in frame else frame
    snr = ok["snr_ours"].to_numpy(float)
    ztf = ok["snr_ztf"].to_numpy(float)
    scorr = ok["scorr_ztf"].to_numpy(float)
    both = np.isfinite(snr) & np.isfinite(scorr)
    rank = float(spearmanr(snr[both], scorr[both]).statistic) if both.sum() >= 3 else math.nan

    def median(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else math.nan

    corr = ok["correlation"].to_numpy(float)
    return {
        "n_alerts": len(frame),
        "n_failed": len(frame) - len(ok),
        "median_correlation": median(corr),
        "median_correlation_raw": median(ok["correlation_raw"].to_numpy(float)),
        "fraction_correlation_above_0.8": float(np.mean(corr[np.isfinite(corr)] > 0.8))
        if np.isfinite(corr).any() else math.nan,
        "sign_agreement": float(ok["sign_agrees"].astype(bool).mean()) if len(ok) else math.nan,
        "median_snr_ratio": median(snr / ztf),
        "median_scorr_ratio": median(snr / scorr),
        "snr_rank_correlation": rank,
    }


# --------------------------------------------------------------------------- scoring


def resolve_model(
    model: Any = None,
    *,
    bundle: str | os.PathLike | None = None,
    tracking_uri: str | None = None,
    device: str = "cpu",
) -> tuple[Any, str, str]:
    """Find the U-Net to score with: a bundle, a registered ``NAME[:VERSION]``, a URI, or the default.

    Parameters
    ----------
    model : TrainedModel or str, optional
        A loaded model; ``"NAME"`` / ``"NAME:VERSION"`` of a registered model;
        or a ``models:/``/``runs:/`` URI. With neither ``model`` nor
        ``bundle``: the latest version of the first registered model (by name).
    bundle : path-like, optional
        A model bundle folder (:func:`astrid.model.save_model`).
    tracking_uri : str, optional
        MLflow store (default :func:`astrid.tracking.resolve_tracking_uri`).
    device : str
        Where to load the network.

    Returns
    -------
    model : TrainedModel
    name : str
        Registered name, URI or bundle path.
    version : str
        Registered version, or ``""``.

    Raises
    ------
    ValueError
        When both ``model`` and ``bundle`` are given, or no model is registered.

    Examples
    --------
    >>> import tempfile
    >>> from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet, save_model
    >>> spec = UNetSpec.named("tiny", n_channels=1)
    >>> path = save_model(TrainedModel(build_unet(1, spec=spec), ModelConfig(spec, ["difference"])),
    ...                   tempfile.mkdtemp())
    >>> model, name, version = resolve_model(bundle=path)
    >>> model.config.channels, version
    (('difference',), '')
    """
    if model is not None and bundle is not None:
        msg = "give either model (a registered NAME[:VERSION] or URI) or bundle, not both"
        raise ValueError(msg)
    if bundle is not None:
        from astrid.model import load_model

        return load_model(bundle, device=device), str(bundle), ""
    if model is not None and not isinstance(model, str | os.PathLike):
        return model, "in-memory", ""
    from astrid import tracking

    text = str(model) if model is not None else ""
    if text.startswith(("models:/", "runs:/")) or (text and Path(text).is_dir()):
        return tracking.load_model_uri(text, tracking_uri=tracking_uri, device=device), text, ""
    table = tracking.list_models(tracking_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if not text:
        if table.empty:
            msg = (f"no registered model in the tracking store {uri}: train one (notebook 03, "
                   "track_mlflow=True) or give a model NAME[:VERSION] or a bundle folder")
            raise ValueError(msg)
        name = str(sorted(table["name"])[0])
        version = None
    else:
        name, _, version = text.partition(":")
        version = version or None
    if table.empty or name not in set(table["name"]):
        known = ", ".join(sorted(set(table["name"]))) or "none"
        msg = f"no registered model {name!r} in {uri} (registered: {known})"
        raise ValueError(msg)
    if version is None or version.lower() == "latest":
        version = str(int(table.loc[table["name"] == name, "version"].max()))
    loaded = tracking.load_registered_model(name, version, tracking_uri=tracking_uri, device=device)
    return loaded, name, version


def _model_inputs(stamps: np.ndarray, meta: Mapping[str, Any], channels: Sequence[str], *,
                  psf: str, difference: str, gain: float) -> np.ndarray:
    """(C, H, W) float32 stack of one alert in the model's channel order."""
    images: dict[str, np.ndarray] = {"science": stamps[0], "reference": stamps[1], "difference": stamps[2]}
    if "score" in channels or difference == "zogy":
        out = cutout_zogy(stamps, fwhm=_fwhm(meta), psf=psf, gain=gain).result
        images["score"] = np.asarray(out.score_corr)
        if difference == "zogy":
            images["difference"] = np.asarray(out.difference)
    return np.stack([np.asarray(images[c], np.float32) for c in channels])


@dataclass
class AlertInputs:
    """Model input stacks of a table's alerts (:func:`alert_inputs`): the cutout ZOGY done once.

    Attributes
    ----------
    stacks : numpy.ndarray
        ``(N, C, 63, 63)`` float32, one per alert that could be differenced.
    rows : list of dict
        ``candid``, ``objectId`` and ``source`` of each stack.
    skipped : list of dict
        The table's skipped inputs and the alerts ZOGY failed on (``reason`` ``"zogy_failed"``).
    channels : tuple of str
        Channel order of the stacks.
    """

    stacks: np.ndarray
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    channels: tuple[str, ...]

    def subset(self, candids: Iterable[int]) -> AlertInputs:
        """Return the inputs of the alerts ``candids`` only (skipped entries of theirs included)."""
        wanted = {int(c) for c in candids}
        keep = [i for i, row in enumerate(self.rows) if row["candid"] in wanted]
        return AlertInputs(self.stacks[keep], [self.rows[i] for i in keep],
                           [s for s in self.skipped if _candid_in(s.get("candid"), wanted)], self.channels)


def _candid_in(value: Any, wanted: set[int]) -> bool:
    try:
        return int(value) in wanted
    except (TypeError, ValueError):
        return False


def alert_inputs(
    source: Any,
    channels: Sequence[str],
    *,
    max_alerts: int | None = None,
    max_nan_fraction: float = 0.05,
    psf: str = "match",
    difference: str = "ztf",
    gain: float = 6.2,
) -> AlertInputs:
    """Build the model inputs of every alert once, to score them with several models.

    Parameters
    ----------
    source : AlertTable, Manifest, path-like or iterable of path-like
        Alerts (see :func:`load_alerts`).
    channels : sequence of str
        The models' input channels (``science``, ``reference``, ``difference``, ``score``).
    max_alerts, max_nan_fraction, psf, difference, gain
        As for :func:`score_alerts`.

    Returns
    -------
    AlertInputs
        Pass it to :func:`score_alerts` as ``source``.

    Raises
    ------
    ValueError
        For bad options or unknown channels.
    """
    if difference not in {"ztf", "zogy"}:
        msg = f"difference must be 'ztf' or 'zogy', got {difference!r}"
        raise ValueError(msg)
    if psf not in _PSF_MODES:
        msg = f"psf must be one of {_PSF_MODES}, got {psf!r}"
        raise ValueError(msg)
    unknown = sorted(set(channels) - {"science", "reference", "difference", "score"})
    if unknown or not channels:
        msg = f"channels must be some of science, reference, difference, score; got {list(channels)!r}"
        raise ValueError(msg)
    table = load_alerts(source, max_alerts=max_alerts, max_nan_fraction=max_nan_fraction)
    skipped = list(table.skipped)
    stacks, rows = [], []
    for stamps, meta in zip(table.triplets, table.meta.to_dict("records"), strict=True):
        try:
            stacks.append(_model_inputs(stamps, meta, channels, psf=psf, difference=difference, gain=gain))
        except ValueError as err:
            skipped.append({"source": meta.get("source", ""), "candid": meta["candid"],
                            "reason": "zogy_failed", "detail": str(err)})
            continue
        rows.append({"candid": int(meta["candid"]), "objectId": meta.get("objectId"),
                     "source": meta.get("source", "")})
    shape = (0, len(channels), STAMP_SIZE, STAMP_SIZE)
    return AlertInputs(np.stack(stacks) if stacks else np.zeros(shape, np.float32), rows, skipped,
                       tuple(channels))


def _skipped_rows(skipped: Iterable[Mapping[str, Any]], name: str, version: str) -> list[dict[str, Any]]:
    return [{"candid": s.get("candid"), "objectId": None, "score": math.nan,
             "score_uncertainty": math.nan, "kind": "", "top_class": "", "model_name": name,
             "model_version": version, "skipped_reason": f"{s.get('reason')}: {s.get('detail', '')}",
             "source": s.get("source", "")} for s in skipped]


def score_alerts(
    source: Any,
    model: Any,
    *,
    max_alerts: int | None = None,
    max_nan_fraction: float = 0.05,
    psf: str = "match",
    difference: str = "ztf",
    gain: float = 6.2,
    radius: float = 4.0,
    mc_samples: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    model_name: str | None = None,
    model_version: str | None = None,
    seed: int = 0,
) -> Any:
    """Score every alert with a U-Net: real probability, kind and uncertainty at the candidate.

    Parameters
    ----------
    source : AlertTable, Manifest, path-like, iterable of path-like or AlertInputs
        Alerts (see :func:`load_alerts`), or their model inputs from
        :func:`alert_inputs` (then the reading and ZOGY options here are not used).
    model : TrainedModel, path-like or str
        A model, a bundle folder, or anything :func:`resolve_model` takes.
    max_alerts : int, optional
        Score at most this many alerts.
    max_nan_fraction : float
        NaN tolerance when reading files: stamps with at most this fraction of
        NaN pixels have them replaced by the stamp median.
    psf : {"match", "fwhm"}
        PSF choice of the cutout ZOGY that makes the ``score`` channel.
    difference : {"ztf", "zogy"}
        ``difference`` channel: ZTF's own stamp or our ZOGY D.
    gain : float
        Science e-/DN (cutout ZOGY).
    radius : float
        Pixels from the centre over which the probabilities are read.
    mc_samples : int
        Monte-Carlo dropout passes (0: one deterministic pass).
    batch_size : int
        Stamps per forward pass.
    device : str
        Inference device (``"cpu"``, ``"cuda"``, ``"auto"``).
    model_name, model_version : str, optional
        Recorded in the table (default: from :func:`resolve_model`).
    seed : int
        Seed of the Monte-Carlo dropout masks.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SCORE_COLUMNS`, one row per alert read and one per
        skipped input (empty ``score``, ``skipped_reason`` = ``"<reason>: <detail>"``).

    Raises
    ------
    ValueError
        For bad options, or inputs built for other channels than the model's.

    Examples
    --------
    >>> import pandas as pd
    >>> from astrid.alerts import AlertTable
    >>> from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet
    >>> spec = UNetSpec.named("tiny", n_channels=2)
    >>> net = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("difference", "score")))
    >>> stamps = np.random.default_rng(0).normal(100, 5, (2, 3, 63, 63)).astype(np.float32)
    >>> meta = pd.DataFrame({"candid": [1, 2], "objectId": ["a", "b"], "fwhm": [2.5, 3.0]})
    >>> scores = score_alerts(AlertTable(stamps, meta), net)
    >>> bool(scores["score"].between(0, 1).all()), bool(scores["kind"].isin(TRANSIENT_KINDS).all())
    (True, True)
    """
    import pandas as pd

    from astrid.model import predict_image

    if not radius >= 0:
        msg = f"radius must be >= 0 pixels, got {radius!r}"
        raise ValueError(msg)
    if isinstance(model, str | os.PathLike):
        loaded, name, version = resolve_model(model, device=device)
    else:
        loaded, name, version = model, "in-memory", ""
    name = model_name or name
    version = str(model_version) if model_version is not None else version
    channels = tuple(loaded.config.channels)
    if isinstance(source, AlertInputs):
        if source.channels != channels:
            msg = f"inputs were built for channels {source.channels}, the model takes {channels}"
            raise ValueError(msg)
        inputs = source
    else:
        inputs = alert_inputs(source, channels, max_alerts=max_alerts, max_nan_fraction=max_nan_fraction,
                              psf=psf, difference=difference, gain=gain)
    rows = [dict(row) for row in inputs.rows]
    skipped = list(inputs.skipped)
    if rows:
        multiple = loaded.config.spec.multiple
        tile = -(-max(STAMP_SIZE, multiple) // multiple) * multiple
        pred = predict_image(loaded, inputs.stacks, tile_size=tile, overlap=0, batch_size=batch_size,
                             device=device, mc_samples=mc_samples, nonfinite="fill", seed=seed)
        classes = list(pred.classes)
        t_codes = [classes.index(k) for k in TRANSIENT_KINDS if k in classes]
        fg_codes = [i for i, c in enumerate(classes) if c != "background"]
        h, w = pred.probabilities.shape[-2:]
        yy, xx = np.indices((h, w))
        disk = np.hypot(yy - h // 2, xx - w // 2) <= radius
        probs = pred.probabilities[:, :, disk]  # (N, K, P)
        real = np.clip(probs[:, t_codes].sum(1), 0.0, 1.0)  # float32 sums may pass 1 by rounding
        kinds = np.asarray([classes[t_codes[i]] for i in probs[:, t_codes].mean(2).argmax(1)])
        top = np.asarray([classes[fg_codes[i]] for i in probs[:, fg_codes].max(2).argmax(1)])
        unc = pred.uncertainty[:, disk].mean(1)
        for i, row in enumerate(rows):
            row.update(score=float(real[i].max()), score_uncertainty=float(unc[i]), kind=str(kinds[i]),
                       top_class=str(top[i]), model_name=name, model_version=version, skipped_reason="")
    rows += _skipped_rows(skipped, name, version)
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    frame["candid"] = _candids([r["candid"] for r in rows])  # int64-exact: candids exceed 2**53
    return frame


# --------------------------------------------------------------------------- agreement with ZTF


def _candids(values: Iterable[Any]) -> Any:
    """Return nullable Int64 candids without a trip through float (they exceed 2**53)."""
    import pandas as pd

    out = []
    for value in values:
        try:
            out.append(None if value is None or pd.isna(value) else int(value))
        except (TypeError, ValueError):
            out.append(None)
    return pd.array(out, dtype="Int64")


def _labels_frame(meta: Any) -> Any:
    """Metadata with numeric ``drb``, ``drb_label``, ``label_asteroid``, ``label_tns`` per candid."""
    import pandas as pd

    frame = meta.meta if isinstance(meta, AlertTable) else meta
    frame = pd.DataFrame(frame).copy()
    if "candid" not in frame.columns:
        msg = "meta_df needs a 'candid' column"
        raise ValueError(msg)
    frame["candid"] = _candids(frame["candid"])
    frame = frame.dropna(subset=["candid"]).drop_duplicates("candid")
    drb = pd.to_numeric(frame["drb"], errors="coerce") if "drb" in frame else pd.Series(np.nan, frame.index)
    frame["drb"] = drb
    if "drb_label" in frame:
        frame["drb_label"] = pd.to_numeric(frame["drb_label"], errors="coerce")
    else:
        frame["drb_label"] = np.where(drb.notna(), (drb > 0.5).astype(float), np.nan)
    if "label_asteroid" in frame:
        frame["label_asteroid"] = pd.to_numeric(frame["label_asteroid"], errors="coerce").fillna(0)
    else:
        ss = pd.to_numeric(frame.get("ssdistnr", pd.Series(np.nan, frame.index)), errors="coerce")
        frame["label_asteroid"] = ((ss >= 0) & (ss <= 1.0)).astype(float)
    tns = frame.get("label_tns_class", pd.Series("", frame.index)).fillna("").astype(str).str.strip()
    frame["label_tns_class"] = tns
    return frame


def _auc(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int, float]:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(labels) & np.isfinite(scores)
    y, s = labels[ok].astype(int), scores[ok]
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        return int(y.size), positives, math.nan
    return int(y.size), positives, float(roc_auc_score(y, s))


def compare_with_ztf(
    scores_df: Any,
    meta_df: Any,
    *,
    threshold: float = 0.5,
    n_disagreements: int = 12,
) -> dict[str, Any]:
    """Compare our real scores with ZTF's ``drb`` and with known asteroids.

    ``drb_label`` (``drb > 0.5``) is ZTF's own model, so AUC against it
    measures *agreement with ZTF*, not accuracy. ``label_asteroid`` (a known
    solar-system object within 1") marks sources that are certainly real:
    they should score real, and its AUC asks whether asteroids outrank the
    other alerts (mostly real too, so expect modest values). ZTF's ``drb``
    against ``drb_label`` would be 1 by construction and is left out.

    Parameters
    ----------
    scores_df : pandas.DataFrame
        :func:`score_alerts` output (``candid``, ``score``; rows without a score are ignored).
    meta_df : pandas.DataFrame or AlertTable
        Alert metadata with ``candid`` and ``drb`` (and ``drb_label``,
        ``label_asteroid``/``ssdistnr``, ``label_tns_class`` where known):
        ``labels.csv``, ``AlertTable.meta`` or a manifest's samples.
    threshold : float
        Operating threshold on our score (and on ``drb``).
    n_disagreements : int
        Rows of the disagreement table.

    Returns
    -------
    dict
        ``n_scored``, ``n_with_drb``, ``threshold``, ``auc`` (table: scorer,
        label, n, n_positive, auc), ``auc_vs_drb_label``, ``auc_vs_asteroid``,
        ``drb_auc_vs_asteroid``, ``asteroid_real_fraction``,
        ``drb_asteroid_real_fraction``, ``tns_real_fraction``,
        ``agreement_with_drb`` and ``disagreements`` (the alerts where
        ``|score - drb|`` is largest).

    Raises
    ------
    ValueError
        When a table lacks ``candid`` or ``score``, or ``threshold`` is outside (0, 1).

    Examples
    --------
    >>> import pandas as pd
    >>> scores = pd.DataFrame({"candid": [1, 2, 3, 4], "score": [0.9, 0.8, 0.3, 0.1]})
    >>> meta = pd.DataFrame({"candid": [1, 2, 3, 4], "drb": [0.99, 0.2, 0.7, 0.05],
    ...                      "ssdistnr": [0.5, -999.0, -999.0, -999.0]})
    >>> out = compare_with_ztf(scores, meta)
    >>> out["auc_vs_drb_label"], out["asteroid_real_fraction"]
    (0.75, 1.0)
    """
    import pandas as pd

    if not 0 < threshold < 1:
        msg = f"threshold must be in (0, 1), got {threshold!r}"
        raise ValueError(msg)
    if "candid" not in scores_df.columns or "score" not in scores_df.columns:
        msg = "scores_df needs 'candid' and 'score' columns (score_alerts output)"
        raise ValueError(msg)
    scores = pd.DataFrame(scores_df).copy()
    scores["candid"] = _candids(scores["candid"])
    scores["score"] = pd.to_numeric(scores["score"], errors="coerce")
    scores = scores.dropna(subset=["candid", "score"]).drop_duplicates("candid")
    meta = _labels_frame(meta_df)
    keep = ["candid", "drb", "drb_label", "label_asteroid", "label_tns_class"]
    keep += [c for c in ("objectId", "isdiffpos", "magpsf", "ssdistnr") if c in meta and c not in scores]
    both = scores.merge(meta[keep], on="candid", how="inner")
    s = both["score"].to_numpy(float)
    drb = both["drb"].to_numpy(float)
    asteroid = both["label_asteroid"].to_numpy(float)
    table = []
    for scorer, values in (("astrid", s), ("ztf_drb", drb)):
        for label in ("drb_label", "label_asteroid"):
            if scorer == "ztf_drb" and label == "drb_label":
                continue  # drb against its own threshold: 1 by construction
            n, n_pos, auc = _auc(both[label].to_numpy(float), values)
            table.append({"scorer": scorer, "label": label, "n": n, "n_positive": n_pos, "auc": auc})
    auc = pd.DataFrame(table, columns=["scorer", "label", "n", "n_positive", "auc"])

    def fraction(mask: np.ndarray, values: np.ndarray) -> float:
        chosen = values[mask & np.isfinite(values)]
        return float(np.mean(chosen >= threshold)) if chosen.size else math.nan

    is_ast = asteroid == 1
    has_drb = np.isfinite(drb)
    disagree = both[has_drb].assign(disagreement=np.abs(s[has_drb] - drb[has_drb]))
    disagree = disagree.sort_values("disagreement", ascending=False, kind="stable").head(n_disagreements)
    order = ["candid", "objectId", "score", "drb", "disagreement", "kind", "label_asteroid",
             "label_tns_class", "isdiffpos", "magpsf"]
    disagree = disagree[[c for c in order if c in disagree.columns]].reset_index(drop=True)
    lookup = {(r["scorer"], r["label"]): r["auc"] for r in table}
    return {
        "n_scored": len(both),
        "n_with_drb": int(has_drb.sum()),
        "threshold": float(threshold),
        "auc": auc,
        "auc_vs_drb_label": lookup[("astrid", "drb_label")],
        "auc_vs_asteroid": lookup[("astrid", "label_asteroid")],
        "drb_auc_vs_asteroid": lookup[("ztf_drb", "label_asteroid")],
        "asteroid_real_fraction": fraction(is_ast, s),
        "drb_asteroid_real_fraction": fraction(is_ast, np.where(drb > threshold, 1.0, np.where(
            has_drb, 0.0, np.nan))),
        "tns_real_fraction": fraction(both["label_tns_class"].to_numpy(str) != "", s),
        "agreement_with_drb": float(np.mean((s[has_drb] >= threshold) == (drb[has_drb] > threshold)))
        if has_drb.any() else math.nan,
        "disagreements": disagree,
    }


# --------------------------------------------------------------------------- weak labels


def weak_label(
    sample: Mapping[str, Any], *, low: float = 0.2, high: float = 0.8
) -> tuple[str, str, str] | None:
    """Alert-level label from the evidence at hand, strongest first, or None.

    Order: a human consensus label (``label_real`` / ``human_kind`` from
    :func:`astrid.labelling.consensus_to_manifest`), a TNS class (real:
    ``supernova`` for ``SN*``/``TDE``, else ``variable``), a known asteroid
    (real, ``moving``), ZTF's ``drb`` in its confident bands (real when
    ``drb >= high`` with kind ``""`` for :func:`weak_label_map` to decide;
    bogus when ``drb <= low``). Alerts with ``low < drb < high`` or no
    evidence get None (left out of training).

    Returns
    -------
    (label, kind, labeller) or None
        ``label`` is ``"real"`` or ``"bogus"``; ``labeller`` is ``"human"``,
        ``"tns"``, ``"ssdistnr"`` or ``"ztf-drb"``.

    Raises
    ------
    ValueError
        When not ``0 <= low < high <= 1``.

    Examples
    --------
    >>> weak_label({"drb": 0.97}), weak_label({"drb": 0.05}), weak_label({"drb": 0.5})
    (('real', '', 'ztf-drb'), ('bogus', 'background', 'ztf-drb'), None)
    >>> weak_label({"drb": 0.05, "label_asteroid": 1})
    ('real', 'moving', 'ssdistnr')
    """
    if not 0 <= low < high <= 1:
        msg = f"need 0 <= low < high <= 1, got low={low!r}, high={high!r}"
        raise ValueError(msg)
    human = _value(sample, "label_real")
    if human is not None and int(human) in (0, 1):
        kind = str(_value(sample, "human_kind") or "")
        if int(human) == 1:
            return "real", kind if kind in TRANSIENT_KINDS else "", "human"
        return "bogus", kind if kind in ARTIFACT_KINDS else "background", "human"
    tns = str(_value(sample, "label_tns_class") or "").strip()
    if tns:
        upper = tns.upper()
        return "real", "supernova" if upper.startswith(("SN", "TDE")) else "variable", "tns"
    if _value(sample, "label_asteroid") in (1, 1.0, True):
        return "real", "moving", "ssdistnr"
    drb = _value(sample, "drb")
    if drb is None:
        return None
    drb = float(drb)
    if drb >= high:
        return "real", "", "ztf-drb"
    if drb <= low:
        return "bogus", "background", "ztf-drb"
    return None


def weak_label_map(
    triplet: np.ndarray,
    *,
    label: str,
    kind: str = "",
    fwhm: float = _DEFAULT_FWHM,
    mask_sigma: float = 3.0,
) -> tuple[np.ndarray, str]:
    """Per-pixel weak labels of one alert triplet, in the style of the synthetic label maps.

    A bogus alert is background everywhere (its artifact kind is unknown; the
    point is that nothing at the centre is a transient). A real alert gets a
    core disk of radius ``max(fwhm / 2, 1.5)`` px at the centre, plus the
    pixels within ``1.5 * fwhm`` (at least 3 px) where the difference,
    with the candidate's sign, exceeds ``mask_sigma`` times its noise, as
    the simulator labels transients. An empty ``kind`` becomes
    ``"variable"`` when the reference holds a source at the centre (> 5σ in
    the central 3×3) or the candidate faded, else ``"supernova"``.

    Parameters
    ----------
    triplet : numpy.ndarray
        ``(3, H, W)`` science, reference, difference (science minus reference).
    label : {"real", "bogus"}
        Alert-level label.
    kind : str
        Transient kind for a real alert (``""``: decide as above).
    fwhm : float
        Candidate FWHM in pixels.
    mask_sigma : float
        Threshold of the extended mask, in difference-noise units.

    Returns
    -------
    class_map : numpy.ndarray
        ``(H, W)`` uint8 codes of :data:`astrid.classes.CLASS_NAMES`.
    kind : str
        The kind painted (``"background"`` for bogus).

    Raises
    ------
    ValueError
        For an unknown ``label`` or ``kind``, or a bad triplet shape.

    Examples
    --------
    >>> stamps = np.zeros((3, 63, 63)); stamps[0, 31, 31] = stamps[2, 31, 31] = 50.0
    >>> stamps += np.random.default_rng(0).normal(0, 1, stamps.shape)
    >>> labels, kind = weak_label_map(stamps, label="real", fwhm=3.0)
    >>> kind, int(labels[31, 31]), int(labels[0, 0])
    ('supernova', 1, 0)
    """
    stamps = np.asarray(triplet, dtype=np.float64)
    if stamps.ndim != 3 or stamps.shape[0] != 3:
        msg = f"triplet must be (3, H, W), got shape {stamps.shape}"
        raise ValueError(msg)
    shape = stamps.shape[1:]
    if label == "bogus":
        return np.zeros(shape, np.uint8), "background"
    if label != "real":
        msg = f"label must be 'real' or 'bogus', got {label!r}"
        raise ValueError(msg)
    if kind and kind not in TRANSIENT_KINDS:
        msg = f"kind of a real alert must be one of {TRANSIENT_KINDS} or '', got {kind!r}"
        raise ValueError(msg)
    cy, cx = shape[0] // 2, shape[1] // 2
    centre = (slice(cy - 1, cy + 2), slice(cx - 1, cx + 2))
    diff = stamps[2] - np.median(stamps[2])
    _, sig_d = _robust(stamps[2])
    sign = 1.0 if diff[centre].sum() >= 0 else -1.0
    if not kind:
        med_r, sig_r = _robust(stamps[1])
        has_host = (stamps[1][centre] - med_r).sum() > 5.0 * 3.0 * sig_r
        kind = "variable" if has_host or sign < 0 else "supernova"
    yy, xx = np.indices(shape)
    r = np.hypot(yy - cy, xx - cx)
    mask = r <= max(fwhm / 2.0, 1.5)
    mask |= (r <= max(1.5 * fwhm, 3.0)) & (sign * diff > mask_sigma * sig_d)
    labels = np.zeros(shape, np.uint8)
    labels[mask] = CLASS_CODES[kind]
    return labels, kind


def weak_label_manifest(
    alerts_manifest: Manifest | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    low: float = 0.2,
    high: float = 0.8,
    psf: str = "match",
    gain: float = 6.2,
    overwrite: bool = False,
) -> Manifest:
    """Derive a training manifest of weakly labelled alerts (``labels`` and ``score`` added).

    Every alert with a :func:`weak_label` is kept: its stamps are copied
    (same relative paths and bytes), our cutout ZOGY S_corr is written as
    ``score`` and :func:`weak_label_map` as ``labels``, so
    :func:`astrid.model.data.load_split` reads it like a synthetic sample.
    Splits come from the alerts manifest (by ``objectId``). Alerts without a
    confident label are listed in ``skipped``.

    Parameters
    ----------
    alerts_manifest : Manifest or path-like
        From :func:`astrid.alerts.alerts_to_manifest` (or a labelled copy from
        :func:`astrid.labelling.consensus_to_manifest`).
    output_dir : path-like
        New (or empty) folder.
    low, high : float
        ``drb`` bands of :func:`weak_label`.
    psf, gain : str, float
        Cutout ZOGY options (:func:`cutout_zogy`).
    overwrite : bool
        Empty a non-empty ``output_dir`` first.

    Returns
    -------
    Manifest
        ``kind="ztf_alerts_weak"``; samples carry ``weak_label``, ``weak_kind``
        and ``weak_labeller``.

    Raises
    ------
    ValueError
        When no alert has a confident label.
    """
    source = alerts_manifest if isinstance(alerts_manifest, Manifest) else Manifest.load(alerts_manifest)
    root = prepare_output_dir(output_dir, overwrite=overwrite)
    manifest = Manifest(
        root=root, name=f"{source.name}_weak", kind="ztf_alerts_weak",
        generator={"function": "astrid.realdata.weak_label_manifest", "source": str(source.path),
                   "source_hash": source.content_hash(), "low": low, "high": high, "psf": psf,
                   "gain": gain},
        info={**provenance(), "labels": "weak per-pixel labels from alert-level evidence "
              "(human > tns > ssdistnr > ztf-drb bands); see astrid.realdata.weak_label_map"},
    )
    for sample in source.samples:
        found = weak_label(sample, low=low, high=high)
        if found is None:
            manifest.skipped.append({"id": sample["id"], "reason": "no confident label",
                                     "drb": sample.get("drb")})
            continue
        label, kind, labeller = found
        stamps = np.stack([source.read(sample, k, dtype=np.float32) for k in STAMP_KEYS])
        try:
            score = cutout_zogy(stamps, fwhm=_fwhm(sample), psf=psf, gain=gain).result.score_corr
        except ValueError as err:
            manifest.skipped.append({"id": sample["id"], "reason": f"zogy failed: {err}"})
            continue
        labels, kind = weak_label_map(stamps, label=label, kind=kind, fwhm=_fwhm(sample))
        entry = json.loads(json.dumps(sample, default=str))
        for key in STAMP_KEYS:
            rel = sample[key]
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / rel, root / rel)
            manifest.record_file(rel)
        for key, image in (("score", np.asarray(score, np.float32)), ("labels", labels)):
            rel = f"{key}/{sample['id']}_{key}.fits"
            header = {"STAMP": key, "CANDID": int(sample["candid"])}
            manifest.files[rel] = write_fits(root / rel, image, header)
            entry[key] = rel
        entry.update(weak_label=label, weak_kind=kind, weak_labeller=labeller)
        manifest.samples.append(entry)
    if not manifest.samples:
        msg = (f"no alert of {source.path} has a confident label (drb <= {low} or >= {high}, "
               "asteroid, TNS or human)")
        raise ValueError(msg)
    manifest.info["n_labelled"] = len(manifest.samples)
    manifest.info["label_counts"] = {k: sum(s["weak_kind"] == k for s in manifest.samples)
                                     for k in sorted({s["weak_kind"] for s in manifest.samples})}
    manifest.save()
    return manifest


# --------------------------------------------------------------------------- fine-tuning


def finetune_on_alerts(
    model: Any,
    alerts_manifest: Manifest | str | os.PathLike,
    *,
    real_fraction: float,
    epochs: int,
    synthetic_manifest: Manifest | str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    lr: float = 1e-3,
    batch_size: int = 16,
    tiles_per_epoch: int = 128,
    tile_size: int | None = None,
    empty_fraction: float = 0.25,
    device: str = "cpu",
    seed: int = 0,
    calibrate: bool = True,
) -> Any:
    """Fine-tune a (synthetic) U-Net on weakly labelled real alerts mixed with synthetic tiles.

    Runs :func:`astrid.model.train_unet` with ``init_model=model``: fastai
    one-cycle training (AdamW) from ``model``'s weights, with its
    architecture, channels and normalisation, on tiles drawn from the
    synthetic ``train`` split with probability ``1 - real_fraction`` and from
    the weakly labelled alerts' ``train`` split with probability
    ``real_fraction`` (class-weighted CE + Dice loss, flips as the only
    augmentation, non-finite pixels left out of the loss). The epoch with the
    best validation macro Dice (synthetic and real ``val`` splits together)
    is kept, the temperature is refitted on validation pixels and the bundle
    is saved. Alert splits are by object, so no object is in two splits.
    Without ``synthetic_manifest`` (``real_fraction`` 1) the alerts are the
    only dataset.

    Parameters
    ----------
    model : TrainedModel or path-like
        Starting model (a copy is trained; the input is left untouched).
    alerts_manifest : Manifest or path-like
        Weakly labelled alerts (:func:`weak_label_manifest`), or a plain
        alerts manifest (labelled here into ``output_dir/weak_labels``).
        Needs ``val`` samples (the synthetic ``val`` split counts too).
    real_fraction : float
        Share of training tiles from real alerts, in [0, 1].
    epochs : int
        Most epochs (early stopping may end sooner).
    synthetic_manifest : Manifest or path-like, optional
        Synthetic dataset with ZOGY products; needed when ``real_fraction < 1``.
    output_dir : path-like, optional
        Folder for the bundle and records (default: a new temporary folder).
    lr : float
        Peak learning rate of the one-cycle schedule.
    batch_size, tiles_per_epoch : int
        Tiles per batch and per epoch.
    tile_size : int, optional
        Tile side; default the model's training tile, shrunk to a multiple of
        its down-sampling that fits a 63×63 stamp.
    empty_fraction : float
        Share of random tiles (the rest centred on labelled pixels).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    seed : int
        Seeds tile draws, augmentation and torch.
    calibrate : bool
        Refit the temperature on the validation pixels.

    Returns
    -------
    astrid.model.TrainResult
        Ready for :func:`astrid.tracking.log_training`; ``params`` records
        ``real_fraction``, ``real_dataset_name``/``real_dataset_hash``,
        ``n_real_train_images`` and ``finetuned_from``, and the bundle's
        ``training`` record holds ``finetuned``, ``real_fraction`` and
        ``real_dataset_hash``.

    Raises
    ------
    ValueError
        For bad options, or ``real_fraction < 1`` without ``synthetic_manifest``.
    """
    from astrid.model import Augmentation, load_model, save_model, train_unet

    if not 0 <= real_fraction <= 1:
        msg = f"real_fraction must be in [0, 1], got {real_fraction!r}"
        raise ValueError(msg)
    if real_fraction < 1 and synthetic_manifest is None:
        msg = f"real_fraction={real_fraction} < 1 mixes synthetic tiles: give synthetic_manifest"
        raise ValueError(msg)
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_finetune_"))
    out.mkdir(parents=True, exist_ok=True)
    base = load_model(model) if isinstance(model, str | os.PathLike) else model
    weak = alerts_manifest if isinstance(alerts_manifest, Manifest) else Manifest.load(alerts_manifest)
    if not all("labels" in s and "score" in s for s in weak.samples):
        weak = weak_label_manifest(weak, out / "weak_labels", overwrite=True)
    multiple = base.config.spec.multiple
    tile = int(tile_size or min(base.config.tile_size, STAMP_SIZE))
    tile = max(multiple, tile // multiple * multiple)
    if tile > STAMP_SIZE or tile < 2 * multiple:
        msg = f"tile_size must be a multiple of {multiple} in [{2 * multiple}, {STAMP_SIZE}], got {tile_size}"
        raise ValueError(msg)
    if synthetic_manifest is None:  # real_fraction == 1: the alerts are the only dataset
        main, real, fraction = weak, None, 0.0
    else:
        main, real, fraction = synthetic_manifest, weak, float(real_fraction)
    result = train_unet(
        main, init_model=base, real_manifest=real, real_fraction=fraction, epochs=epochs, lr=lr,
        batch_size=batch_size, tiles_per_epoch=tiles_per_epoch, tile_size=tile,
        empty_fraction=empty_fraction, nonfinite="mask", max_valid_tiles=512,
        augmentation=Augmentation(flips=True, noise=0.0, artifacts=0.0),
        calibration_pixels=200_000 if calibrate else 0, device=device, seed=seed,
        output_dir=out, progress=False,
    )
    real_hash = weak.content_hash()
    finetuned_from = (str(model) if isinstance(model, str | os.PathLike)
                      else str(base.config.training.get("dataset_hash", "in-memory")))
    result.params.update(
        real_dataset_name=weak.name, real_dataset_hash=real_hash,
        real_fraction=float(real_fraction),
        synthetic_real_ratio=f"{1 - real_fraction:g}:{real_fraction:g}",
        finetuned_from=finetuned_from,
        n_real_train_images=len(weak.split("train")) if real_fraction > 0 else 0,
    )
    result.model.config.training.update(
        finetuned_from=finetuned_from, real_fraction=float(real_fraction),
        real_dataset_hash=real_hash,
        synthetic_real_ratio=result.params["synthetic_real_ratio"])
    save_model(result.model, result.bundle, overwrite=True)
    result.summary["params"] = result.params
    with atomic_write(result.paths["summary"], "w", overwrite=True) as handle:
        json.dump(result.summary, handle, indent=1, default=str)
    return result


# --------------------------------------------------------------------------- catalogs


def curate_catalogs(
    scores_df: Any,
    meta_df: Any,
    output_dir: str | os.PathLike,
    *,
    low: float = 0.1,
    high: float = 0.9,
    disagreement: float = 0.5,
) -> dict[str, Path]:
    """Write true-positive, false-positive and ambiguous catalogs of alerts, with their evidence.

    Labels, strongest evidence first:

    * ``labeller="tns"``: a spectroscopic class in ``label_tns_class`` → true
      positive (kind ``supernova`` for SN*/TDE, else ``variable``), confidence 1.0;
    * ``labeller="ssdistnr"``: a known asteroid within 1" → true positive,
      kind ``moving``, confidence 0.99;
    * ``labeller="ztf-drb"``: ``drb >= high`` → true positive (confidence
      ``drb``); ``drb <= low`` → false positive (confidence ``1 - drb``);
      kind is our model's predicted kind for real ones and ``bogus`` otherwise.

    The ambiguous set holds alerts with ``low < drb < high``, alerts whose
    outside evidence (TNS, asteroid) contradicts ``drb <= 0.5``, and
    ``ztf-drb``-only alerts where our score and ``drb`` differ by at least
    ``disagreement``: the queue for expert labelling. Alerts with no
    evidence at all are in none of the three.

    Parameters
    ----------
    scores_df : pandas.DataFrame
        :func:`score_alerts` output (may be empty: catalogs then hold no ``score``).
    meta_df : pandas.DataFrame or AlertTable
        Alert metadata (``candid``, ``drb``, ``label_asteroid``/``ssdistnr``,
        ``label_tns_class``, ``source``/``source_file``/``file``).
    output_dir : path-like
        Folder for the CSV files (created).
    low, high : float
        ``drb`` confidence bands.
    disagreement : float
        ``|score - drb|`` that sends a drb-only label to the ambiguous set.

    Returns
    -------
    dict of str to Path
        ``true_positives``, ``false_positives``, ``ambiguous`` (CSV, columns
        :data:`CATALOG_COLUMNS`) and ``summary`` (JSON: counts and the rules).

    Raises
    ------
    ValueError
        When not ``0 <= low < high <= 1``.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> meta = pd.DataFrame({"candid": [1, 2, 3, 4], "objectId": ["a", "b", "c", "d"],
    ...                      "drb": [0.99, 0.02, 0.7, 0.5], "ssdistnr": [-999.0, -999.0, 0.3, -999.0]})
    >>> scores = pd.DataFrame({"candid": [1, 2, 3, 4], "score": [0.9, 0.1, 0.8, 0.6],
    ...                        "kind": ["supernova"] * 4})
    >>> paths = curate_catalogs(scores, meta, tempfile.mkdtemp())
    >>> pd.read_csv(paths["true_positives"]).labeller.tolist(), len(pd.read_csv(paths["ambiguous"]))
    (['ztf-drb', 'ssdistnr'], 1)
    """
    import pandas as pd

    if not 0 <= low < high <= 1:
        msg = f"need 0 <= low < high <= 1, got low={low!r}, high={high!r}"
        raise ValueError(msg)
    meta = _labels_frame(meta_df)
    source_col = next((c for c in ("source_file", "source", "file") if c in meta.columns), None)
    scores = pd.DataFrame(scores_df).copy() if scores_df is not None else pd.DataFrame()
    if len(scores) and "candid" in scores:
        scores["candid"] = _candids(scores["candid"])
        scores = scores.dropna(subset=["candid"]).drop_duplicates("candid").set_index("candid")
    catalogs: dict[str, list[dict[str, Any]]] = {"true_positives": [], "false_positives": [], "ambiguous": []}
    for row in meta.to_dict("records"):
        candid = int(row["candid"])
        scored = scores.loc[candid] if len(scores) and candid in scores.index else None
        score = float(scored["score"]) if scored is not None and pd.notna(scored.get("score")) else math.nan
        our_kind = str(scored.get("kind", "")) if scored is not None and pd.notna(scored.get("kind")) else ""
        drb = float(row["drb"]) if pd.notna(row["drb"]) else math.nan
        tns = row["label_tns_class"]
        base = {"candid": candid, "objectId": row.get("objectId"),
                "source": row.get(source_col, "") if source_col else "", "score": score, "drb": drb}
        if tns or row["label_asteroid"] == 1:
            labeller = "tns" if tns else "ssdistnr"
            kind = ("supernova" if tns.upper().startswith(("SN", "TDE")) else "variable") if tns else "moving"
            evidence = f"label_tns_class={tns}" if tns else f"ssdistnr={row.get('ssdistnr', '<=1')}"
            entry = {**base, "kind": kind, "labeller": labeller, "confidence": 1.0 if tns else 0.99,
                     "evidence": evidence}
            if math.isfinite(drb) and drb <= 0.5:
                catalogs["ambiguous"].append({**entry, "evidence": f"{evidence}; but drb={drb:.3f}"})
            else:
                catalogs["true_positives"].append(entry)
            continue
        if not math.isfinite(drb):
            continue
        real = drb >= high
        entry = {**base, "kind": (our_kind or "real") if real else "bogus", "labeller": "ztf-drb",
                 "confidence": drb if real else 1.0 - drb, "evidence": f"drb={drb:.3f}"}
        if low < drb < high:
            catalogs["ambiguous"].append({**entry, "kind": our_kind, "confidence": 1.0 - 2 * abs(drb - 0.5)})
        elif math.isfinite(score) and abs(score - drb) >= disagreement:
            catalogs["ambiguous"].append({**entry, "evidence": f"drb={drb:.3f} vs astrid score={score:.3f}"})
        else:
            catalogs["true_positives" if real else "false_positives"].append(entry)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, rows in catalogs.items():
        paths[name] = out / f"{name}.csv"
        with atomic_write(paths[name], "w", overwrite=True) as handle:
            pd.DataFrame(rows, columns=list(CATALOG_COLUMNS)).to_csv(handle, index=False)
    summary = {
        "counts": {name: len(rows) for name, rows in catalogs.items()},
        "rules": {"tns": "label_tns_class present: real (SN*/TDE supernova, else variable), confidence 1.0",
                  "ssdistnr": "known solar-system object within 1 arcsec: real, moving, confidence 0.99",
                  "ztf-drb": f"drb >= {high}: real (confidence drb); drb <= {low}: bogus (1 - drb)",
                  "ambiguous": f"{low} < drb < {high}; TNS/asteroid with drb <= 0.5; "
                               f"|score - drb| >= {disagreement} for drb-only labels"},
        "n_alerts": len(meta),
    }
    paths["summary"] = out / "catalogs.json"
    with atomic_write(paths["summary"], "w", overwrite=True) as handle:
        json.dump(summary, handle, indent=1)
    return paths

"""Monitoring: what a scoring batch looked like, whether it drifted from the training data, how the model did.

Every scoring run over new data (``astrid score-alerts``, notebook 07, the
study) can be followed over time:

* :func:`input_statistics` describes a batch, one row per item (an alert's
  stamps, or a whole image of a dataset) with its exposure, the observation
  date (``mjd``, from an alert's ``jd`` or a sample's ``mjd``) and the
  :data:`FEATURES`, summarised into medians, means, spreads and percentiles;
* :func:`drift_report` compares each feature of a new batch with the
  training data (two-sample Kolmogorov-Smirnov test and population stability
  index) and flags a shift;
* :func:`scoring_metrics` measures the scores against whatever truth the batch
  carries (simulated labels, human labels, ZTF's ``drb``, known asteroids);
* :func:`record_scoring` does all three and logs the run to MLflow with
  :func:`astrid.tracking.log_scoring_run`, dated by the observations, so
  :func:`astrid.tracking.performance_history` reads the model's record back in
  date order.

Features
--------
``science_background``, ``science_noise``, ``reference_noise``, ``difference_noise``
    Median and 1.4826·MAD of the science image, and 1.4826·MAD of the
    reference and the difference (image units: DN/ADU).
``psf_fwhm``
    PSF FWHM in pixels (an alert's ``fwhm``; a synthetic image's ``FWHMPIX``).
``score``
    The model's real probability (when scores are given).

The drift rule
--------------
A feature is **shifted** when both tests agree: the KS p-value is below
``ks_alpha`` (:data:`KS_ALPHA` = 0.01) *and* the PSI exceeds
``psi_threshold`` (:data:`PSI_THRESHOLD` = 0.25, the usual "significant
change" level of the PSI; 0.1-0.25 is "moderate"). The KS test alone flags
negligible shifts of large batches; the PSI alone is noisy for small ones.
The PSI uses ``min(10, n // 10)`` (at least 2) bins at the reference's
quantiles, ``n`` the smaller sample, so each bin expects about ten items:
with fewer, the PSI of two samples of one distribution is about
``(bins - 1) * (1 / n_reference + 1 / n_new)`` and would cross the threshold
by chance. Features with fewer than ``min_items`` (8) finite values on either
side are not tested. A batch is shifted when any feature is.

Exposures, not items
--------------------
Alerts of one exposure share its sky, noise and seeing, so they are not
independent draws of those: tested per item, a batch from a handful of
exposures would differ from the reference by chance in every condition.
The :data:`EXPOSURE_FEATURES` are therefore compared exposure by exposure
(the median of each exposure's items; an alert's exposure is its ``jd``,
``field`` and ``rcid``, an image is its own), and only ``score`` item by
item. A batch needs ``min_items`` exposures for its conditions to be tested:
monitor batches that span many exposures (a night of a survey does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from astrid.alerts import STAMP_SIZE, AlertTable
from astrid.classes import ARTIFACT_KINDS, TRANSIENT_KINDS
from astrid.manifest import Manifest, read_fits

__all__ = [
    "EXPOSURE_FEATURES",
    "FEATURES",
    "KS_ALPHA",
    "MIN_ITEMS",
    "PSI_THRESHOLD",
    "BatchStatistics",
    "DriftReport",
    "ScoringRecord",
    "drift_report",
    "input_statistics",
    "population_stability_index",
    "record_scoring",
    "scoring_metrics",
    "split_by_date",
    "synthetic_alerts",
]

FEATURES: tuple[str, ...] = (
    "science_background", "science_noise", "reference_noise", "difference_noise", "psf_fwhm", "score",
)  # fmt: skip
"""Per-item input features of :func:`input_statistics` (see the module notes for units)."""

EXPOSURE_FEATURES: tuple[str, ...] = FEATURES[:-1]
"""Features set by the exposure's conditions: compared per exposure by :func:`drift_report`."""

PSI_THRESHOLD = 0.25
"""Population stability index above which a feature may be flagged (with the KS test)."""

KS_ALPHA = 0.01
"""Kolmogorov-Smirnov p-value below which a feature may be flagged (with the PSI)."""

MIN_ITEMS = 8
"""Fewest finite values on each side for a feature to be tested."""

_MAD_TO_SIGMA = 1.4826
_JD_TO_MJD = 2_400_000.5
_STATISTICS = ("median", "mean", "std", "p05", "p95")


# --------------------------------------------------------------------------- input statistics


@dataclass(frozen=True)
class BatchStatistics:
    """The input features of one batch and their summary.

    Attributes
    ----------
    features : pandas.DataFrame
        One row per item: ``id`` (alert ``candid`` or sample id), ``exposure``,
        ``mjd`` and :data:`FEATURES` (NaN where unknown).
    summary : dict of str to float
        ``n_items``, ``n_exposures``, ``mjd_start``, ``mjd_end`` and ``<feature>/<statistic>`` for the
        statistics median, mean, std, p05, p95 of every feature with finite values.
    """

    features: pd.DataFrame
    summary: dict[str, float]

    @property
    def n_items(self) -> int:
        """Items in the batch."""
        return len(self.features)

    @property
    def mjd_start(self) -> float:
        """First observation (MJD; NaN when no item is dated)."""
        return float(self.summary["mjd_start"])

    @property
    def mjd_end(self) -> float:
        """Last observation (MJD; NaN when no item is dated)."""
        return float(self.summary["mjd_end"])


def _robust(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and 1.4826·MAD over the last two axes of (N, H, W), NaNs ignored."""
    flat = images.reshape(len(images), -1).astype(float)
    median = np.nanmedian(flat, axis=1)
    return median, _MAD_TO_SIGMA * np.nanmedian(np.abs(flat - median[:, None]), axis=1)


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(float)


def _alert_features(table: AlertTable) -> pd.DataFrame:
    triplets = np.asarray(table.triplets, float)  # (N, 3, H, W): science, reference, difference
    sci_bg, sci_noise = _robust(triplets[:, 0])
    _, ref_noise = _robust(triplets[:, 1])
    _, diff_noise = _robust(triplets[:, 2])
    meta = table.meta
    mjd = _numeric(meta, "mjd") if "jd" not in meta.columns else _numeric(meta, "jd") - _JD_TO_MJD
    ids = meta["candid"].to_numpy() if "candid" in meta.columns else np.arange(len(meta))
    parts = [[f"{v:.6f}" for v in mjd]] + [meta[c].astype(str).tolist() for c in ("field", "rcid")
                                           if c in meta.columns]
    exposure = ["/".join(p) for p in zip(*parts, strict=True)]
    return pd.DataFrame({"id": ids, "exposure": exposure, "mjd": mjd, "science_background": sci_bg,
                         "science_noise": sci_noise, "reference_noise": ref_noise,
                         "difference_noise": diff_noise, "psf_fwhm": _numeric(meta, "fwhm")})


def _image_features(manifest: Manifest, samples: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for sample in samples:
        science, header = read_fits(manifest.file(sample, "science"), dtype=np.float32)
        images = [science, manifest.read(sample, "reference", dtype=np.float32)]
        if "difference" in sample:
            images.append(manifest.read(sample, "difference", dtype=np.float32))
        median, sigma = _robust(np.stack(images))
        rows.append({"id": sample["id"], "exposure": sample["id"], "mjd": float(sample.get("mjd", math.nan)),
                     "science_background": median[0], "science_noise": sigma[0],
                     "reference_noise": sigma[1],
                     "difference_noise": sigma[2] if len(sigma) > 2 else math.nan,
                     "psf_fwhm": float(header.get("FWHMPIX", math.nan))})
    return pd.DataFrame(rows, columns=["id", "exposure", "mjd", *EXPOSURE_FEATURES])


def _is_alerts_manifest(manifest: Manifest) -> bool:
    return manifest.kind.startswith("ztf_alerts")


def _with_scores(features: pd.DataFrame, scores: Any) -> pd.DataFrame:
    if isinstance(scores, pd.DataFrame):
        key = "candid" if "candid" in scores.columns else "id"
        if key not in scores.columns or "score" not in scores.columns:
            msg = "scores must have a 'score' column and a 'candid' or 'id' column (score_alerts output)"
            raise ValueError(msg)
        known = scores.dropna(subset=[key])
        lookup = known.set_index(known[key].astype(str))["score"]
        lookup = lookup[~lookup.index.duplicated()]
        values = pd.to_numeric(lookup.reindex(features["id"].astype(str)), errors="coerce").to_numpy(float)
        return features.assign(score=values)
    values = np.asarray(scores, float).ravel()
    if values.size != len(features):
        msg = f"scores has {values.size} values for {len(features)} items"
        raise ValueError(msg)
    return features.assign(score=values)


def _summary(features: pd.DataFrame) -> dict[str, float]:
    mjd = features["mjd"].to_numpy(float) if len(features) else np.zeros(0)
    dated = mjd[np.isfinite(mjd)]
    out = {"n_items": float(len(features)), "n_exposures": float(features["exposure"].nunique()),
           "mjd_start": float(dated.min()) if dated.size else math.nan,
           "mjd_end": float(dated.max()) if dated.size else math.nan}
    for feature in FEATURES:
        values = _numeric(features, feature)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        p05, median, p95 = np.percentile(values, [5, 50, 95])
        out.update({f"{feature}/median": float(median), f"{feature}/mean": float(values.mean()),
                    f"{feature}/std": float(values.std()), f"{feature}/p05": float(p05),
                    f"{feature}/p95": float(p95)})
    return out


def input_statistics(
    source: Any,
    *,
    scores: Any = None,
    splits: Sequence[str] | None = None,
    max_items: int | None = None,
) -> BatchStatistics:
    """Describe a scoring batch: per-item input features, observation dates and their summary.

    Parameters
    ----------
    source : AlertTable, Manifest, path-like or pandas.DataFrame
        Alerts (a table, or an alerts manifest), a dataset of images (a
        manifest with ``science``/``reference`` and, once differenced,
        ``difference``), or a features table already made (``id``, ``mjd``
        and any of :data:`FEATURES`).
    scores : pandas.DataFrame or array-like, optional
        The model's scores: a table with ``score`` and ``candid`` (as
        :func:`astrid.realdata.score_alerts` returns) or ``id``, or one value per item.
    splits : sequence of str, optional
        Only these splits of a manifest.
    max_items : int, optional
        Only the first items.

    Returns
    -------
    BatchStatistics

    Raises
    ------
    ValueError
        For a source of another type, or scores that do not fit the items.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"id": [1, 2, 3], "mjd": [59000.1, 59000.3, 59001.2],
    ...                       "science_noise": [5.0, 6.0, 7.0]})
    >>> stats = input_statistics(table)
    >>> stats.mjd_start, stats.mjd_end, stats.summary["science_noise/median"]
    (59000.1, 59001.2, 6.0)
    """
    if isinstance(source, str | os.PathLike):
        source = Manifest.load(source)
    if isinstance(source, Manifest) and _is_alerts_manifest(source):
        from astrid.realdata import load_alerts

        source = load_alerts(source, splits=splits)
    if isinstance(source, AlertTable):
        features = _alert_features(source)
    elif isinstance(source, Manifest):
        samples = [s for s in source.samples if splits is None or s.get("split") in splits]
        features = _image_features(source, samples[:max_items])
    elif isinstance(source, pd.DataFrame):
        features = source.reindex(columns=["id", "exposure", "mjd", *FEATURES]).reset_index(drop=True)
        features["id"] = source["id"].to_numpy() if "id" in source.columns else np.arange(len(source))
        features["exposure"] = features["exposure"].fillna(features["id"]).astype(str)
    else:
        msg = ("source must be an AlertTable, a Manifest (or its path) or a DataFrame, "
               f"got {type(source).__name__}")
        raise ValueError(msg)
    features = features.iloc[:max_items].reset_index(drop=True)
    if scores is not None:
        features = _with_scores(features.drop(columns="score", errors="ignore"), scores)
    features = features.reindex(columns=["id", "exposure", "mjd", *FEATURES])
    return BatchStatistics(features=features, summary=_summary(features))


# --------------------------------------------------------------------------- drift


def population_stability_index(reference: Any, new: Any, *, bins: int = 10) -> float:
    """Return the population stability index of ``new`` against ``reference``.

    ``PSI = sum_b (q_b - p_b) ln(q_b / p_b)`` over ``bins`` bins at the
    reference's quantiles, with ``p_b``/``q_b`` the reference/new fractions
    (floored at 1e-4 so that empty bins stay finite). 0 for identical
    distributions; below 0.1 is usually read as stable, above 0.25 as a shift.

    Parameters
    ----------
    reference, new : array-like
        Values (non-finite ones are ignored).
    bins : int
        Quantile bins (fewer when the reference has tied quantiles).

    Returns
    -------
    float
        NaN when either side has no finite value.

    Raises
    ------
    ValueError
        When ``bins < 2``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    >>> population_stability_index(a, b) < 0.05, population_stability_index(a, b + 1.0) > 0.25
    (True, True)
    """
    if bins < 2:
        msg = f"bins must be >= 2, got {bins}"
        raise ValueError(msg)
    ref = np.asarray(reference, float).ravel()
    cur = np.asarray(new, float).ravel()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not ref.size or not cur.size:
        return math.nan
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / ref.size
    q = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1) / cur.size
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class DriftReport:
    """How a new batch compares with the reference, feature by feature.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per feature: ``feature``, ``unit`` (``exposure`` or ``item``:
        what was counted), ``n_reference``, ``n_new``, ``reference_median``,
        ``new_median``, ``ks_statistic``, ``ks_pvalue``, ``psi``, ``bins``, ``shifted``.
    shifted : bool
        Whether any feature is shifted.
    shifted_features : tuple of str
        The shifted features.
    psi_threshold, ks_alpha : float
        The rule used (see the module notes).
    """

    table: pd.DataFrame
    shifted: bool
    shifted_features: tuple[str, ...]
    psi_threshold: float
    ks_alpha: float

    def metrics(self) -> dict[str, float]:
        """Return the report as flat numbers for tracking.

        ``<feature>/psi``, ``<feature>/ks_statistic``, ``<feature>/ks_pvalue``,
        ``<feature>/shifted`` (0/1) for each tested feature, ``shifted`` (0/1)
        and ``n_shifted_features``.
        """
        out: dict[str, float] = {}
        for row in self.table.itertuples():
            if math.isfinite(row.psi):
                out.update({f"{row.feature}/psi": row.psi, f"{row.feature}/ks_statistic": row.ks_statistic,
                            f"{row.feature}/ks_pvalue": row.ks_pvalue,
                            f"{row.feature}/shifted": float(row.shifted)})
        out.update(shifted=float(self.shifted), n_shifted_features=float(len(self.shifted_features)))
        return out


def _units(table: pd.DataFrame, feature: str) -> np.ndarray:
    """Finite values of ``feature``: one per exposure for exposure features, else one per item."""
    values = _numeric(table, feature)
    keep = np.isfinite(values)
    if feature in EXPOSURE_FEATURES and "exposure" in table.columns:
        frame = pd.DataFrame({"exposure": table["exposure"].to_numpy()[keep], "value": values[keep]})
        return frame.groupby("exposure", sort=False)["value"].median().to_numpy(float)
    return values[keep]


def _features_of(value: Any) -> pd.DataFrame:
    if isinstance(value, BatchStatistics):
        return value.features
    if isinstance(value, pd.DataFrame):
        return value
    msg = f"expected BatchStatistics or a features DataFrame, got {type(value).__name__}"
    raise ValueError(msg)


def drift_report(
    reference: BatchStatistics | pd.DataFrame,
    new: BatchStatistics | pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    psi_threshold: float = PSI_THRESHOLD,
    ks_alpha: float = KS_ALPHA,
    min_items: int = MIN_ITEMS,
) -> DriftReport:
    """Compare the input (and score) distributions of a new batch with the reference's.

    Parameters
    ----------
    reference : BatchStatistics or pandas.DataFrame
        The training data's statistics (or their ``features`` table).
    new : BatchStatistics or pandas.DataFrame
        The new batch's.
    features : sequence of str, optional
        Features to compare (default :data:`FEATURES`; those without
        ``min_items`` finite values on both sides are listed but not tested).
    psi_threshold : float
        PSI a shifted feature must exceed.
    ks_alpha : float
        KS p-value a shifted feature must fall below.
    min_items : int
        Fewest exposures (items for ``score``) on each side for a test.

    Returns
    -------
    DriftReport

    Raises
    ------
    ValueError
        For thresholds out of range or an unknown feature.

    Examples
    --------
    >>> import pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> ref = pd.DataFrame({"science_noise": rng.normal(5, 0.5, 300)})
    >>> same = pd.DataFrame({"science_noise": rng.normal(5, 0.5, 100)})
    >>> worse = pd.DataFrame({"science_noise": rng.normal(8, 0.5, 100)})
    >>> drift_report(ref, same).shifted, drift_report(ref, worse).shifted_features
    (False, ('science_noise',))
    """
    from scipy.stats import ks_2samp

    if not psi_threshold > 0 or not 0 < ks_alpha < 1:
        msg = f"need psi_threshold > 0 and 0 < ks_alpha < 1, got {psi_threshold!r}, {ks_alpha!r}"
        raise ValueError(msg)
    chosen = tuple(FEATURES if features is None else features)
    unknown = set(chosen) - set(FEATURES)
    if unknown:
        msg = f"unknown feature(s) {sorted(unknown)}; known: {', '.join(FEATURES)}"
        raise ValueError(msg)
    ref_table, new_table = _features_of(reference), _features_of(new)
    rows = []
    for feature in chosen:
        a, b = _units(ref_table, feature), _units(new_table, feature)
        unit = "exposure" if feature in EXPOSURE_FEATURES and "exposure" in new_table.columns else "item"
        row = {"feature": feature, "unit": unit, "n_reference": a.size, "n_new": b.size,
               "reference_median": float(np.median(a)) if a.size else math.nan,
               "new_median": float(np.median(b)) if b.size else math.nan,
               "ks_statistic": math.nan, "ks_pvalue": math.nan, "psi": math.nan, "bins": 0, "shifted": False}
        if min(a.size, b.size) >= max(min_items, 2):
            bins = int(min(10, max(2, min(a.size, b.size) // 10)))
            test = ks_2samp(a, b)
            psi = population_stability_index(a, b, bins=bins)
            row.update(ks_statistic=float(test.statistic), ks_pvalue=float(test.pvalue), psi=psi, bins=bins,
                       shifted=bool(test.pvalue < ks_alpha and psi > psi_threshold))
        rows.append(row)
    table = pd.DataFrame(rows)
    flagged = tuple(table.loc[table["shifted"], "feature"])
    return DriftReport(table=table, shifted=bool(flagged), shifted_features=flagged,
                       psi_threshold=float(psi_threshold), ks_alpha=float(ks_alpha))


# --------------------------------------------------------------------------- scoring metrics


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < labels.size else math.nan


def scoring_metrics(scores: pd.DataFrame, meta: Any = None, *, threshold: float = 0.5) -> dict[str, float]:
    """Measure a batch's scores against whatever truth its alerts carry.

    Always: ``n_scored``, ``n_skipped``, ``score_mean``, ``score_median`` and
    ``real_fraction`` (share scored at least ``threshold``). With a truth
    label ``label_real`` (simulated alerts, :func:`synthetic_alerts`, or
    human labels): ``n_labelled``, ``auc_vs_truth`` and ``precision``,
    ``recall``, ``f1`` at ``threshold``. With ZTF's ``drb``: the headline of
    :func:`astrid.realdata.compare_with_ztf` (``auc_vs_drb_label``,
    ``auc_vs_asteroid``, ``asteroid_real_fraction``, ``agreement_with_drb``),
    which measures agreement with ZTF, not accuracy.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`astrid.realdata.score_alerts` output (``candid``, ``score``,
        optionally ``skipped_reason``).
    meta : pandas.DataFrame or AlertTable, optional
        The alerts' metadata (``candid`` with ``label_real`` and/or ``drb``).
    threshold : float
        Operating threshold on the score, in (0, 1).

    Returns
    -------
    dict of str to float
        NaN where a figure cannot be computed (one class only, no labels).

    Raises
    ------
    ValueError
        When ``scores`` lacks ``candid``/``score`` or ``threshold`` is outside (0, 1).

    Examples
    --------
    >>> import pandas as pd
    >>> scores = pd.DataFrame({"candid": [1, 2, 3, 4], "score": [0.9, 0.7, 0.6, 0.1]})
    >>> meta = pd.DataFrame({"candid": [1, 2, 3, 4], "label_real": [1, 1, 0, 0]})
    >>> out = scoring_metrics(scores, meta)
    >>> out["auc_vs_truth"], out["precision"], out["recall"]
    (1.0, 0.6666666666666666, 1.0)
    """
    from astrid.metrics import precision_recall_f1

    if not 0 < threshold < 1:
        msg = f"threshold must be in (0, 1), got {threshold!r}"
        raise ValueError(msg)
    if "candid" not in scores.columns or "score" not in scores.columns:
        msg = "scores needs 'candid' and 'score' columns (score_alerts output)"
        raise ValueError(msg)
    values = pd.to_numeric(scores["score"], errors="coerce").to_numpy(float)
    scored = np.isfinite(values)
    skipped = ((scores["skipped_reason"].fillna("") != "").to_numpy() if "skipped_reason" in scores
               else ~scored)
    s = values[scored]
    out = {"n_scored": float(scored.sum()), "n_skipped": float(skipped.sum()),
           "score_mean": float(s.mean()) if s.size else math.nan,
           "score_median": float(np.median(s)) if s.size else math.nan,
           "real_fraction": float(np.mean(s >= threshold)) if s.size else math.nan}
    frame = meta.meta if isinstance(meta, AlertTable) else meta
    if frame is None or "candid" not in getattr(frame, "columns", ()):
        return out
    both = scores.loc[scored, ["candid", "score"]].astype({"candid": str}).merge(
        frame.astype({"candid": str}).drop(columns="score", errors="ignore"), on="candid", how="inner")
    if "label_real" in both.columns:
        labels = pd.to_numeric(both["label_real"], errors="coerce").to_numpy(float)
        known = np.isfinite(labels)
        y, p = labels[known].astype(int), both["score"].to_numpy(float)[known]
        said = p >= threshold
        tp, fp, fn = int(np.sum(said & (y == 1))), int(np.sum(said & (y == 0))), int(np.sum(~said & (y == 1)))
        precision, recall, f1 = precision_recall_f1(tp, fp, fn, zero_division=math.nan)
        out.update(n_labelled=float(known.sum()), auc_vs_truth=_auc(y, p) if y.size else math.nan,
                   precision=precision, recall=recall, f1=f1)
    if "drb" in both.columns and np.isfinite(pd.to_numeric(both["drb"], errors="coerce")).any():
        from astrid.realdata import compare_with_ztf

        found = compare_with_ztf(scores.loc[scored], frame, threshold=threshold)
        out.update({k: float(found[k]) for k in ("auc_vs_drb_label", "auc_vs_asteroid",
                                                 "asteroid_real_fraction", "agreement_with_drb")})
    return out


# --------------------------------------------------------------------------- batches


def split_by_date(
    table: AlertTable, *, n_batches: int | None = None, days: float | None = None
) -> list[AlertTable]:
    """Split alerts into batches by observation date, oldest first.

    Parameters
    ----------
    table : AlertTable
        Alerts with ``jd`` (or ``mjd``) in their metadata.
    n_batches : int, optional
        This many batches of (nearly) equal size, each a contiguous date range.
    days : float, optional
        Instead: one batch per ``days``-long window (from the first alert's
        UTC day), empty windows left out.

    Returns
    -------
    list of AlertTable
        Undated alerts are left out; ``skipped`` stays with the first batch.

    Raises
    ------
    ValueError
        Unless exactly one of ``n_batches`` (>= 1) and ``days`` (> 0) is given.

    Examples
    --------
    >>> import pandas as pd
    >>> meta = pd.DataFrame({"candid": [1, 2, 3, 4], "jd": [2459001.7, 2459000.6, 2459000.7, 2459003.9]})
    >>> table = AlertTable(np.zeros((4, 3, 63, 63), np.float32), meta)
    >>> [b.meta.candid.tolist() for b in split_by_date(table, days=1.0)]
    [[2, 3], [1], [4]]
    """
    if (n_batches is None) == (days is None):
        msg = "give exactly one of n_batches and days"
        raise ValueError(msg)
    if (n_batches is not None and n_batches < 1) or (days is not None and not days > 0):
        msg = f"n_batches must be >= 1 and days > 0, got {n_batches!r}, {days!r}"
        raise ValueError(msg)
    meta = table.meta
    mjd = _numeric(meta, "mjd") if "jd" not in meta.columns else _numeric(meta, "jd") - _JD_TO_MJD
    order = np.argsort(mjd, kind="stable")
    order = order[np.isfinite(mjd[order])]
    if days is not None:
        window = np.floor((mjd[order] - np.floor(mjd[order[0]])) / days) if order.size else np.zeros(0)
        groups = [order[window == w] for w in np.unique(window)]
    else:
        groups = [g for g in np.array_split(order, n_batches) if g.size]
    return [AlertTable(triplets=table.triplets[g], meta=meta.iloc[g].reset_index(drop=True),
                       skipped=list(table.skipped) if i == 0 else []) for i, g in enumerate(groups)]


def _stamp(image: np.ndarray, x: float, y: float) -> np.ndarray:
    half = STAMP_SIZE // 2
    padded = np.pad(image, half, mode="reflect")
    cy = int(np.clip(round(y), 0, image.shape[0] - 1)) + half
    cx = int(np.clip(round(x), 0, image.shape[1] - 1)) + half
    return padded[cy - half:cy + half + 1, cx - half:cx + half + 1]


def synthetic_alerts(
    manifest: Manifest | str | os.PathLike,
    *,
    samples: Sequence[Mapping[str, Any]] | None = None,
    splits: Sequence[str] | None = None,
    max_per_sample: int | None = None,
    seed: int = 0,
) -> AlertTable:
    """Cut alert-like triplets from a differenced synthetic dataset, one per simulated object.

    Lets the alert tools (:func:`astrid.realdata.score_alerts`, drift,
    :func:`scoring_metrics`) run on simulated data whose truth is known. Each
    transient and artifact of a sample's truth catalog gives a 63×63
    triplet centred on it (science, reference, the ZOGY difference; beyond
    the image edges the image is mirrored, so the sky and its noise go on)
    and one metadata row:
    ``candid`` (``field·10⁶ + epoch·10³ + instance``), ``objectId``, ``jd``
    (the sample's ``mjd`` + 2400000.5), ``fwhm`` (the science PSF FWHM, px),
    ``isdiffpos``, ``kind``, ``label_real`` (1 for a transient, 0 for an
    artifact), ``snr``, ``ambiguous``, ``survey``, ``split`` and ``source``
    (the sample id).

    Parameters
    ----------
    manifest : Manifest or path-like
        A synthetic dataset with ZOGY products (``difference``).
    samples : sequence of dict, optional
        These samples only (default: all, or those of ``splits``).
    splits : sequence of str, optional
        Only these splits.
    max_per_sample : int, optional
        At most this many objects of each sample, drawn at random.
    seed : int
        Seed of that draw.

    Returns
    -------
    AlertTable

    Raises
    ------
    ManifestError
        When a sample lacks its difference or truth catalog.
    """
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    chosen = list(samples) if samples is not None else [
        s for s in manifest.samples if splits is None or s.get("split") in splits]
    rng = np.random.default_rng(seed)
    stacks, rows = [], []
    for sample in chosen:
        science, header = read_fits(manifest.file(sample, "science"), dtype=np.float32)
        images = [science, manifest.read(sample, "reference", dtype=np.float32),
                  manifest.read(sample, "difference", dtype=np.float32)]
        images = [np.nan_to_num(image, nan=float(np.nanmedian(image))) for image in images]
        truth = pd.read_csv(manifest.file(sample, "truth"))
        truth = truth[truth["kind"].isin(TRANSIENT_KINDS + ARTIFACT_KINDS)
                      & np.isfinite(truth["x"]) & np.isfinite(truth["y"])]
        if max_per_sample is not None and len(truth) > max_per_sample:
            truth = truth.iloc[np.sort(rng.choice(len(truth), max_per_sample, replace=False))]
        for obj in truth.itertuples():
            triplet = np.stack([_stamp(image, obj.x, obj.y) for image in images])
            stacks.append(triplet.astype(np.float32))
            middle = slice(STAMP_SIZE // 2 - 1, STAMP_SIZE // 2 + 2)
            centre = triplet[2, middle, middle]
            rows.append({
                "candid": int(sample.get("field", 0)) * 1_000_000 + int(sample.get("epoch", 0)) * 1_000
                + int(obj.instance),
                "objectId": f"sim{int(sample.get('field', 0)):04d}_{obj.object_id}",
                "jd": float(sample["mjd"]) + _JD_TO_MJD, "fwhm": float(header.get("FWHMPIX", math.nan)),
                "isdiffpos": "t" if float(centre.sum()) >= 0 else "f", "kind": obj.kind,
                "label_real": int(obj.kind in TRANSIENT_KINDS), "snr": float(obj.snr),
                "ambiguous": bool(obj.ambiguous), "survey": sample.get("survey", ""),
                "split": sample.get("split", ""), "source": sample["id"]})
    triplets = np.stack(stacks) if stacks else np.zeros((0, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    return AlertTable(triplets=triplets, meta=pd.DataFrame(rows))


# --------------------------------------------------------------------------- one call per scoring run


@dataclass(frozen=True)
class ScoringRecord:
    """What :func:`record_scoring` measured and where it went.

    Attributes
    ----------
    statistics : BatchStatistics
        The batch's input features.
    metrics : dict of str to float
        Its performance figures.
    drift : DriftReport or None
        Against the reference, when one was given.
    tracked : astrid.tracking.TrackedEvaluation
        The MLflow run (or the local record).
    """

    statistics: BatchStatistics
    metrics: dict[str, float]
    drift: DriftReport | None
    tracked: Any


def record_scoring(
    source: Any,
    *,
    model_name: str,
    model_version: str = "",
    scores: pd.DataFrame | None = None,
    metrics: Mapping[str, Any] | None = None,
    reference: BatchStatistics | pd.DataFrame | None = None,
    splits: Sequence[str] | None = None,
    threshold: float = 0.5,
    psi_threshold: float = PSI_THRESHOLD,
    ks_alpha: float = KS_ALPHA,
    label: str = "",
    tracking_uri: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> ScoringRecord:
    """Describe a scored batch, measure it, compare it with the reference and log it, dated by its data.

    Parameters
    ----------
    source : AlertTable, Manifest or path-like
        What was scored (see :func:`input_statistics`).
    model_name, model_version : str
        The model that scored it.
    scores : pandas.DataFrame, optional
        :func:`astrid.realdata.score_alerts` output: adds the ``score``
        feature and, without ``metrics``, gives :func:`scoring_metrics`.
    metrics : mapping, optional
        Performance figures measured elsewhere (e.g. a study's
        ``metrics["models"]``; nested keys are joined by ``/``).
    reference : BatchStatistics or pandas.DataFrame, optional
        The training data's statistics: adds a :func:`drift_report`.
    splits : sequence of str, optional
        Only these splits of a manifest (the study: ``("test",)``).
    threshold : float
        Operating threshold of :func:`scoring_metrics`.
    psi_threshold, ks_alpha : float
        The drift rule.
    label : str
        Where the data came from (tag ``source``: a path, a night...).
    tracking_uri : str, optional
        MLflow store.
    output_dir : path-like, optional
        Folder of the local record when the store is unusable.

    Returns
    -------
    ScoringRecord

    Raises
    ------
    ValueError
        When no item of the batch carries an observation date.
    """
    from astrid import tracking

    stats = input_statistics(source, scores=scores, splits=splits)
    if not math.isfinite(stats.mjd_start):
        msg = "no observation date (alert 'jd' or sample 'mjd') in the batch: cannot place it in time"
        raise ValueError(msg)
    if metrics is None:
        meta = source if isinstance(source, AlertTable) else None
        measured = scoring_metrics(scores, meta, threshold=threshold) if scores is not None else {}
    else:
        measured = dict(metrics)
    drift = (drift_report(reference, stats, psi_threshold=psi_threshold, ks_alpha=ks_alpha)
             if reference is not None else None)
    tags = {"source": str(label)[:500]}
    if drift is not None:
        tags.update(drift_shifted=str(drift.shifted).lower(),
                    shifted_features=",".join(drift.shifted_features))
    tracked = tracking.log_scoring_run(
        measured, mjd_start=stats.mjd_start, mjd_end=stats.mjd_end, model_name=model_name,
        model_version=model_version, statistics=stats.summary,
        drift=drift.metrics() if drift is not None else None, features=stats.features,
        params={"threshold": threshold, "psi_threshold": psi_threshold, "ks_alpha": ks_alpha,
                "n_items": stats.n_items}, tags=tags, tracking_uri=tracking_uri, output_dir=output_dir)
    return ScoringRecord(statistics=stats, metrics=measured, drift=drift, tracked=tracked)

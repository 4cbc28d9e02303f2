"""The real-data study: every alert scored by models that never saw its object.

Cross-validation over the alerts of a manifest (:func:`astrid.alerts.alerts_to_manifest`):
alerts are grouped so that one object (and, with ``by="night"`` or
``by="field"``, one night or one ZTF field) never spans two folds; each fold is
scored by

``unet_synthetic``
    the starting (synthetic-only) U-Net, untouched;
``unet_r<ratio>``
    that U-Net fine-tuned on the weakly labelled alerts of the other folds
    (:func:`astrid.realdata.finetune_on_alerts`), one run per synthetic:real ratio;
``traditional``
    the calibrated gradient-boosted classifier (:class:`astrid.classic.RealBogusClassifier`)
    on hand features of our cutout ZOGY at the candidate plus the candidate's
    own measurements in the alert (:data:`META_FEATURES`), trained on the other
    folds' weak labels;
``ensemble``
    logistic stacking (:class:`astrid.classic.EnsembleScorer`) of all of the
    above, fitted on one validation fold that none of them trained on.

ZTF's ``rb`` and ``drb`` are never inputs: ``drb`` is where the labels come from.
The pooled out-of-fold scores are compared with ZTF by
:func:`astrid.realdata.compare_with_ztf`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from astrid.classic import EnsembleScorer, RealBogusClassifier
from astrid.detect import candidate_features
from astrid.manifest import Manifest, atomic_write
from astrid.realdata import (
    AlertInputs,
    _fwhm,
    alert_inputs,
    compare_with_ztf,
    cutout_zogy,
    finetune_on_alerts,
    load_alerts,
    resolve_model,
    score_alerts,
    weak_label,
    weak_label_manifest,
)

__all__ = [
    "GROUPINGS",
    "META_FEATURES",
    "CrossValidation",
    "alert_features",
    "crossval_alerts",
    "fold_assignment",
]

GROUPINGS = ("object", "night", "field")
"""What no two folds may share besides the object: nothing more, the night, or the ZTF field."""

META_FEATURES: tuple[str, ...] = (
    "fwhm", "elong", "nbad", "classtar", "sgscore1", "distpsnr1", "magpsf", "sigmapsf", "magnr",
    "distnr", "chipsf", "diffmaglim",
)  # fmt: skip
"""Candidate measurements of the alert used as classifier features (ZTF's ``rb``/``drb`` never are)."""

log = logging.getLogger(__name__)

_MISSING = -999.0  # ZTF's own "no value"; gradient boosting splits it off


def _group_key(meta: pd.DataFrame, by: str) -> pd.Series:
    if by == "object":
        return meta["objectId"].astype(str)
    if by == "night":  # a Palomar night runs from about 03:00 to 13:00 UT: floor(JD) is one night
        return pd.to_numeric(meta["jd"], errors="coerce").fillna(0).astype(float).floordiv(1).astype(str)
    return pd.to_numeric(meta["field"], errors="coerce").fillna(-1).astype(int).astype(str)


def fold_assignment(meta: pd.DataFrame, *, folds: int = 5, by: str = "object", seed: int = 0) -> np.ndarray:
    """Assign every alert to a fold so that no object (nor night/field) spans two folds.

    Alerts linked by the same ``objectId`` or the same ``by`` key form one
    group (connected components); groups are dealt to the smallest fold,
    largest first, ties broken by a seeded shuffle.

    Parameters
    ----------
    meta : pandas.DataFrame
        Alert metadata with ``objectId`` (and ``jd`` or ``field`` for those groupings).
    folds : int
        Number of folds (>= 2).
    by : {"object", "night", "field"}
        Grouping besides the object.
    seed : int
        Seed of the tie-breaking shuffle.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` fold index per alert.

    Raises
    ------
    ValueError
        For an unknown grouping, ``folds < 2``, missing columns or fewer groups than folds.

    Examples
    --------
    >>> meta = pd.DataFrame({"objectId": ["a", "a", "b", "c", "d"], "jd": [1.2, 2.5, 2.7, 3.1, 4.0]})
    >>> fold_assignment(meta, folds=2, by="night").tolist()   # a, b share night 2: one group
    [0, 0, 0, 1, 1]
    """
    if by not in GROUPINGS:
        msg = f"by must be one of {GROUPINGS}, got {by!r}"
        raise ValueError(msg)
    if int(folds) != folds or folds < 2:
        msg = f"folds must be an integer >= 2, got {folds!r}"
        raise ValueError(msg)
    needed = {"object": ["objectId"], "night": ["objectId", "jd"], "field": ["objectId", "field"]}[by]
    missing = [c for c in needed if c not in meta.columns]
    if missing:
        msg = f"alert metadata lacks {missing} needed to group by {by!r}"
        raise ValueError(msg)
    objects = meta["objectId"].astype(str).to_numpy()
    keys = _group_key(meta, by).to_numpy()
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for obj, key in zip(objects, keys, strict=True):
        parent[find("o:" + obj)] = find("k:" + key)
    component = np.array([find("o:" + obj) for obj in objects])
    names, sizes = np.unique(component, return_counts=True)
    if names.size < folds:
        msg = f"only {names.size} independent group(s) of alerts when grouping by {by!r}; need >= {folds}"
        raise ValueError(msg)
    order = np.random.default_rng(seed).permutation(names.size)
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds, int)
    fold_of: dict[str, int] = {}
    for i in order:
        target = int(np.argmin(load))
        fold_of[names[i]] = target
        load[target] += sizes[i]
    return np.array([fold_of[c] for c in component])


def alert_features(table: Any, *, psf: str = "match", gain: float = 6.2) -> pd.DataFrame:
    """Hand features of every alert: our cutout ZOGY at the centre plus the alert's measurements.

    Parameters
    ----------
    table : AlertTable, Manifest or path-like
        Alerts (:func:`astrid.realdata.load_alerts`).
    psf, gain
        Cutout ZOGY options (:func:`astrid.realdata.cutout_zogy`).

    Returns
    -------
    pandas.DataFrame
        One row per alert: ``candid``, the features of
        :func:`astrid.detect.candidate_features` (prefixed ``zogy_``),
        :data:`META_FEATURES` and ``positive`` (1 for ``isdiffpos`` t/1);
        missing values are -999, ZTF's own convention.
    """
    table = load_alerts(table)
    rows = []
    for stamps, meta in zip(table.triplets, table.meta.to_dict("records"), strict=True):
        row: dict[str, Any] = {"candid": int(meta["candid"])}
        try:
            out = cutout_zogy(stamps, fwhm=_fwhm(meta), psf=psf, gain=gain)
        except ValueError:
            out = None
        if out is not None:
            res = out.result
            centre = np.array([[stamps.shape[2] // 2, stamps.shape[1] // 2]], float)
            found = candidate_features(
                centre, score=np.asarray(res.score_corr), difference=np.asarray(res.difference),
                science=stamps[0], reference=stamps[1], psf_difference=np.asarray(res.psf_difference),
                fwhm=out.fwhm_science,
            ).iloc[0]
            row.update({f"zogy_{k}": float(v) for k, v in found.items() if k not in ("x", "y")})
        for key in META_FEATURES:
            value = pd.to_numeric(pd.Series([meta.get(key)]), errors="coerce").iloc[0]
            row[key] = float(value) if pd.notna(value) and value > _MISSING else _MISSING
        row["positive"] = float(str(meta.get("isdiffpos", "")).strip().lower() in {"t", "1", "true"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    features = [c for c in frame.columns if c != "candid"]
    frame[features] = frame[features].astype(float).replace([np.inf, -np.inf], np.nan).fillna(_MISSING)
    return frame


@dataclass
class CrossValidation:
    """Out-of-fold scores of every method and how they compare with ZTF.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per alert and method: ``candid``, ``objectId``, ``fold``, ``method``, ``score``.
    summary : pandas.DataFrame
        One row per method: ``n``, ``auc_vs_drb_label``, ``auc_vs_asteroid``,
        ``asteroid_real_fraction``, ``agreement_with_drb`` and the change of
        each against ``unet_synthetic`` (``delta_auc_vs_drb_label``...).
    runs : pandas.DataFrame
        One row per fine-tuning run: ``fold``, ``real_fraction``,
        ``val_macro_dice``, ``seconds``, ``bundle``, ``model_uri``.
    folds : int
        Number of folds.
    by : str
        Grouping (:data:`GROUPINGS`).
    """

    scores: pd.DataFrame
    summary: pd.DataFrame
    runs: pd.DataFrame
    folds: int
    by: str

    def save(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``crossval_scores.csv``, ``crossval_summary.csv`` and ``crossval_runs.csv``."""
        out = Path(output_dir)
        paths = {}
        for name, frame in (("scores", self.scores), ("summary", self.summary), ("runs", self.runs)):
            paths[name] = out / f"crossval_{name}.csv"
            with atomic_write(paths[name], "w", overwrite=True) as handle:
                frame.to_csv(handle, index=False)
        return paths


def _weak_labels(meta: pd.DataFrame) -> np.ndarray:
    """1 real / 0 bogus / NaN unknown from :func:`astrid.realdata.weak_label`."""
    found = [weak_label(row) for row in meta.to_dict("records")]
    return np.array([math.nan if f is None else float(f[0] == "real") for f in found])


def _fold_scores(inputs: AlertInputs, candids: pd.Series, rows: np.ndarray, model: Any) -> np.ndarray:
    """U-Net real scores of the alerts ``candids[rows]`` (NaN elsewhere), in the order of ``candids``."""
    found = score_alerts(inputs.subset(candids[rows]), model)
    scores = found.set_index(found["candid"].astype(int))["score"]
    return scores.reindex(candids).to_numpy(float)


def _traditional(x: pd.DataFrame, labels: np.ndarray, train: np.ndarray, *, seed: int) -> np.ndarray:
    """Classifier probabilities for every alert, or NaN when the training folds lack a class."""
    counts = np.bincount(labels[train].astype(int), minlength=2)
    if counts.min() < 3:  # sigmoid calibration on 3 folds needs 3 of each
        log.warning("traditional classifier skipped: training folds hold %d bogus and %d real labels",
                    counts[0], counts[1])
        return np.full(len(x), np.nan)
    classifier = RealBogusClassifier(calibration="sigmoid", cv=3, seed=seed, n_threads=1)
    return classifier.fit(x[train], labels[train]).predict_proba(x)


def _summary(scores: pd.DataFrame, meta: pd.DataFrame, threshold: float) -> pd.DataFrame:
    rows = []
    for method, part in scores.groupby("method", sort=False):
        found = compare_with_ztf(part[["candid", "score"]], meta, threshold=threshold)
        rows.append({"method": method, "n": found["n_scored"], **{k: found[k] for k in (
            "auc_vs_drb_label", "auc_vs_asteroid", "asteroid_real_fraction", "agreement_with_drb")}})
    summary = pd.DataFrame(rows)
    base = summary.set_index("method").loc["unet_synthetic"]
    for key in ("auc_vs_drb_label", "asteroid_real_fraction", "agreement_with_drb"):
        summary[f"delta_{key}"] = summary[key] - base[key]
    return summary


def crossval_alerts(
    model: Any,
    alerts_manifest: Manifest | str | os.PathLike,
    *,
    output_dir: str | os.PathLike,
    folds: int = 5,
    by: str = "object",
    real_fractions: Sequence[float] = (0.5, 1.0),
    epochs: int = 5,
    synthetic_manifest: Manifest | str | os.PathLike | None = None,
    threshold: float = 0.5,
    track: bool = False,
    model_name: str = "astrid-unet-ztf-finetuned",
    tracking_uri: str | None = None,
    seed: int = 0,
    **options: Any,
) -> CrossValidation:
    """Score every alert out of fold with the synthetic, fine-tuned, traditional and ensemble models.

    Fold ``k`` is scored by models trained on the other folds; fold ``k + 1``
    (mod ``folds``) is their validation set (early stopping, temperature,
    ensemble weights). Every fine-tuning run is, with ``track``, its own
    MLflow run with ``real_fraction``, ``fold`` and ``crossval_by`` logged.

    Parameters
    ----------
    model : TrainedModel or path-like
        Starting (synthetic-only) U-Net.
    alerts_manifest : Manifest or path-like
        Alerts (:func:`astrid.alerts.alerts_to_manifest`); its own splits are ignored.
    output_dir : path-like
        Folder for weak labels, one bundle per fold and ratio, and the tables.
    folds : int
        Number of folds (>= 3: one is scored, one validates, the rest train).
    by : {"object", "night", "field"}
        What besides the object no two folds share (:func:`fold_assignment`).
    real_fractions : sequence of float
        Synthetic:real ratios of the fine-tuning runs (share of real tiles);
        empty for no fine-tuning.
    epochs : int
        Most epochs per fine-tuning run.
    synthetic_manifest : Manifest or path-like, optional
        Synthetic dataset with ZOGY products (needed for ratios below 1).
    threshold : float
        Operating threshold on every score.
    track : bool
        Log each fine-tuning run to MLflow.
    model_name : str
        Registered name of the tracked fine-tuned models.
    tracking_uri : str, optional
        MLflow store.
    seed : int
        Seeds the fold assignment and every run.
    **options
        More :func:`astrid.realdata.finetune_on_alerts` options (``tiles_per_epoch``, ``lr``...).

    Returns
    -------
    CrossValidation
        Also written to ``output_dir`` (:meth:`CrossValidation.save`).

    Raises
    ------
    ValueError
        For ``folds < 3``, a bad ratio, or too few labelled alerts in a fold.
    """
    if int(folds) != folds or folds < 3:
        msg = f"folds must be an integer >= 3 (scored, validation and training folds), got {folds!r}"
        raise ValueError(msg)
    bad = [r for r in real_fractions if not 0 < float(r) <= 1]
    if bad:
        msg = f"real_fractions must be in (0, 1], got {bad}"
        raise ValueError(msg)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = alerts_manifest if isinstance(alerts_manifest, Manifest) else Manifest.load(alerts_manifest)
    table = load_alerts(source)
    meta = table.meta.reset_index(drop=True)
    meta["fold"] = fold_assignment(meta, folds=folds, by=by, seed=seed)
    fold_of = dict(zip(meta["candid"].astype(int), meta["fold"], strict=True))
    labels = _weak_labels(meta)
    features = alert_features(table)
    x = features.drop(columns=["candid"])
    weak = weak_label_manifest(source, out / "weak_labels", overwrite=True)
    candids = meta["candid"].astype(int)
    if isinstance(model, str | os.PathLike):
        model = resolve_model(model)[0]
    inputs = alert_inputs(table, model.config.channels)  # each alert's cutout ZOGY once, for every model
    synthetic = _fold_scores(inputs, candids, np.ones(len(meta), bool), model)
    frames, runs = [], []
    for k in range(folds):
        val_fold = (k + 1) % folds
        is_test = (meta["fold"] == k).to_numpy()
        is_val = (meta["fold"] == val_fold).to_numpy()
        is_train = ~is_test & ~is_val
        per_method = {"unet_synthetic": synthetic}
        split_of = {k: "test", val_fold: "val"}
        fold_weak = replace(weak, samples=[{**s, "split": split_of.get(fold_of[int(s["candid"])], "train")}
                                           for s in weak.samples])
        for r in real_fractions:
            result = finetune_on_alerts(model, fold_weak, real_fraction=float(r), epochs=epochs,
                                        synthetic_manifest=synthetic_manifest if float(r) < 1 else None,
                                        output_dir=out / f"fold{k}_r{float(r):g}", seed=seed, **options)
            uri = ""
            if track:
                from astrid import tracking

                uri = tracking.log_training(
                    result, model_name=model_name, tracking_uri=tracking_uri,
                    extra_params={"real_fraction": float(r), "fold": k, "crossval_by": by,
                                  "crossval_folds": folds},
                    tags={"finetuned": "true", "crossval": "true"}).model_uri
            per_method[f"unet_r{float(r):g}"] = _fold_scores(inputs, candids, is_val | is_test, result.model)
            runs.append({"fold": k, "real_fraction": float(r), "val_macro_dice": result.best_metric,
                         "seconds": round(result.seconds, 2), "bundle": str(result.bundle), "model_uri": uri})
        known = np.isfinite(labels)
        per_method["traditional"] = _traditional(x, labels, is_train & known, seed=seed)
        stack = pd.DataFrame({m: np.asarray(v, float) for m, v in per_method.items()})
        stack = stack.loc[:, stack.notna().any()].fillna(0.5)
        val_labels = labels[is_val & known]
        if np.unique(val_labels).size == 2:
            ensemble = EnsembleScorer(C=0.3).fit(stack[is_val & known].to_numpy(), val_labels)
            per_method["ensemble"] = ensemble.predict_proba(stack.to_numpy())
        else:  # a validation fold with one class cannot weigh the inputs: their mean
            per_method["ensemble"] = stack.mean(axis=1)
        for method, values in per_method.items():
            frames.append(pd.DataFrame({"candid": candids[is_test].to_numpy(),
                                        "objectId": meta["objectId"][is_test].to_numpy(), "fold": k,
                                        "method": method, "score": np.asarray(values, float)[is_test]}))
    scores = pd.concat(frames, ignore_index=True)
    summary = _summary(scores, meta, threshold)
    result = CrossValidation(scores=scores, summary=summary, runs=pd.DataFrame(runs), folds=int(folds), by=by)
    result.save(out)
    return result

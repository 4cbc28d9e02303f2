"""The study: candidates from every method on the same images, and their metrics.

Four methods are compared side by side on a dataset's held-out split:

``unet``
    connected regions of the U-Net's calibrated probability maps; score = the
    probability that the region is a genuine transient.
``baseline``
    5σ peaks of ZOGY S_corr with shape cuts (sharpness, roundness, dipole test);
    score = peak S_corr where the cuts pass.
``traditional``
    a calibrated gradient-boosted real/bogus classifier on hand features of the
    S_corr peaks, trained on the training split.
``ensemble``
    the U-Net's candidates scored by logistic stacking of the U-Net score and the
    classifier's probability at the same positions, fitted on the validation split
    (so its score is itself calibrated).

Operating thresholds are chosen on the validation split (best F1) and applied
unchanged to the test split.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from astrid import detect, metrics
from astrid.classes import TRANSIENT_KINDS
from astrid.classic import EnsembleScorer, RealBogusClassifier, feature_ablation
from astrid.colour import COLOUR_FEATURES
from astrid.context import CONTEXT_COLUMNS, kind_table
from astrid.manifest import Manifest, atomic_write, read_fits
from astrid.surveys import get_survey

__all__ = [
    "KIND_BARS",
    "METHODS",
    "QUALITY_BARS",
    "ImageCandidates",
    "StudyResult",
    "collect_candidates",
    "fp_at_recall",
    "match_candidates",
    "primary_method",
    "quality_bars",
    "run_study",
    "write_metrics",
]

METHODS = ("unet", "baseline", "traditional", "ensemble")

QUALITY_BARS: tuple[tuple[str, str, float, str], ...] = (
    ("precision at recall 0.95, S/N >= 6", "precision_snr6", 0.97, ">="),
    ("precision at recall 0.90, S/N >= 5", "precision_snr5", 0.95, ">="),
    ("false positives per 1024x1024 image", "fp_per_megapixel_image", 0.2, "<="),
    ("cosmic-ray rejection", "artifact_rejection/cosmic_ray", 0.995, ">="),
    ("hot-pixel rejection", "artifact_rejection/hot_pixel", 0.995, ">="),
    ("dipole rejection", "artifact_rejection/dipole", 0.97, ">="),
    ("satellite-trail rejection", "artifact_rejection/satellite_trail", 0.97, ">="),
    ("bleed-trail rejection", "artifact_rejection/bleed_trail", 0.97, ">="),
    ("transient-type macro-F1", "type_macro_f1", 0.9, ">="),
    ("expected calibration error", "ece", 0.02, "<="),
    ("S/N at 50% completeness", "snr50", 5.5, "<="),
)
"""(description, metric key, target, comparison) of the study's quality bars (issue 6)."""


@dataclass
class ImageCandidates:
    """Everything the study keeps of one image.

    Attributes
    ----------
    sample : dict
        The manifest entry.
    truth : pandas.DataFrame
        Its truth catalog.
    unet, baseline : pandas.DataFrame
        Candidates of the two detectors, with hand features and (once scored)
        the method scores ``score_unet``, ``score_traditional``, ``score_ensemble``.
    segmentation : numpy.ndarray
        The U-Net candidates' label image.
    instances : numpy.ndarray
        The true instance map.
    unusable : numpy.ndarray
        ZOGY's output mask (bad pixels grown by the kernel, and the edge frame):
        candidates there are dropped and truth objects there are don't-care.
    """

    sample: dict[str, Any]
    truth: pd.DataFrame
    unet: pd.DataFrame
    baseline: pd.DataFrame
    segmentation: np.ndarray
    instances: np.ndarray
    unusable: np.ndarray


@dataclass
class StudyResult:
    """What :func:`run_study` produced.

    Attributes
    ----------
    metrics : dict
        ``{"models": {method: summary}, ...}`` as written to ``metrics.json``.
    tables : dict
        Test-split :class:`astrid.metrics.MatchTable` per method.
    images : list of ImageCandidates
        Test-split candidates, for galleries.
    bars : pandas.DataFrame
        The quality bars with the best method's value and whether each is met.
    classifier : RealBogusClassifier
        The traditional classifier.
    ensemble : EnsembleScorer
        The stacking model.
    """

    metrics: dict[str, Any]
    tables: dict[str, metrics.MatchTable]
    images: list[ImageCandidates]
    bars: pd.DataFrame
    classifier: RealBogusClassifier
    ensemble: EnsembleScorer
    thresholds: dict[str, float] = field(default_factory=dict)


def _image_set(manifest: Manifest, sample: dict[str, Any]) -> dict[str, Any]:
    science, header = read_fits(manifest.file(sample, "science"), dtype=np.float32)
    reference = manifest.read(sample, "reference", dtype=np.float32)
    mask = manifest.read(sample, "diff_mask").astype(bool) if "diff_mask" in sample else None
    return {
        "science": science - np.median(science),
        "reference": reference - np.median(reference),
        "difference": manifest.read(sample, "difference", dtype=np.float32),
        "score": manifest.read(sample, "score", dtype=np.float32),
        "psf_difference": manifest.read(sample, "psf_difference", dtype=np.float64),
        "mask": mask,
        "fwhm": float(header.get("FWHMPIX", 3.0)),
    }


def _image_candidates(sample: dict[str, Any], *, root: str, model: Any, options: dict[str, Any],
                      sync: Any = None) -> tuple[ImageCandidates, metrics.StageTimer]:
    """Detect, extract and describe the candidates of one image (a task of :func:`collect_candidates`)."""
    from astrid.model import predict_image

    manifest = Manifest(root=Path(root), name="task", samples=[sample])
    timer = metrics.StageTimer(sync=sync)
    images = _image_set(manifest, sample)
    prediction = None
    if model is not None:  # else the S_corr peaks alone
        with timer("inference"):
            prediction = predict_image(model, sample, manifest=manifest, device=options["device"],
                                       nonfinite="fill")
    with timer("candidates"):
        if prediction is None:
            segmentation = np.zeros(images["score"].shape, int)
            unet = pd.DataFrame({c: [] for c in ("x", "y", "label", "kind", "score")})
        else:
            segmentation = detect.segment_probabilities(prediction.probabilities,
                                                        threshold=options["unet_threshold"])
            unet = detect.candidates_from_probabilities(
                prediction.probabilities, uncertainty=prediction.uncertainty,
                segmentation=segmentation,
            )
        baseline = detect.candidates_from_score(
            images["score"], difference=images["difference"], psf=images["psf_difference"],
            fwhm=images["fwhm"], mask=images["mask"], threshold=options["baseline_threshold"],
        )
        unusable = images["mask"] if images["mask"] is not None else np.zeros_like(segmentation, bool)
        unet = unet[~_at(unusable, unet)].reset_index(drop=True)
    with timer("features"):
        unet = _with_features(unet, images)
        baseline = _with_features(baseline, images)
        if prediction is not None:  # the network's view of each S_corr peak, for the kind classifier
            baseline = pd.concat([baseline, detect.probabilities_at(
                prediction.probabilities, baseline, classes=prediction.classes)], axis=1)
    found = ImageCandidates(
        sample=sample,
        truth=pd.read_csv(manifest.file(sample, "truth")),
        unet=unet,
        baseline=baseline,
        segmentation=segmentation,
        instances=manifest.read(sample, "instances"),
        unusable=unusable,
    )
    return found, timer


def collect_candidates(
    manifest: Manifest,
    samples: Sequence[dict[str, Any]],
    model: Any,
    *,
    timer: metrics.StageTimer | None = None,
    unet_threshold: float = 0.5,
    baseline_threshold: float = 5.0,
    device: str | None = None,
    scheduler: Any = None,
    progress: bool = False,
) -> list[ImageCandidates]:
    """Run both detectors on ``samples`` and compute hand features of every candidate.

    Each image is one task, run in this process or on a Dask cluster (the model
    is sent to each worker once); the results are the same either way.

    Parameters
    ----------
    manifest : Manifest
        A dataset with the phase-2 products (``difference``, ``score``, ``psf_difference``).
    samples : sequence of dict
        Entries of ``manifest`` to process.
    model : TrainedModel or None
        The U-Net (see :func:`astrid.model.load_model`); None finds the S_corr
        peaks alone (no U-Net candidates; e.g. for the kind classifier).
    timer : StageTimer, optional
        Accumulates seconds per stage (``inference``, ``candidates``, ``features``),
        summed over images (over workers on a cluster).
    unet_threshold : float
        Not-background probability that delimits a U-Net candidate region.
    baseline_threshold : float
        S_corr significance of the classical peaks.
    device : str, optional
        Inference device (default: automatic).
    scheduler : str, distributed.Client or None
        ``"serial"``, ``"local"``, a scheduler address or a client
        (:func:`astrid.cluster.resolve_scheduler`); None means
        ``$ASTRID_DASK_SCHEDULER``, else serial.
    progress : bool
        Show a progress bar (and the Dask dashboard link).

    Returns
    -------
    list of ImageCandidates
        In the order of ``samples``.

    Raises
    ------
    ManifestError
        When a sample lacks a product (before any image is processed).
    """
    from astrid.cluster import map_items

    timer = timer or metrics.StageTimer()
    samples = list(samples)
    for sample in samples:
        for key in ("difference", "score", "psf_difference", "truth", "instances"):
            manifest.file(sample, key)  # names the missing product

    def merge(index: int, result: tuple[ImageCandidates, metrics.StageTimer]) -> None:
        found, image_timer = result
        found.sample = samples[index]
        for stage, seconds in image_timer.seconds.items():
            timer.seconds[stage] = timer.seconds.get(stage, 0.0) + seconds
            timer.calls[stage] = timer.calls.get(stage, 0) + image_timer.calls[stage]

    options = {"device": device, "unet_threshold": unet_threshold,
               "baseline_threshold": baseline_threshold}
    results = map_items(_image_candidates, samples, scheduler=scheduler, progress=progress,
                        desc="candidates", on_result=merge,
                        shared={"root": str(manifest.root), "model": model, "options": options,
                                "sync": timer.sync})
    return [found for found, _ in results]


def _at(mask: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Return ``mask`` at each row's rounded ``(x, y)`` (False for an empty table)."""
    if table.empty:
        return np.zeros(0, bool)
    ny, nx = mask.shape
    y = np.clip(np.rint(table["y"].to_numpy(float)).astype(int), 0, ny - 1)
    x = np.clip(np.rint(table["x"].to_numpy(float)).astype(int), 0, nx - 1)
    return mask[y, x]


def _with_features(candidates: pd.DataFrame, images: dict[str, Any]) -> pd.DataFrame:
    if candidates.empty:
        return candidates.assign(**{c: pd.Series(dtype=float) for c in detect.FEATURE_COLUMNS})
    features = detect.candidate_features(
        candidates, score=images["score"], difference=images["difference"],
        science=images["science"], reference=images["reference"],
        psf_difference=images["psf_difference"], fwhm=images["fwhm"],
    )
    return pd.concat([candidates.reset_index(drop=True),
                      features.drop(columns=[c for c in features if c in candidates])], axis=1)


def match_candidates(image: ImageCandidates, method: str, score_column: str) -> metrics.MatchTable:
    """Match one image's candidates of ``method`` to its truth as the study does.

    Parameters
    ----------
    image : ImageCandidates
        One entry of :func:`collect_candidates`.
    method : {"unet", "ensemble", "baseline", "traditional"}
        Whose candidates: the U-Net's (``unet``, ``ensemble``) or the S_corr
        peaks (``baseline``, ``traditional``).
    score_column : str
        Candidate column used as the score (e.g. ``"score"``, ``"peak_score"``).

    Returns
    -------
    astrid.metrics.MatchTable
        With ``truth_index`` of each candidate (-1: unmatched), the truth kinds
        and ``truth_ignore`` (ambiguous, or on unusable pixels).
    """
    cands = image.unet if method in ("unet", "ensemble") else image.baseline
    truth = image.truth
    kw: dict[str, Any] = {}
    if method in ("unet", "ensemble") and len(cands):
        kw = {"cand_kind": cands["kind"].to_numpy(), "cand_labels": cands["label"].to_numpy(),
              "segmentation": image.segmentation}
    return metrics.match_table(
        cands[["x", "y"]].to_numpy(float).reshape(-1, 2),
        cands[score_column].to_numpy(float) if len(cands) else np.zeros(0),
        truth[["x", "y"]].to_numpy(float).reshape(-1, 2),
        truth["kind"].to_numpy(str),
        truth_snr=truth["snr"].to_numpy(float),
        truth_ignore=truth["ambiguous"].to_numpy(bool) | _at(image.unusable, truth),
        truth_instances=truth["instance"].to_numpy(int),
        instance_map=image.instances,
        **kw,
    )


def _is_real(image: ImageCandidates, method: str) -> np.ndarray:
    """Real (1), bogus (0) or ambiguous (-1) label of each candidate of ``method``."""
    table = match_candidates(image, method, "score" if method == "unet" else "peak_score")
    labels = np.zeros(table.score.size, dtype=int)
    matched = table.truth_index >= 0
    kinds = table.truth_kind[table.truth_index[matched]]
    ignored = table.truth_ignore[table.truth_index[matched]]
    labels[matched] = np.where(ignored, -1, np.isin(kinds, TRANSIENT_KINDS).astype(int))
    return labels


def _training_table(images: Sequence[ImageCandidates], methods: Sequence[str]) -> tuple:
    frames, labels = [], []
    for image in images:
        for method in methods:
            cands = image.unet if method == "unet" else image.baseline
            if len(cands):
                frames.append(cands[list(detect.FEATURE_COLUMNS)])
                labels.append(_is_real(image, method))
    if not frames:
        msg = "no candidates to train the traditional classifier on"
        raise ValueError(msg)
    x, y = pd.concat(frames, ignore_index=True), np.concatenate(labels)
    keep = y >= 0
    return x[keep].reset_index(drop=True), y[keep]


def _score(images: Sequence[ImageCandidates], classifier: RealBogusClassifier,
           ensemble: EnsembleScorer | None) -> None:
    for image in images:
        for cands in (image.unet, image.baseline):
            cands["score_classifier"] = (
                classifier.predict_proba(cands[list(detect.FEATURE_COLUMNS)]) if len(cands) else []
            )
        image.baseline["score_traditional"] = image.baseline["score_classifier"]
        image.unet["score_unet"] = image.unet["score"].clip(0.0, 1.0)
        if ensemble is not None:
            image.unet["score_ensemble"] = (
                ensemble.predict_proba(image.unet[["score_unet", "score_classifier"]])
                if len(image.unet) else []
            )


SCORE_COLUMNS = {"unet": "score_unet", "baseline": "score", "traditional": "score_traditional",
                 "ensemble": "score_ensemble"}


def _tables(images: Sequence[ImageCandidates]) -> dict[str, metrics.MatchTable]:
    return {m: metrics.MatchTable.concat([match_candidates(i, m, SCORE_COLUMNS[m]) for i in images])
            for m in METHODS}


def _restricted(table: metrics.MatchTable, snr_min: float) -> metrics.MatchTable:
    """Count every transient with S/N >= ``snr_min`` (near-limit ones too), ignore fainter ones.

    Faint artifacts keep their ``ambiguous`` don't-care flag.
    """
    transient = table.truth_is_transient
    ignore = (~transient & table.truth_ignore) | (transient & ~(table.truth_snr >= snr_min))
    return replace(table, truth_ignore=ignore)


def _summaries(table: metrics.MatchTable, *, image_shape: tuple[int, int], pixel_scale: float,
               threshold: float | None) -> dict[str, Any]:
    summary = metrics.summarize(table, image_shape=image_shape, pixel_scale_arcsec=pixel_scale,
                                threshold=threshold)
    for snr_min, recall, key in ((6.0, 0.95, "precision_snr6"), (5.0, 0.90, "precision_snr5")):
        point = metrics.summarize(_restricted(table, snr_min), image_shape=image_shape,
                                  pixel_scale_arcsec=pixel_scale, target_recall=recall)
        summary[key] = point["precision"]
        summary[f"{key}_recall"] = point["recall"]
    # completeness over every labelled transient, near-limit ones included
    transient = table.truth_is_transient & (table.truth_snr > 0)
    detected = table.truth_score() >= _cut(summary["threshold"])
    summary["snr50"] = (_finite(metrics.snr_at_completeness(table.truth_snr[transient],
                                                            detected[transient]))
                        if transient.any() else None)
    fp = summary.get("fp_per_image")
    summary["fp_per_megapixel_image"] = (
        None if fp is None else fp * (1024 * 1024) / (image_shape[0] * image_shape[1])
    )
    return summary


def _cut(threshold: float | None) -> float:
    """Score threshold as a number: no threshold (no candidates at all) keeps nothing."""
    return np.inf if threshold is None else threshold


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def fp_at_recall(table: metrics.MatchTable, recall: float, *, image_shape: tuple[int, int],
                 pixel_scale: float) -> float | None:
    """Return false positives per image at the threshold reaching ``recall`` (None if it never does)."""
    if not recall > 0:
        return None
    point = metrics.summarize(table, image_shape=image_shape, pixel_scale_arcsec=pixel_scale,
                              target_recall=recall)
    if point["recall"] is None or point["recall"] < recall - 1e-9:
        return None
    return point["fp_per_image"]


def primary_method(models: dict[str, dict[str, Any]]) -> str:
    """Return the better (by F1) of the U-Net and the ensemble, the study's method under test."""
    return max(("unet", "ensemble"), key=lambda m: (models[m].get("f1") or 0.0, m == "ensemble"))


KIND_BARS: tuple[tuple[str, str, float], ...] = (
    ("transient-type macro-F1 with colour and temporal context", "type_macro_f1", 0.97),
    ("moving-object recall with colour and temporal context", "recall/moving", 0.99),
)
"""Issue 8's bars on the kind classifier of ``kind_ablation``: (text, summary metric, lowest value)."""


def quality_bars(result: dict[str, Any]) -> pd.DataFrame:
    """Check the study's quality bars (issue 6) for the better of the U-Net and the ensemble.

    With a ``kind_ablation`` (multi-epoch data) the bars of :data:`KIND_BARS`
    are checked on its kind classifier with colour and context (context alone
    on single-band data).

    Parameters
    ----------
    result : dict
        The ``metrics.json`` content (``models`` and optionally ``cross_survey``).

    Returns
    -------
    pandas.DataFrame
        Columns ``bar``, ``target``, ``method``, ``value``, ``met`` (``None`` values
        were not measurable on this data and count as not met).
    """
    models = result["models"]
    primary = primary_method(models)
    flat = metrics.flatten_metrics(models[primary])
    rows = []
    for text, key, target, how in QUALITY_BARS:
        value = flat.get(key)
        met = value is not None and (value >= target if how == ">=" else value <= target)
        rows.append({"bar": text, "target": f"{how} {target}", "method": primary, "value": value,
                     "met": bool(met)})
    fp = models[primary].get("fp_per_image")
    others = [models[m].get("fp_at_equal_recall") for m in ("baseline", "traditional")]
    reached = [o for o in others if o is not None]
    rows.append({"bar": "fewer false positives per image than baseline and traditional at equal recall",
                 "target": f"< {min(reached):.3g}" if reached else "(they never reach that recall)",
                 "method": primary, "value": fp,
                 "met": fp is not None and all(o is None or fp < o for o in others)})
    quick_ok = (models[primary].get("precision") or 0) >= 0.8 and (
        models[primary].get("recall") or 0) >= 0.8 and (fp if fp is not None else 1e9) < 1
    rows.append({"bar": "quick preset: precision >= 0.8 at recall >= 0.8, < 1 FP per image",
                 "target": "all three", "method": primary,
                 "value": f"P={models[primary].get('precision')}, R={models[primary].get('recall')}",
                 "met": bool(quick_ok)})
    cross = result.get("cross_survey")
    if cross:
        drops = [
            (models[primary].get(k) or 0.0) - (cross["models"][primary].get(k) or 0.0)
            for k in ("precision", "recall")
        ]
        rows.append({"bar": "cross-survey drop of precision and recall", "target": "<= 0.05",
                     "method": primary, "value": max(drops), "met": max(drops) <= 0.05})
    ablation = {row["metric"]: row for row in result.get("kind_ablation", {}).get("summary", [])}
    if ablation:
        model = "colour+context" if "colour+context" in ablation["type_macro_f1"] else "context"
        for text, key, target in KIND_BARS:
            value = ablation.get(key, {}).get(model)
            value = None if value is None or not math.isfinite(value) else float(value)
            rows.append({"bar": text, "target": f">= {target}", "method": f"kind classifier, {model}",
                         "value": value, "met": value is not None and value >= target})
    return pd.DataFrame(rows)


def run_study(
    manifest: Manifest | str | os.PathLike,
    model: Any,
    *,
    max_images: int | None = None,
    max_train_images: int = 40,
    device: str | None = None,
    seed: int = 0,
    cross_manifest: Manifest | str | os.PathLike | None = None,
    scheduler: Any = None,
    kind_ablation: bool = True,
    kind_causal: bool = False,
) -> StudyResult:
    """Evaluate the U-Net, the baseline, the classifier and the ensemble side by side.

    Parameters
    ----------
    manifest : Manifest or path
        Dataset with phase-2 products; its ``test`` split is evaluated, its
        ``train`` split trains the classifier, its ``val`` split fits the ensemble
        and chooses every method's operating threshold.
    model : TrainedModel or path
        The U-Net bundle (trained on the same survey's ``train`` split).
    max_images : int, optional
        Cap on test and validation images (quick runs).
    max_train_images : int
        Cap on training images for the real/bogus classifier (the kind
        classifier of ``kind_ablation`` trains on the whole train split).
    device : str, optional
        Inference device.
    seed : int
        Seed of the classifier.
    cross_manifest : Manifest or path, optional
        A dataset of another survey preset: its test split is evaluated with the
        same models and thresholds and reported under ``cross_survey``.
    scheduler : str or distributed.Client, optional
        Where images are processed (:func:`astrid.cluster.resolve_scheduler`;
        default serial, or ``ASTRID_DASK_SCHEDULER``).
    kind_ablation : bool
        On multi-epoch datasets, train the kind classifier on the baseline
        candidates with and without temporal context (and colour, when the
        dataset has g, r and i) and report per-kind recall, type macro-F1 and
        bogus rejection of each under ``kind_ablation``
        (:func:`astrid.classic.feature_ablation`), trained on every image of
        the train split. Its base model takes the hand features and the
        U-Net's class probabilities at each candidate
        (:func:`astrid.detect.probabilities_at`).
    kind_causal : bool
        Temporal context from earlier epochs only (what an alert stream knows
        at the time); default every epoch of the field, as an offline study
        (and a nightly asteroid linker, which pairs the night's visits) sees it.

    When the test samples carry a quality flag (:func:`astrid.quality.quality_dataset`),
    the metrics are also reported for the test images that pass the
    pre-filter alone, under ``quality_filter`` (same models and thresholds),
    with the count of skipped images and their reasons.

    Returns
    -------
    StudyResult
    """
    from astrid.model import load_model

    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    model = model if not isinstance(model, str | os.PathLike) else load_model(model)
    splits = {s: manifest.split(s) for s in ("train", "val", "test")}
    for name, entries in splits.items():
        if not entries:
            msg = f"manifest {manifest.path} has no {name!r} samples; the study needs all three splits"
            raise ValueError(msg)
    cap = slice(None, max_images)
    timer = metrics.StageTimer()
    options = {"device": device, "scheduler": scheduler}
    train = collect_candidates(manifest, splits["train"][:max_train_images], model, **options)
    val = collect_candidates(manifest, splits["val"][cap], model, **options)
    test = collect_candidates(manifest, splits["test"][cap], model, timer=timer, **options)

    x, y = _training_table(train, ("baseline", "unet"))
    calibration = "isotonic" if min(y.sum(), (1 - y).sum()) >= 200 else "sigmoid"
    classifier = RealBogusClassifier(calibration=calibration, cv=3, seed=seed, n_threads=1).fit(x, y)
    ensemble, ensemble_fit = _fit_ensemble(val, train, classifier)
    _score(val, classifier, ensemble)
    _score(test, classifier, ensemble)

    survey = get_survey(test[0].sample.get("survey", "ztf"))
    shape = test[0].instances.shape
    val_tables, test_tables = _tables(val), _tables(test)
    thresholds, models = {}, {}
    per_image = timer.per_image(len(test))
    diff_seconds = manifest.info.get("differencing_seconds_per_image")
    for method in METHODS:
        chosen = metrics.summarize(val_tables[method], image_shape=shape,
                                   pixel_scale_arcsec=survey.pixel_scale)["threshold"]
        thresholds[method] = chosen
        models[method] = _summaries(test_tables[method], image_shape=shape,
                                    pixel_scale=survey.pixel_scale, threshold=chosen)
        models[method]["seconds_per_image"] = {"differencing": diff_seconds, **per_image}
    primary = primary_method(models)
    for method in ("baseline", "traditional"):
        models[method]["fp_at_equal_recall"] = (
            None if models[primary].get("recall") is None else
            fp_at_recall(test_tables[method], models[primary]["recall"], image_shape=shape,
                         pixel_scale=survey.pixel_scale))
    result = {
        "dataset": manifest.name,
        "manifest_hash": manifest.content_hash(),
        "survey": survey.name,
        "split": "test",
        "n_images": len(test),
        "image_shape": list(shape),
        "thresholds": thresholds,
        "ensemble_fit": ensemble_fit,
        "models": models,
    }
    if kind_ablation and len({s.get("field") for s in manifest.samples}) < len(manifest.samples):
        train += collect_candidates(manifest, splits["train"][max_train_images:], model, **options)
        result["kind_ablation"] = _kind_ablation(manifest, train, test, seed=seed, causal=kind_causal)
    if any("quality_flag" in image.sample for image in test):
        result["quality_filter"] = _quality_filtered(test, thresholds, shape=shape, survey=survey)
    if cross_manifest is not None:
        result["cross_survey"] = _cross_survey(cross_manifest, model, classifier, ensemble,
                                               thresholds, max_images=max_images, device=device)
    bars = quality_bars(result)
    result["quality_bars"] = bars.to_dict(orient="records")
    return StudyResult(metrics=result, tables=test_tables, images=test, bars=bars,
                       classifier=classifier, ensemble=ensemble, thresholds=thresholds)


def _fit_ensemble(val: list[ImageCandidates], train: list[ImageCandidates],
                  classifier: RealBogusClassifier) -> tuple[EnsembleScorer, str]:
    """Fit the stacking on validation U-Net candidates.

    When validation holds no real or no bogus candidate (tiny runs), the training
    split's candidates are used instead; when neither does, the ensemble is the
    mean of the two logits. The returned tag says which.
    """
    for name, images in (("val", val), ("train", train)):
        _score(images, classifier, None)
        x = pd.concat([i.unet[["score_unet", "score_classifier"]] for i in images], ignore_index=True)
        y = np.concatenate([_is_real(i, "unet") for i in images]) if images else np.zeros(0, int)
        keep = y >= 0
        if (y[keep] == 1).any() and (y[keep] == 0).any():
            return EnsembleScorer().fit(x[keep], y[keep]), name
    # Nothing to fit on (a barely trained U-Net): the mean of the two logits, flagged as such.
    equal = EnsembleScorer.from_dict({"columns": ["score_unet", "score_classifier"], "C": 1.0,
                                      "eps": 1e-4, "coef": [0.5, 0.5], "intercept": 0.0})
    return equal, "unfitted: mean of logits"


def _kind_ablation(manifest: Manifest, train: list[ImageCandidates], test: list[ImageCandidates], *,
                   seed: int, causal: bool) -> dict[str, Any]:
    """Kind classifier with and without context (and colour): the table, or why it was skipped."""
    bands = sorted({str(s.get("band")) for s in manifest.samples})
    colour = set(bands) >= {"g", "r", "i"}
    extra: dict[str, Sequence[str]] = {"context": CONTEXT_COLUMNS}
    if colour:
        extra.update({"colour": COLOUR_FEATURES, "colour+context": (*COLOUR_FEATURES, *CONTEXT_COLUMNS)})
    try:
        tables = {name: kind_table(manifest, images, causal=causal, bands=bands if colour else None)
                  for name, images in (("train", train), ("test", test))}
        base = [*detect.FEATURE_COLUMNS,
                *(c for c in detect.UNET_COLUMNS if c in tables["train"] and c in tables["test"])]
        found = feature_ablation(tables["train"], tables["test"], base_columns=base,
                                 extra=extra, max_iter=300, seed=seed, n_threads=1)
    except ValueError as err:  # too few candidates or kinds in a tiny run
        return {"skipped": str(err)}
    return {"n_train": len(tables["train"]), "n_test": len(tables["test"]), "causal": causal,
            "summary": found.summary.reset_index(names="metric").to_dict(orient="records")}


def _quality_filtered(images: list[ImageCandidates], thresholds: dict[str, float], *,
                      shape: tuple[int, int], survey: Any) -> dict[str, Any]:
    """Measure the test images that pass the quality pre-filter; count and explain the skipped ones."""
    flags = [str(i.sample.get("quality_flag", "passed")) for i in images]
    kept = [i for i, flag in zip(images, flags, strict=True) if flag == "passed"]
    skipped = [flag.removeprefix("skipped: ") for flag in flags if flag != "passed"]
    out: dict[str, Any] = {"n_images": len(kept), "n_skipped": len(skipped),
                           "skipped_reasons": dict(Counter(skipped)), "models": {}}
    if kept:
        out["models"] = _measured(kept, thresholds, shape=shape, survey=survey)
    return out


def _measured(images: list[ImageCandidates], thresholds: dict[str, float], *, shape: tuple[int, int],
              survey: Any) -> dict[str, dict[str, Any]]:
    """Every method's metrics on ``images`` at thresholds chosen elsewhere."""
    tables = _tables(images)
    return {m: _summaries(tables[m], image_shape=shape, pixel_scale=survey.pixel_scale,
                          threshold=thresholds[m]) for m in METHODS}


def _cross_survey(manifest: Manifest | str | os.PathLike, model: Any, classifier: RealBogusClassifier,
                  ensemble: EnsembleScorer, thresholds: dict[str, float], *,
                  max_images: int | None, device: str | None) -> dict[str, Any]:
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    images = collect_candidates(manifest, manifest.split("test")[:max_images], model, device=device)
    _score(images, classifier, ensemble)
    survey = get_survey(images[0].sample.get("survey", "decam"))
    return {
        "dataset": manifest.name,
        "manifest_hash": manifest.content_hash(),
        "survey": survey.name,
        "n_images": len(images),
        "models": _measured(images, thresholds, shape=images[0].instances.shape, survey=survey),
    }


def headline(metrics_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per method with the headline figures (for tables and the CLI)."""
    rows = []
    for method, s in metrics_dict["models"].items():
        rows.append({"model": method, **{k: s.get(k) for k in
                     ("precision", "recall", "f1", "fp_per_image", "average_precision",
                      "type_macro_f1", "ece", "snr50")}})
    return rows


def write_metrics(result: StudyResult, output_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json`` into ``output_dir`` (refusing to replace an existing one)."""
    target = Path(output_dir) / "metrics.json"
    with atomic_write(target, "w") as handle:
        json.dump(result.metrics, handle, indent=1, default=_plain)
    return target


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    msg = f"cannot write {type(value).__name__} to metrics.json"
    raise TypeError(msg)


def curves(result: StudyResult, *, n_bins: int = 15) -> dict[str, dict[str, Any]]:
    """Curves behind the report's figures, per method (test split).

    Returns
    -------
    dict
        ``method -> {"pr": (precision, recall), "operating": (precision, recall),
        "reliability": (centres, accuracy, confidence, counts) or None,
        "completeness": (snr_centres, completeness, counts),
        "confusion": matrix or None}``.
    """
    out = {}
    snr_bins = np.geomspace(2.0, 200.0, 16)
    for method, table in result.tables.items():
        cut = _cut(result.thresholds[method])
        precision, recall = (metrics.pr_curve(table.score, table.is_true, table.n_truth)[:2]
                             if table.score.size and table.n_truth else (np.zeros(0), np.zeros(0)))
        summary = result.metrics["models"][method]
        scored = ~table.is_ignored
        in_unit = scored.any() and bool(np.all((table.score >= 0) & (table.score <= 1)))
        transient = table.truth_is_transient & ~table.truth_ignore
        detected = table.truth_score() >= cut
        confusion = None
        keep = table.is_true & (table.score >= cut) & (table.pred_kind != "")
        if keep.any():
            true_kind = table.truth_kind[table.truth_index[keep]]
            confusion = metrics.confusion_matrix(true_kind, table.pred_kind[keep], TRANSIENT_KINDS)
        out[method] = {
            "pr": (precision, recall),
            "operating": (summary.get("precision"), summary.get("recall")),
            "reliability": (metrics.reliability_curve(table.score[scored], table.is_true[scored],
                                                      n_bins=n_bins) if in_unit else None),
            "completeness": (metrics.completeness_curve(table.truth_snr[transient],
                                                        detected[transient], snr_bins)
                             if transient.any() else None),
            "confusion": confusion,
        }
    return out


def worst_cases(result: StudyResult, manifest: Manifest, *, method: str = "ensemble",
                which: str = "false_positives", n: int = 8,
                size: int = 31) -> tuple[np.ndarray, list[str]]:
    """Cutout triplets of the highest-scoring false positives or the brightest missed transients.

    Parameters
    ----------
    result : StudyResult
        A finished study.
    manifest : Manifest
        Its dataset (to read the images).
    method : str
        One of :data:`METHODS`.
    which : {"false_positives", "missed"}
        What to show.
    n : int
        At most this many.
    size : int
        Cutout size in pixels.

    Returns
    -------
    triplets : numpy.ndarray
        ``(k, 3, size, size)`` science, reference, difference.
    titles : list of str
        One caption per triplet.
    """
    if which not in {"false_positives", "missed"}:
        msg = f"which must be 'false_positives' or 'missed', got {which!r}"
        raise ValueError(msg)
    table, threshold = result.tables[method], _cut(result.thresholds[method])
    if which == "false_positives":
        bad = (table.score >= threshold) & ~table.is_true & ~table.is_ignored
        order = np.flatnonzero(bad)[np.argsort(-table.score[bad])][:n]
        cands = [i.unet if method in ("unet", "ensemble") else i.baseline for i in result.images]
        offsets = np.cumsum([0] + [len(c) for c in cands])
        picks = []
        for k in order:
            img = int(np.searchsorted(offsets, k, side="right") - 1)
            row = cands[img].iloc[k - offsets[img]]
            matched = table.truth_kind[table.truth_index[k]] if table.truth_index[k] >= 0 else "noise"
            picks.append((img, row.x, row.y, f"{matched} score {table.score[k]:.2f}"))
    else:
        transient = table.truth_is_transient & ~table.truth_ignore
        missed = transient & (table.truth_score() < threshold)
        order = np.flatnonzero(missed)[np.argsort(-table.truth_snr[missed])][:n]
        offsets = np.cumsum([0] + [len(i.truth) for i in result.images])
        picks = []
        for k in order:
            img = int(np.searchsorted(offsets, k, side="right") - 1)
            row = result.images[img].truth.iloc[k - offsets[img]]
            picks.append((img, row.x, row.y, f"missed {row.kind} S/N {row.snr:.1f}"))
    triplets, titles = [], []
    for img, x, y, title in picks:
        sample = result.images[img].sample
        stack = [manifest.read(sample, key, dtype=np.float32) for key in ("science", "reference",
                                                                         "difference")]
        triplets.append(detect.cutout_triplet(*stack, x, y, size=size))
        titles.append(f"{sample['id']}: {title}")
    return np.asarray(triplets).reshape(-1, 3, size, size), titles

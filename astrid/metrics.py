"""Every number the study reports: matching, detection, localisation, typing, calibration.

The module is NumPy only (SciPy for the optimal assignment and one small fit),
so it can score any model: the U-Net, the classical S_corr baseline or the
feature classifier. Functions take plain arrays; the glue for one evaluation is

1. per image, :func:`match_table` matches candidates to the truth catalog
   (transients *and* artifacts, so a candidate on an artifact is a false
   positive and that artifact counts as not rejected);
2. :meth:`MatchTable.concat` stacks the images;
3. :func:`summarize` picks the operating threshold and returns one model's
   metrics as a JSON-ready dict (:func:`flatten_metrics` makes it MLflow-ready).

Conventions
-----------
* Positions are 0-based pixel ``(x, y)``, as in the truth catalog.
* A score threshold ``t`` keeps candidates with ``score >= t``.
* Undefined ratios (0/0) are ``nan`` unless a ``zero_division`` argument says
  otherwise; :func:`summarize` turns non-finite numbers into ``None``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment, minimize

from astrid.classes import ARTIFACT_KINDS, TRANSIENT_KINDS

__all__ = [
    "MatchResult",
    "MatchTable",
    "OperatingPoint",
    "StageTimer",
    "artifact_rejection",
    "average_precision",
    "brier_score",
    "centroid_error",
    "completeness_curve",
    "confusion_matrix",
    "expected_calibration_error",
    "flatten_metrics",
    "fp_per_deg2",
    "fp_per_image",
    "macro_f1",
    "mask_iou",
    "match_candidates",
    "match_table",
    "operating_point",
    "pr_curve",
    "precision_recall_f1",
    "reliability_curve",
    "snr_at_completeness",
    "summarize",
]


# --------------------------------------------------------------------------- validation


def _xy(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        msg = f"{name} must have shape (N, 2) of (x, y), got {arr.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)):
        msg = f"{name} contains NaN or infinite positions"
        raise ValueError(msg)
    return arr


def _vector(
    values: ArrayLike, name: str, *, finite: bool = True, allow_empty: bool = True
) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        msg = f"{name} must be 1-D, got shape {arr.shape}"
        raise ValueError(msg)
    if not allow_empty and arr.size == 0:
        msg = f"{name} is empty"
        raise ValueError(msg)
    if finite and not np.all(np.isfinite(arr)):
        msg = f"{name} contains NaN or infinite values"
        raise ValueError(msg)
    return arr


def _bools(values: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        msg = f"{name} must be 1-D, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.dtype != bool:
        if arr.size and not np.all(np.isin(arr, (0, 1))):
            msg = f"{name} must hold booleans or 0/1"
            raise ValueError(msg)
        arr = arr.astype(bool)
    if n is not None and arr.size != n:
        msg = f"{name} has {arr.size} entries, expected {n}"
        raise ValueError(msg)
    return arr


def _probabilities(values: ArrayLike, name: str) -> np.ndarray:
    arr = _vector(values, name, allow_empty=False)
    if np.any((arr < 0) | (arr > 1)):
        msg = f"{name} must lie in [0, 1]"
        raise ValueError(msg)
    return arr


def _strings(values: ArrayLike | None, name: str, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, "", dtype=object)
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or arr.size != n:
        msg = f"{name} must be 1-D with {n} entries, got shape {arr.shape}"
        raise ValueError(msg)
    return np.array([str(v) for v in arr], dtype=object)


def _count(value: float, name: str) -> float:
    if not np.isfinite(value) or value < 0:
        msg = f"{name} must be a non-negative count, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _ratio(num: float, den: float, zero_division: float = math.nan) -> float:
    return float(num) / float(den) if den > 0 else float(zero_division)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, eq=False)
class MatchResult:
    """One-to-one matches between candidates and truth objects of one image.

    Attributes
    ----------
    pairs : numpy.ndarray
        ``(K, 2)`` integer array of ``(candidate index, truth index)``.
    distances : numpy.ndarray
        ``(K,)`` centroid distance of each pair in pixels.
    ious : numpy.ndarray
        ``(K,)`` mask IoU of each pair; ``nan`` when no masks were given.
    unmatched_candidates : numpy.ndarray
        Indices of candidates without a match (false positives).
    unmatched_truth : numpy.ndarray
        Indices of truth objects without a match (misses).
    n_candidates, n_truth : int
        Sizes of the two inputs.
    """

    pairs: np.ndarray
    distances: np.ndarray
    ious: np.ndarray
    unmatched_candidates: np.ndarray
    unmatched_truth: np.ndarray
    n_candidates: int
    n_truth: int

    @property
    def tp(self) -> int:
        """Number of matched pairs."""
        return int(len(self.pairs))

    @property
    def fp(self) -> int:
        """Number of unmatched candidates."""
        return int(len(self.unmatched_candidates))

    @property
    def fn(self) -> int:
        """Number of unmatched truth objects."""
        return int(len(self.unmatched_truth))

    def candidate_to_truth(self) -> np.ndarray:
        """Return, per candidate, the matched truth index or -1."""
        out = np.full(self.n_candidates, -1, dtype=np.intp)
        out[self.pairs[:, 0]] = self.pairs[:, 1]
        return out

    def truth_to_candidate(self) -> np.ndarray:
        """Return, per truth object, the matched candidate index or -1."""
        out = np.full(self.n_truth, -1, dtype=np.intp)
        out[self.pairs[:, 1]] = self.pairs[:, 0]
        return out


def _overlap_iou(
    segmentation: np.ndarray,
    cand_labels: np.ndarray,
    instance_map: np.ndarray,
    truth_instances: np.ndarray,
) -> np.ndarray:
    """IoU matrix ``(N, M)`` between candidate segments and truth instances."""
    seg = segmentation.ravel()
    inst = instance_map.ravel()
    seg_ids, seg_area = np.unique(seg[seg > 0], return_counts=True)
    inst_ids, inst_area = np.unique(inst[inst > 0], return_counts=True)
    both = (seg > 0) & (inst > 0)
    iou = np.zeros((cand_labels.size, truth_instances.size))
    if not np.any(both):
        return iou
    pair_ids, inter = np.unique(np.stack([seg[both], inst[both]]), axis=1, return_counts=True)
    area_c = dict(zip(seg_ids.tolist(), seg_area.tolist(), strict=True))
    area_t = dict(zip(inst_ids.tolist(), inst_area.tolist(), strict=True))
    for (label, instance), n in zip(pair_ids.T.tolist(), inter.tolist(), strict=True):
        rows = np.flatnonzero(cand_labels == label)
        cols = np.flatnonzero(truth_instances == instance)
        if rows.size and cols.size:
            iou[np.ix_(rows, cols)] = n / (area_c[label] + area_t[instance] - n)
    return iou


def match_candidates(
    cand_xy: ArrayLike,
    truth_xy: ArrayLike,
    *,
    radius: float = 3.0,
    scores: ArrayLike | None = None,
    cand_labels: ArrayLike | None = None,
    segmentation: ArrayLike | None = None,
    truth_instances: ArrayLike | None = None,
    instance_map: ArrayLike | None = None,
) -> MatchResult:
    """Match candidates to truth objects one-to-one by position and mask overlap.

    A pair may match when the centroids are within ``radius`` pixels; with an
    ``instance_map``, also when the candidate's pixel lies inside the truth
    object's mask (extended objects such as trails); with a ``segmentation``
    too, when the candidate's segment overlaps that mask (IoU > 0), which also
    gives the IoU of each pair. Without ``scores`` the assignment is optimal
    (Hungarian): the most pairs, then the smallest total distance. With
    ``scores`` it is greedy in decreasing score (each candidate takes the
    nearest free truth object), the PASCAL/COCO convention that makes a
    precision-recall curve consistent across thresholds.

    Parameters
    ----------
    cand_xy : array_like, shape (N, 2)
        Candidate positions ``(x, y)`` in pixels.
    truth_xy : array_like, shape (M, 2)
        Truth positions ``(x, y)`` in pixels.
    radius : float
        Largest centroid distance of a positional match, in pixels.
    scores : array_like, shape (N,), optional
        Candidate scores; switches to greedy matching in decreasing score.
    cand_labels : array_like of int, shape (N,), optional
        Segment label of each candidate in ``segmentation`` (0: no mask).
    segmentation : array_like of int, shape (H, W), optional
        Candidate segmentation image (for example from
        :func:`astrid.detect.segment_probabilities`); goes with ``cand_labels``
        and needs ``instance_map``.
    truth_instances : array_like of int, shape (M,), optional
        Instance id of each truth object in ``instance_map`` (catalog
        ``instance``).
    instance_map : array_like of int, shape (H, W), optional
        The sample's ``instances`` map; goes with ``truth_instances``.

    Returns
    -------
    MatchResult
        Pairs, distances, IoUs and the unmatched indices.

    Raises
    ------
    ValueError
        On badly shaped or non-finite positions, a non-positive radius, or
        incomplete or inconsistent mask arguments.

    Examples
    --------
    >>> m = match_candidates([[1.0, 1.0], [9.0, 9.0]], [[1.5, 1.0], [5.0, 5.0]])
    >>> m.pairs.tolist(), m.unmatched_candidates.tolist(), m.unmatched_truth.tolist()
    ([[0, 0]], [1], [1])
    """
    cand = _xy(cand_xy, "cand_xy")
    truth = _xy(truth_xy, "truth_xy")
    if not (np.isfinite(radius) and radius > 0):
        msg = f"radius must be positive, got {radius!r}"
        raise ValueError(msg)
    n, m = len(cand), len(truth)
    score = None if scores is None else _vector(scores, "scores", finite=False)
    if score is not None and score.size != n:
        msg = f"scores has {score.size} entries for {n} candidates"
        raise ValueError(msg)
    pairs_of_args = (
        ("instance_map", instance_map, "truth_instances", truth_instances),
        ("segmentation", segmentation, "cand_labels", cand_labels),
    )
    for first, a, second, b in pairs_of_args:
        if (a is None) != (b is None):
            msg = f"{first} and {second} go together; give both or neither"
            raise ValueError(msg)
    if segmentation is not None and instance_map is None:
        msg = "segmentation needs instance_map and truth_instances to compare with"
        raise ValueError(msg)

    dist = np.sqrt(((cand[:, None, :] - truth[None, :, :]) ** 2).sum(-1))
    allowed = dist <= radius
    iou = np.full((n, m), np.nan)
    if instance_map is not None:
        inst = np.asarray(instance_map)
        instances = np.asarray(truth_instances, dtype=np.int64).ravel()
        if inst.ndim != 2:
            msg = f"instance_map must be 2-D, got shape {inst.shape}"
            raise ValueError(msg)
        if instances.size != m:
            msg = f"truth_instances has {instances.size} entries for {m} truth objects"
            raise ValueError(msg)
        # a candidate whose pixel lies inside a truth object's mask may match it
        col = np.clip(np.floor(cand[:, 0] + 0.5).astype(int), 0, inst.shape[1] - 1)
        row = np.clip(np.floor(cand[:, 1] + 0.5).astype(int), 0, inst.shape[0] - 1)
        inside = inst[row, col][:, None] == instances[None, :]
        allowed |= inside & (instances[None, :] > 0)
        if segmentation is not None:
            seg = np.asarray(segmentation)
            labels = np.asarray(cand_labels, dtype=np.int64).ravel()
            if seg.shape != inst.shape:
                msg = f"segmentation {seg.shape} and instance_map {inst.shape} differ in shape"
                raise ValueError(msg)
            if labels.size != n:
                msg = f"cand_labels has {labels.size} entries for {n} candidates"
                raise ValueError(msg)
            iou = _overlap_iou(seg, labels, inst, instances)
            allowed |= iou > 0

    pairs: list[tuple[int, int]] = []
    if n and m and allowed.any():
        if score is None:
            finite = dist[allowed]
            big = (finite.max() + 1.0) * (min(n, m) + 1)
            rows, cols = linear_sum_assignment(np.where(allowed, dist, big))
            pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
        else:
            free = np.ones(m, dtype=bool)
            order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
            for r in order:
                ok = allowed[r] & free
                if ok.any():
                    c = int(np.flatnonzero(ok)[np.argmin(dist[r, ok])])
                    free[c] = False
                    pairs.append((int(r), c))
            pairs.sort()
    pair_arr = np.array(pairs, dtype=np.intp).reshape(-1, 2)
    return MatchResult(
        pairs=pair_arr,
        distances=dist[pair_arr[:, 0], pair_arr[:, 1]],
        ious=iou[pair_arr[:, 0], pair_arr[:, 1]],
        unmatched_candidates=np.setdiff1d(np.arange(n), pair_arr[:, 0]),
        unmatched_truth=np.setdiff1d(np.arange(m), pair_arr[:, 1]),
        n_candidates=n,
        n_truth=m,
    )


@dataclass(frozen=True, eq=False)
class MatchTable:
    """Candidates and truth objects of one or more images, matched.

    Build it per image with :func:`match_table` and stack images with
    :meth:`concat`; :func:`summarize` reads it.

    Attributes
    ----------
    score : numpy.ndarray
        ``(N,)`` candidate scores (higher = more likely a genuine transient).
    truth_index : numpy.ndarray
        ``(N,)`` index of the matched truth row, -1 when unmatched.
    distance, iou : numpy.ndarray
        ``(N,)`` centroid distance and mask IoU to the matched truth (``nan``
        when unmatched; IoU ``nan`` without masks).
    pred_kind : numpy.ndarray
        ``(N,)`` predicted transient kind (``""`` when unknown).
    image : numpy.ndarray
        ``(N,)`` image number of each candidate.
    truth_kind : numpy.ndarray
        ``(M,)`` true kind of each truth row (a name of ``astrid.classes``).
    truth_snr : numpy.ndarray
        ``(M,)`` S/N of each truth row (``nan`` when unknown).
    truth_ignore : numpy.ndarray
        ``(M,)`` "don't care" rows (for example ``ambiguous``): candidates on
        them are neither true nor false positives, and they are never misses.
    truth_image : numpy.ndarray
        ``(M,)`` image number of each truth row.
    n_images : int
        Number of images evaluated (images without any candidate count too).
    transient_kinds : tuple of str
        Kinds that are genuine transients; every other kind is bogus.
    """

    score: np.ndarray
    truth_index: np.ndarray
    distance: np.ndarray
    iou: np.ndarray
    pred_kind: np.ndarray
    image: np.ndarray
    truth_kind: np.ndarray
    truth_snr: np.ndarray
    truth_ignore: np.ndarray
    truth_image: np.ndarray
    n_images: int = 1
    transient_kinds: tuple[str, ...] = TRANSIENT_KINDS

    @property
    def truth_is_transient(self) -> np.ndarray:
        """``(M,)`` whether each truth row is a genuine transient."""
        return np.isin(self.truth_kind.astype(str), list(self.transient_kinds))

    @property
    def matched(self) -> np.ndarray:
        """``(N,)`` whether each candidate matched some truth row."""
        return self.truth_index >= 0

    def _truth_flag(self, flags: np.ndarray) -> np.ndarray:
        out = np.zeros(self.score.size, dtype=bool)
        out[self.matched] = flags[self.truth_index[self.matched]]
        return out

    @property
    def is_true(self) -> np.ndarray:
        """``(N,)`` candidates matched to a (not ignored) genuine transient."""
        return self._truth_flag(self.truth_is_transient & ~self.truth_ignore)

    @property
    def is_ignored(self) -> np.ndarray:
        """``(N,)`` candidates matched to an ignored truth row."""
        return self._truth_flag(self.truth_ignore)

    @property
    def n_truth(self) -> int:
        """Number of genuine transients that count (not ignored)."""
        return int(np.sum(self.truth_is_transient & ~self.truth_ignore))

    def truth_score(self) -> np.ndarray:
        """Return ``(M,)`` the score of the matched candidate, ``-inf`` when missed."""
        out = np.full(self.truth_kind.size, -np.inf)
        out[self.truth_index[self.matched]] = self.score[self.matched]
        return out

    @classmethod
    def concat(cls, tables: Sequence[MatchTable]) -> MatchTable:
        """Stack the tables of several images into one.

        Truth indices and image numbers are offset so that they stay unique;
        ``n_images`` adds up.

        Raises
        ------
        ValueError
            If ``tables`` is empty or the tables disagree on ``transient_kinds``.
        """
        if not tables:
            msg = "tables is empty"
            raise ValueError(msg)
        kinds = tables[0].transient_kinds
        if any(t.transient_kinds != kinds for t in tables):
            msg = "tables disagree on transient_kinds"
            raise ValueError(msg)
        truth_offset, image_offset = 0, 0
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _TABLE_ARRAYS}
        for t in tables:
            shifted = np.where(t.truth_index >= 0, t.truth_index + truth_offset, -1)
            for key in _TABLE_ARRAYS:
                value = getattr(t, key)
                if key == "truth_index":
                    value = shifted
                elif key in ("image", "truth_image"):
                    value = value + image_offset
                parts[key].append(value)
            truth_offset += t.truth_kind.size
            image_offset += t.n_images
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(**arrays, n_images=image_offset, transient_kinds=kinds)


_TABLE_ARRAYS = (
    "score",
    "truth_index",
    "distance",
    "iou",
    "pred_kind",
    "image",
    "truth_kind",
    "truth_snr",
    "truth_ignore",
    "truth_image",
)


def match_table(
    cand_xy: ArrayLike,
    cand_score: ArrayLike,
    truth_xy: ArrayLike,
    truth_kind: ArrayLike,
    *,
    cand_kind: ArrayLike | None = None,
    truth_snr: ArrayLike | None = None,
    truth_ignore: ArrayLike | None = None,
    radius: float = 3.0,
    cand_labels: ArrayLike | None = None,
    segmentation: ArrayLike | None = None,
    truth_instances: ArrayLike | None = None,
    instance_map: ArrayLike | None = None,
    transient_kinds: Sequence[str] = TRANSIENT_KINDS,
) -> MatchTable:
    """Match one image's candidates against its whole truth catalog.

    Matching is greedy in decreasing ``cand_score`` (see
    :func:`match_candidates`) against every truth row, artifacts included.

    Parameters
    ----------
    cand_xy : array_like, shape (N, 2)
        Candidate positions (the ``x``, ``y`` columns of a candidate table).
    cand_score : array_like, shape (N,)
        Candidate scores.
    truth_xy : array_like, shape (M, 2)
        Truth positions (catalog ``x``, ``y``).
    truth_kind : array_like of str, shape (M,)
        Truth kinds (catalog ``kind``).
    cand_kind : array_like of str, shape (N,), optional
        Predicted transient kind per candidate, for the typing metrics.
    truth_snr : array_like, shape (M,), optional
        Truth S/N (catalog ``snr``), for completeness.
    truth_ignore : array_like of bool, shape (M,), optional
        Don't-care rows (catalog ``ambiguous``).
    radius : float
        Positional match radius in pixels.
    cand_labels, segmentation, truth_instances, instance_map : optional
        Mask matching and IoU, as in :func:`match_candidates`.
    transient_kinds : sequence of str
        Kinds that are genuine transients.

    Returns
    -------
    MatchTable
        The matched table of this image (``n_images=1``).

    Examples
    --------
    >>> t = match_table([[2, 2], [8, 8]], [0.9, 0.4], [[2, 3], [8, 8]],
    ...                 ["supernova", "cosmic_ray"])
    >>> t.is_true.tolist(), t.n_truth
    ([True, False], 1)
    """
    score = _vector(cand_score, "cand_score", finite=False)
    if np.any(np.isnan(score)):
        msg = "cand_score contains NaN"
        raise ValueError(msg)
    truth = _xy(truth_xy, "truth_xy")
    kinds = _strings(truth_kind, "truth_kind", len(truth))
    result = match_candidates(
        cand_xy,
        truth,
        radius=radius,
        scores=score,
        cand_labels=cand_labels,
        segmentation=segmentation,
        truth_instances=truth_instances,
        instance_map=instance_map,
    )
    n, m = result.n_candidates, result.n_truth
    if score.size != n:
        msg = f"cand_score has {score.size} entries for {n} candidates"
        raise ValueError(msg)
    snr = np.full(m, np.nan) if truth_snr is None else _vector(truth_snr, "truth_snr", finite=False)
    if snr.size != m:
        msg = f"truth_snr has {snr.size} entries for {m} truth rows"
        raise ValueError(msg)
    ignore = np.zeros(m, bool) if truth_ignore is None else _bools(truth_ignore, "truth_ignore", m)
    distance = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    distance[result.pairs[:, 0]] = result.distances
    iou[result.pairs[:, 0]] = result.ious
    return MatchTable(
        score=score,
        truth_index=result.candidate_to_truth(),
        distance=distance,
        iou=iou,
        pred_kind=_strings(cand_kind, "cand_kind", n),
        image=np.zeros(n, dtype=np.intp),
        truth_kind=kinds,
        truth_snr=snr,
        truth_ignore=ignore,
        truth_image=np.zeros(m, dtype=np.intp),
        n_images=1,
        transient_kinds=tuple(transient_kinds),
    )


# --------------------------------------------------------------------------- detection


def precision_recall_f1(
    tp: float, fp: float, fn: float, *, zero_division: float = 0.0
) -> tuple[float, float, float]:
    """Return precision, recall and F1 from counts.

    Parameters
    ----------
    tp, fp, fn : int
        True positives, false positives and misses.
    zero_division : float
        Value of a ratio whose denominator is zero (no candidates: precision;
        no truth: recall; both zero: F1).

    Returns
    -------
    precision, recall, f1 : float

    Raises
    ------
    ValueError
        If a count is negative or not finite.

    Examples
    --------
    >>> precision_recall_f1(3, 1, 1)
    (0.75, 0.75, 0.75)
    >>> precision_recall_f1(0, 0, 4)
    (0.0, 0.0, 0.0)
    """
    tp, fp, fn = _count(tp, "tp"), _count(fp, "fp"), _count(fn, "fn")
    precision = _ratio(tp, tp + fp, zero_division)
    recall = _ratio(tp, tp + fn, zero_division)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, zero_division)
    return precision, recall, f1


def _pr_inputs(
    scores: ArrayLike, is_true: ArrayLike, n_truth: int
) -> tuple[np.ndarray, np.ndarray, int]:
    s = _vector(scores, "scores", finite=False)
    if np.any(np.isnan(s)):
        msg = "scores contains NaN"
        raise ValueError(msg)
    t = _bools(is_true, "is_true", s.size)
    n_truth = int(_count(n_truth, "n_truth"))
    if t.sum() > n_truth:
        msg = f"n_truth ({n_truth}) is smaller than the number of true candidates ({t.sum()})"
        raise ValueError(msg)
    return s, t, n_truth


def pr_curve(
    scores: ArrayLike, is_true: ArrayLike, n_truth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the precision-recall curve over every distinct score threshold.

    Parameters
    ----------
    scores : array_like, shape (N,)
        Candidate scores.
    is_true : array_like of bool, shape (N,)
        Whether each candidate matched a genuine transient.
    n_truth : int
        Number of genuine transients, found or not (the recall denominator).

    Returns
    -------
    precision, recall, thresholds : numpy.ndarray
        One entry per distinct score, thresholds *decreasing* (recall
        non-decreasing). Recall is ``nan`` when ``n_truth`` is 0.

    Raises
    ------
    ValueError
        On NaN scores, mismatched lengths, or ``n_truth`` below the true count.

    Examples
    --------
    >>> p, r, t = pr_curve([0.9, 0.8, 0.3], [True, False, True], 4)
    >>> p.tolist(), r.tolist(), t.tolist()
    ([1.0, 0.5, 0.6666666666666666], [0.25, 0.25, 0.5], [0.9, 0.8, 0.3])
    """
    s, t, n_truth = _pr_inputs(scores, is_true, n_truth)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], int)
    tp = np.cumsum(t)[last]
    fp = np.cumsum(~t)[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_truth if n_truth > 0 else np.full(tp.size, np.nan)
    return precision.astype(float), recall.astype(float), s[last]


def average_precision(scores: ArrayLike, is_true: ArrayLike, n_truth: int) -> float:
    """Return the average precision, the step-wise area under the PR curve.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over decreasing thresholds, with
    ``R_0 = 0`` and no interpolation (scikit-learn's definition, except that
    transients never detected lower the recall through ``n_truth``).

    Parameters
    ----------
    scores, is_true, n_truth
        As in :func:`pr_curve`.

    Returns
    -------
    float
        Average precision in [0, 1]; ``nan`` when ``n_truth`` is 0.

    Examples
    --------
    >>> average_precision([0.9, 0.8, 0.3], [True, False, True], 2)
    0.8333333333333333
    """
    precision, recall, _ = pr_curve(scores, is_true, n_truth)
    if n_truth == 0:
        return math.nan
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen score threshold and the counts it gives.

    Attributes
    ----------
    threshold : float
        Keep candidates with ``score >= threshold`` (``inf``: keep none).
    precision, recall, f1 : float
        At that threshold (``0`` where undefined).
    tp, fp, fn : int
        Counts at that threshold.
    """

    threshold: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def operating_point(
    scores: ArrayLike,
    is_true: ArrayLike,
    n_truth: int,
    *,
    min_precision: float | None = None,
    target_recall: float | None = None,
) -> OperatingPoint:
    """Choose a score threshold.

    With ``min_precision``: the lowest threshold (most recall) whose precision
    is at least that; ``inf`` when none reaches it. With ``target_recall``: the
    highest threshold whose recall reaches the target, or the lowest threshold
    when none does. With neither: the threshold of maximum F1 (the highest on
    ties).

    Parameters
    ----------
    scores, is_true, n_truth
        As in :func:`pr_curve`.
    min_precision : float, optional
        Precision floor in (0, 1].
    target_recall : float, optional
        Recall target in (0, 1].

    Returns
    -------
    OperatingPoint

    Raises
    ------
    ValueError
        If both criteria are given or one is outside (0, 1].

    Examples
    --------
    >>> op = operating_point([0.9, 0.8, 0.3], [True, False, True], 2)
    >>> op.threshold, op.tp, op.fp, op.fn
    (0.3, 2, 1, 0)
    >>> operating_point([0.9, 0.8, 0.3], [True, False, True], 2, min_precision=0.9).threshold
    0.9
    """
    if min_precision is not None and target_recall is not None:
        msg = "give min_precision or target_recall, not both"
        raise ValueError(msg)
    for name, value in (("min_precision", min_precision), ("target_recall", target_recall)):
        if value is not None and not 0 < value <= 1:
            msg = f"{name} must lie in (0, 1], got {value!r}"
            raise ValueError(msg)
    s, t, n_truth = _pr_inputs(scores, is_true, n_truth)
    precision, recall, thresholds = pr_curve(s, t, n_truth)
    recall = np.nan_to_num(recall)
    threshold = math.inf
    if thresholds.size:
        if min_precision is not None:
            ok = np.flatnonzero(precision >= min_precision)
            if ok.size:
                threshold = float(thresholds[ok[-1]])
        elif target_recall is not None:
            ok = np.flatnonzero(recall >= target_recall)
            threshold = float(thresholds[ok[0]] if ok.size else thresholds[-1])
        else:
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
            threshold = float(thresholds[int(np.argmax(f1))])
    keep = s >= threshold
    tp = int(np.sum(keep & t))
    fp = int(np.sum(keep & ~t))
    p, r, f = precision_recall_f1(tp, fp, n_truth - tp)
    return OperatingPoint(threshold, p, r, f, tp, fp, n_truth - tp)


def fp_per_image(n_fp: float, n_images: int) -> float:
    """Return false positives per image.

    Raises
    ------
    ValueError
        If ``n_fp`` is negative or ``n_images`` is not positive.

    Examples
    --------
    >>> fp_per_image(6, 4)
    1.5
    """
    _count(n_fp, "n_fp")
    if not n_images > 0:
        msg = f"n_images must be positive, got {n_images!r}"
        raise ValueError(msg)
    return float(n_fp) / float(n_images)


def fp_per_deg2(
    n_fp: float, n_images: int, image_shape: tuple[int, int], pixel_scale_arcsec: float
) -> float:
    """Return false positives per square degree of searched sky.

    Parameters
    ----------
    n_fp : int
        False positives over all images.
    n_images : int
        Number of images searched.
    image_shape : tuple of int
        ``(H, W)`` of one image in pixels.
    pixel_scale_arcsec : float
        Arcsec per pixel (``SurveyPreset.pixel_scale``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On a non-positive shape, scale or image count.

    Examples
    --------
    >>> round(fp_per_deg2(10, 1, (3600, 3600), 1.0), 6)
    10.0
    """
    h, w = (int(v) for v in image_shape)
    if h <= 0 or w <= 0:
        msg = f"image_shape must be positive, got {image_shape!r}"
        raise ValueError(msg)
    if not pixel_scale_arcsec > 0:
        msg = f"pixel_scale_arcsec must be positive, got {pixel_scale_arcsec!r}"
        raise ValueError(msg)
    area = h * w * (pixel_scale_arcsec / 3600.0) ** 2
    return fp_per_image(n_fp, n_images) / area


# --------------------------------------------------------------------------- localisation


def mask_iou(pred_mask: ArrayLike, true_mask: ArrayLike) -> float:
    """Return the intersection over union of two boolean masks.

    Returns
    -------
    float
        IoU in [0, 1]; ``nan`` when both masks are empty.

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> mask_iou(a, b), mask_iou(a, a)
    (0.3333333333333333, 1.0)
    """
    pred = np.asarray(pred_mask, dtype=bool)
    true = np.asarray(true_mask, dtype=bool)
    if pred.shape != true.shape:
        msg = f"pred_mask {pred.shape} and true_mask {true.shape} differ in shape"
        raise ValueError(msg)
    union = np.sum(pred | true)
    return _ratio(np.sum(pred & true), union)


def centroid_error(pred_xy: ArrayLike, true_xy: ArrayLike) -> tuple[float, float]:
    """Return the mean and median distance between paired positions, in pixels.

    Parameters
    ----------
    pred_xy, true_xy : array_like, shape (K, 2)
        Matched pairs, row by row (for example from ``MatchResult.pairs``).

    Returns
    -------
    mean, median : float
        ``nan`` for no pairs.

    Raises
    ------
    ValueError
        If the shapes differ or a position is not finite.

    Examples
    --------
    >>> centroid_error([[0, 0], [1, 1], [5, 5]], [[0, 1], [1, 1], [5, 8]])
    (1.3333333333333333, 1.0)
    """
    pred = _xy(pred_xy, "pred_xy")
    true = _xy(true_xy, "true_xy")
    if pred.shape != true.shape:
        msg = f"pred_xy {pred.shape} and true_xy {true.shape} differ in shape"
        raise ValueError(msg)
    if pred.size == 0:
        return math.nan, math.nan
    d = np.hypot(*(pred - true).T)
    return float(d.mean()), float(np.median(d))


# --------------------------------------------------------------------------- artifacts, typing


def artifact_rejection(
    artifact_kinds: ArrayLike,
    flagged_as_transient: ArrayLike,
    *,
    kinds: Sequence[str] | None = None,
) -> dict[str, float]:
    """Return, per artifact kind, the fraction of artifacts rejected.

    An artifact is rejected when no transient candidate above the operating
    threshold matches it (``flagged_as_transient`` is False).

    Parameters
    ----------
    artifact_kinds : array_like of str, shape (K,)
        Kind of each truth artifact.
    flagged_as_transient : array_like of bool, shape (K,)
        Whether a candidate above threshold matched it.
    kinds : sequence of str, optional
        Kinds to report, in order; absent kinds get ``nan``. Default: the
        kinds present, in order of first appearance.

    Returns
    -------
    dict
        Kind -> rejected fraction.

    Raises
    ------
    ValueError
        If the lengths differ.

    Examples
    --------
    >>> artifact_rejection(["cosmic_ray", "cosmic_ray", "dipole"], [False, True, False])
    {'cosmic_ray': 0.5, 'dipole': 1.0}
    """
    names = np.asarray(artifact_kinds, dtype=object).ravel().astype(str)
    flagged = _bools(flagged_as_transient, "flagged_as_transient", names.size)
    report = list(dict.fromkeys(names.tolist())) if kinds is None else list(kinds)
    return {k: _ratio(np.sum((names == k) & ~flagged), np.sum(names == k)) for k in report}


def _kind_pairs(
    true_kinds: ArrayLike, pred_kinds: ArrayLike, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    true = np.asarray(true_kinds, dtype=object).ravel().astype(str)
    pred = np.asarray(pred_kinds, dtype=object).ravel().astype(str)
    if true.size != pred.size:
        msg = f"true_kinds ({true.size}) and pred_kinds ({pred.size}) differ in length"
        raise ValueError(msg)
    labels = [str(v) for v in labels]
    if not labels or len(set(labels)) != len(labels):
        msg = "labels must be a non-empty list of distinct names"
        raise ValueError(msg)
    return true, pred, labels


def confusion_matrix(
    true_kinds: ArrayLike, pred_kinds: ArrayLike, labels: Sequence[str]
) -> np.ndarray:
    """Return the confusion matrix, rows = true kind, columns = predicted kind.

    Pairs whose true or predicted kind is not in ``labels`` are left out.

    Parameters
    ----------
    true_kinds, pred_kinds : array_like of str, shape (K,)
        Kinds of matched pairs.
    labels : sequence of str
        Row and column order.

    Returns
    -------
    numpy.ndarray
        ``(L, L)`` int64 counts.

    Raises
    ------
    ValueError
        On unequal lengths or empty / repeated labels.

    Examples
    --------
    >>> confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"]).tolist()
    [[1, 1], [0, 1]]
    """
    true, pred, labels = _kind_pairs(true_kinds, pred_kinds, labels)
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        if t in index and p in index:
            out[index[t], index[p]] += 1
    return out


def macro_f1(true_kinds: ArrayLike, pred_kinds: ArrayLike, labels: Sequence[str]) -> float:
    """Return the F1 score averaged over ``labels``.

    A true kind in ``labels`` predicted as anything else is a miss of that
    kind, and a prediction of a label whose true kind differs is a false
    positive of the predicted label. Labels absent from both ``true_kinds`` and
    ``pred_kinds`` are left out of the average (scikit-learn would count them
    as 0).

    Parameters
    ----------
    true_kinds, pred_kinds : array_like of str, shape (K,)
        Kinds of matched pairs.
    labels : sequence of str
        Kinds to average over, e.g. ``classes.TRANSIENT_KINDS``.

    Returns
    -------
    float
        Macro F1; ``nan`` when no label occurs.

    Raises
    ------
    ValueError
        On unequal lengths or empty / repeated labels.

    Examples
    --------
    >>> macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    0.7333333333333334
    """
    true, pred, labels = _kind_pairs(true_kinds, pred_kinds, labels)
    scores = []
    for name in labels:
        tp = np.sum((true == name) & (pred == name))
        fp = np.sum((true != name) & (pred == name))
        fn = np.sum((true == name) & (pred != name))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else math.nan


# --------------------------------------------------------------------------- calibration


def reliability_curve(
    probs: ArrayLike, outcomes: ArrayLike, *, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the reliability diagram in equal-width probability bins.

    Parameters
    ----------
    probs : array_like, shape (N,)
        Predicted probabilities in [0, 1].
    outcomes : array_like of bool, shape (N,)
        What happened (1 = the predicted event is real).
    n_bins : int
        Number of equal-width bins on [0, 1]; 1.0 falls in the last bin.

    Returns
    -------
    bin_centers, accuracy, confidence, counts : numpy.ndarray
        Per bin: centre, observed frequency, mean predicted probability
        (both ``nan`` in empty bins) and number of predictions.

    Raises
    ------
    ValueError
        On empty input, probabilities outside [0, 1], unequal lengths or
        ``n_bins < 1``.

    Examples
    --------
    >>> c, acc, conf, n = reliability_curve([0.1, 0.2, 0.9], [0, 0, 1], n_bins=2)
    >>> c.tolist(), acc.tolist(), n.tolist()
    ([0.25, 0.75], [0.0, 1.0], [2, 1])
    """
    p = _probabilities(probs, "probs")
    o = _bools(outcomes, "outcomes", p.size).astype(float)
    if int(n_bins) != n_bins or n_bins < 1:
        msg = f"n_bins must be a positive integer, got {n_bins!r}"
        raise ValueError(msg)
    n_bins = int(n_bins)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=o, minlength=n_bins) / counts
        confidence = np.bincount(index, weights=p, minlength=n_bins) / counts
    centers = (np.arange(n_bins) + 0.5) / n_bins
    return centers, accuracy, confidence, counts


def expected_calibration_error(
    probs: ArrayLike, outcomes: ArrayLike, *, n_bins: int = 15
) -> float:
    """Return the expected calibration error (ECE).

    ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width
    bins (see :func:`reliability_curve`).

    Parameters
    ----------
    probs, outcomes, n_bins
        As in :func:`reliability_curve`.

    Returns
    -------
    float
        ECE in [0, 1].

    Examples
    --------
    >>> round(expected_calibration_error([0.8, 0.8, 0.8, 0.8], [1, 0, 1, 0]), 12)
    0.3
    """
    _, accuracy, confidence, counts = reliability_curve(probs, outcomes, n_bins=n_bins)
    used = counts > 0
    return float(np.sum(counts[used] * np.abs(accuracy[used] - confidence[used])) / counts.sum())


def brier_score(probs: ArrayLike, outcomes: ArrayLike) -> float:
    """Return the Brier score, the mean squared error of the probabilities.

    Raises
    ------
    ValueError
        On empty input, probabilities outside [0, 1] or unequal lengths.

    Examples
    --------
    >>> round(brier_score([0.8, 0.8, 0.2], [1, 0, 0]), 12)
    0.24
    """
    p = _probabilities(probs, "probs")
    o = _bools(outcomes, "outcomes", p.size)
    return float(np.mean((p - o) ** 2))


# --------------------------------------------------------------------------- completeness


def completeness_curve(
    values: ArrayLike, detected: ArrayLike, bins: int | ArrayLike = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the detected fraction of truth objects in bins of S/N or magnitude.

    Parameters
    ----------
    values : array_like, shape (N,)
        S/N or magnitude of each truth object.
    detected : array_like of bool, shape (N,)
        Whether each was detected at the operating threshold.
    bins : int or array_like
        Number of equal-width bins between the extremes, or increasing bin
        edges (for S/N, ``np.geomspace`` edges read best). Values outside the
        edges are left out; the last bin includes its right edge.

    Returns
    -------
    centers, completeness, counts : numpy.ndarray
        Bin midpoints, detected fraction (``nan`` in empty bins) and counts.

    Raises
    ------
    ValueError
        On empty or non-finite values, unequal lengths or bad edges.

    Examples
    --------
    >>> c, f, n = completeness_curve([1, 2, 3, 4], [0, 0, 1, 1], [0, 2.5, 5])
    >>> c.tolist(), f.tolist(), n.tolist()
    ([1.25, 3.75], [0.0, 1.0], [2, 2])
    """
    v = _vector(values, "values", allow_empty=False)
    d = _bools(detected, "detected", v.size)
    if np.ndim(bins) == 0:
        if int(bins) != bins or bins < 1:
            msg = f"bins must be a positive integer or edges, got {bins!r}"
            raise ValueError(msg)
        lo, hi = v.min(), v.max()
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    else:
        edges = _vector(bins, "bins")
        if edges.size < 2 or np.any(np.diff(edges) <= 0):
            msg = "bins edges must be increasing with at least two entries"
            raise ValueError(msg)
    counts, _ = np.histogram(v, edges)
    hits, _ = np.histogram(v[d], edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        completeness = hits / counts
    return 0.5 * (edges[:-1] + edges[1:]), completeness, counts


def _isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit (pool adjacent violators)."""
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        values.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            wsum = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wsum
            weights[-2] = wsum
            sizes[-2] += sizes[-1]
            del values[-1], weights[-1], sizes[-1]
    return np.repeat(values, sizes)


def snr_at_completeness(
    snr: ArrayLike, detected: ArrayLike, *, level: float = 0.5, method: str = "isotonic"
) -> float:
    """Return the S/N at which the detected fraction reaches ``level``.

    ``method="isotonic"`` fits a non-decreasing completeness to the detections
    in order of S/N (pool adjacent violators, no binning) and interpolates the
    crossing linearly in log S/N between the two neighbouring distinct S/N
    values; a sharp step gives the geometric mean of the two S/N values that
    bracket it. ``method="logistic"`` fits ``1 / (1 + exp(-(ln snr - mu) / w))``
    by maximum likelihood and inverts it; it suits smooth curves and needs
    overlap between detected and missed objects.

    Parameters
    ----------
    snr : array_like, shape (N,)
        Positive S/N of each truth object.
    detected : array_like of bool, shape (N,)
        Whether each was detected.
    level : float
        Completeness level in (0, 1).
    method : {"isotonic", "logistic"}
        Estimator, see above.

    Returns
    -------
    float
        The S/N; ``nan`` when the level is already reached at the lowest S/N or
        never reached (isotonic), or the fit failed (logistic).

    Raises
    ------
    ValueError
        On empty or non-positive S/N, unequal lengths, a level outside (0, 1)
        or an unknown method.

    Examples
    --------
    >>> round(snr_at_completeness([2, 4, 8, 16], [0, 0, 1, 1]), 6)
    5.656854
    """
    s = _vector(snr, "snr", allow_empty=False)
    if np.any(s <= 0):
        msg = "snr must be positive"
        raise ValueError(msg)
    d = _bools(detected, "detected", s.size).astype(float)
    if not 0 < level < 1:
        msg = f"level must lie in (0, 1), got {level!r}"
        raise ValueError(msg)
    x = np.log(s)
    if method == "isotonic":
        ux, inverse = np.unique(x, return_inverse=True)
        w = np.bincount(inverse).astype(float)
        fit = _isotonic(np.bincount(inverse, weights=d) / w, w)
        if fit[0] >= level or fit[-1] < level:
            return math.nan
        k = int(np.argmax(fit >= level))
        frac = (level - fit[k - 1]) / (fit[k] - fit[k - 1])
        return float(np.exp(ux[k - 1] + frac * (ux[k] - ux[k - 1])))
    if method == "logistic":
        spread = max(float(np.std(x)), 1e-3)

        def nll(theta: np.ndarray) -> float:
            z = (x - theta[0]) / np.exp(theta[1])
            return float(np.sum(np.logaddexp(0.0, -z) * d + np.logaddexp(0.0, z) * (1 - d)))

        start = np.array([float(np.median(x)), math.log(spread / 4)])
        bounds = [(x.min() - spread, x.max() + spread), (math.log(1e-4), math.log(10 * spread))]
        res = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
        if not res.success:
            return math.nan
        mu, log_w = res.x
        return float(np.exp(mu + np.exp(log_w) * math.log(level / (1 - level))))
    msg = f"unknown method {method!r}; use 'isotonic' or 'logistic'"
    raise ValueError(msg)


# --------------------------------------------------------------------------- timing


@dataclass
class StageTimer:
    """Accumulate wall-clock seconds per pipeline stage.

    Use ``with timer("zogy"): ...`` around each stage; repeated stages add up.
    GPU work runs asynchronously, so pass ``sync`` (for example
    ``torch.cuda.synchronize``) to make the timings honest there.

    Attributes
    ----------
    sync : callable, optional
        Called before each clock reading.
    seconds : dict
        Stage -> accumulated seconds.
    calls : dict
        Stage -> number of timed blocks.

    Examples
    --------
    >>> timer = StageTimer()
    >>> with timer("detect"):
    ...     _ = sum(range(10))
    >>> list(timer.seconds), timer.calls["detect"]
    (['detect'], 1)
    >>> sorted(timer.per_image(2))
    ['detect', 'total']
    """

    sync: Callable[[], Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def _now(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time one block of ``stage``."""
        start = self._now()
        try:
            yield
        finally:
            elapsed = self._now() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
            self.calls[stage] = self.calls.get(stage, 0) + 1

    @property
    def total(self) -> float:
        """Seconds over all stages."""
        return float(sum(self.seconds.values()))

    def per_image(self, n_images: int) -> dict[str, float]:
        """Return seconds per image for each stage and ``"total"``.

        Raises
        ------
        ValueError
            If ``n_images`` is not positive.
        """
        if not n_images > 0:
            msg = f"n_images must be positive, got {n_images!r}"
            raise ValueError(msg)
        out = {k: v / n_images for k, v in self.seconds.items()}
        out["total"] = self.total / n_images
        return out


# --------------------------------------------------------------------------- summary


def summarize(
    table: MatchTable,
    *,
    image_shape: tuple[int, int],
    pixel_scale_arcsec: float,
    threshold: float | None = None,
    min_precision: float | None = None,
    target_recall: float | None = None,
    type_labels: Sequence[str] = TRANSIENT_KINDS,
    artifact_kinds: Sequence[str] = ARTIFACT_KINDS,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Assemble one model's metrics into a JSON-ready dict.

    The threshold is ``threshold`` when given, else chosen by
    :func:`operating_point` (``min_precision`` / ``target_recall`` / best F1).
    At that threshold a kept candidate matched to a genuine transient is a
    true positive, any other kept candidate a false positive (ignored truth
    rows excepted).

    Parameters
    ----------
    table : MatchTable
        All images of one model, from :func:`match_table` and
        :meth:`MatchTable.concat`.
    image_shape : tuple of int
        ``(H, W)`` of one image, for the false positives per square degree.
    pixel_scale_arcsec : float
        Arcsec per pixel.
    threshold, min_precision, target_recall : float, optional
        How to choose the operating threshold (at most one).
    type_labels : sequence of str
        Kinds for the typing macro F1 (over true positives).
    artifact_kinds : sequence of str
        Kinds reported under ``artifact_rejection``.
    n_bins : int
        Bins of the calibration error.

    Returns
    -------
    dict
        Keys ``threshold``, ``precision``, ``recall``, ``f1``, ``tp``, ``fp``,
        ``fn``, ``fp_per_image``, ``fp_per_deg2``, ``average_precision``,
        ``iou`` (mean mask IoU of true positives), ``centroid_error_px`` (mean
        distance of true positives), ``artifact_rejection`` (kind -> rejected
        fraction), ``type_macro_f1`` (over true positives; needs ``cand_kind``),
        ``ece`` and ``brier`` (over all candidates, only when every score is a
        probability in [0, 1]), ``snr50`` (isotonic 50 % completeness S/N of
        the transients; undefined when they are complete already at the
        faintest or never reach 50 %), ``n_images``, ``n_candidates``,
        ``n_truth``. Every value is a float, an int, a dict of floats, or
        ``None`` where undefined (NaN and infinities become ``None``).

    Raises
    ------
    ValueError
        If more than one threshold criterion is given.

    Examples
    --------
    >>> t = match_table([[2, 2], [8, 8]], [0.9, 0.4], [[2, 3], [8, 8]],
    ...                 ["supernova", "cosmic_ray"], cand_kind=["supernova", "moving"])
    >>> s = summarize(t, image_shape=(16, 16), pixel_scale_arcsec=1.0, threshold=0.5)
    >>> s["precision"], s["recall"], s["artifact_rejection"]["cosmic_ray"]
    (1.0, 1.0, 1.0)
    """
    if sum(v is not None for v in (threshold, min_precision, target_recall)) > 1:
        msg = "give at most one of threshold, min_precision, target_recall"
        raise ValueError(msg)
    counted = ~table.is_ignored
    scores, is_true = table.score[counted], table.is_true[counted]
    n_truth = table.n_truth
    if threshold is None:
        op = operating_point(
            scores, is_true, n_truth, min_precision=min_precision, target_recall=target_recall
        )
        threshold = op.threshold
    keep = scores >= threshold
    tp = int(np.sum(keep & is_true))
    fp = int(np.sum(keep & ~is_true))
    fn = n_truth - tp
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)

    hit = table.is_true & (table.score >= threshold)
    truth_kept = table.truth_score() >= threshold
    transient = table.truth_is_transient & ~table.truth_ignore
    artifact = ~table.truth_is_transient & ~table.truth_ignore
    true_kind = table.truth_kind[table.truth_index[hit]]
    snr = table.truth_snr[transient]
    good_snr = np.isfinite(snr) & (snr > 0)
    calibrated = scores.size > 0 and np.all((scores >= 0) & (scores <= 1))
    summary: dict[str, Any] = {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fp_per_image": fp_per_image(fp, table.n_images),
        "fp_per_deg2": fp_per_deg2(fp, table.n_images, image_shape, pixel_scale_arcsec),
        "average_precision": average_precision(scores, is_true, n_truth),
        "iou": float(np.nanmean(table.iou[hit])) if np.any(np.isfinite(table.iou[hit])) else None,
        "centroid_error_px": float(np.mean(table.distance[hit])) if hit.any() else None,
        "artifact_rejection": artifact_rejection(
            table.truth_kind[artifact], truth_kept[artifact], kinds=artifact_kinds
        ),
        "type_macro_f1": (
            macro_f1(true_kind, table.pred_kind[hit], type_labels)
            if np.any(table.pred_kind != "")
            else None
        ),
        "ece": expected_calibration_error(scores, is_true, n_bins=n_bins) if calibrated else None,
        "brier": brier_score(scores, is_true) if calibrated else None,
        "snr50": (
            snr_at_completeness(snr[good_snr], truth_kept[transient][good_snr])
            if good_snr.any()
            else None
        ),
        "n_images": table.n_images,
        "n_candidates": int(table.score.size),
        "n_truth": n_truth,
    }
    return {
        k: (v if isinstance(v, int) or v is None else _finite_or_none(v))
        for k, v in summary.items()
    }


def flatten_metrics(metrics: Mapping[str, Any], *, sep: str = "/") -> dict[str, float]:
    """Flatten a :func:`summarize` dict for MLflow: nested keys joined, ``None`` dropped.

    Examples
    --------
    >>> flatten_metrics({"f1": 0.5, "ece": None, "artifact_rejection": {"dipole": 1.0}})
    {'f1': 0.5, 'artifact_rejection/dipole': 1.0}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for sub, item in flatten_metrics(value, sep=sep).items():
                out[f"{key}{sep}{sub}"] = item
        elif value is not None:
            out[key] = float(value)
    return out

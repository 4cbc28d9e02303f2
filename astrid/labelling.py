"""Expert labels: the label store, agreement, consensus and the active-learning queue.

Labels are one row per candidate per labeller: ``candidate_id``, ``labeller``,
``label`` (one of :data:`LABELS`), ``kind`` (a :data:`astrid.classes.CLASS_NAMES`
name or empty), ``note`` and ``time`` (UTC, ISO 8601 with microseconds). The
latest label of a labeller for a candidate replaces the earlier ones.

Storage layout of :class:`LabelStore` (append-only, safe with concurrent writers)::

    labels.csv            compacted table (or labels.parquet), rewritten atomically
    labels.csv.d/         one small JSON file per label event, written by atomic rename
    labels.csv.d/.lock    flock()ed while the events are merged into the table

:meth:`LabelStore.add` never rewrites shared state: it only creates a new event
file, so two processes labelling at once cannot lose each other's labels.
Merging events into the table (:meth:`LabelStore.compact`, also called by
:meth:`LabelStore.load` and, when the lock is free, after every ``add``) holds
an exclusive ``fcntl.flock``; without ``fcntl`` (Windows) events are merged on
read but never deleted, which is still lossless.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from astrid.classes import CLASS_NAMES
from astrid.manifest import Manifest, atomic_write, prepare_output_dir, provenance

try:  # POSIX only; see the module docstring for the fallback
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COLUMNS",
    "LABELS",
    "LabelStore",
    "active_learning_queue",
    "candidates_from_manifest",
    "candidates_from_truth",
    "cohen_kappa",
    "consensus",
    "consensus_to_manifest",
    "fleiss_kappa",
    "latest_labels",
    "pairwise_kappa",
    "rating_table",
]

log = logging.getLogger(__name__)

LABELS: tuple[str, str, str] = ("real", "bogus", "ambiguous")
"""The allowed labels."""

COLUMNS: tuple[str, ...] = ("candidate_id", "labeller", "label", "kind", "note", "time")
"""Columns of a labels table."""

_ORDER = "_order"


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=str) for name in COLUMNS})


def _check_label(label: str, kind: str) -> None:
    if label not in LABELS:
        msg = f"label must be one of {LABELS}, got {label!r}"
        raise ValueError(msg)
    if kind and kind not in CLASS_NAMES:
        msg = f"kind must be empty or one of {CLASS_NAMES}, got {kind!r}"
        raise ValueError(msg)


def latest_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest label of each labeller for each candidate.

    Rows are ordered by ``time`` (stable, so a later row wins a tie).

    Parameters
    ----------
    labels : pandas.DataFrame
        A labels table (:data:`COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        One row per (``candidate_id``, ``labeller``), ordered by time.

    Raises
    ------
    ValueError
        When a needed column is missing.

    Examples
    --------
    >>> df = pd.DataFrame({"candidate_id": ["c1", "c1"], "labeller": ["ann", "ann"],
    ...                    "label": ["real", "bogus"], "time": ["2026-01-01", "2026-01-02"]})
    >>> latest_labels(df)["label"].tolist()
    ['bogus']
    """
    missing = {"candidate_id", "labeller", "label"} - set(labels.columns)
    if missing:
        msg = f"labels table lacks column(s) {sorted(missing)}"
        raise ValueError(msg)
    keys = [k for k in ("time", _ORDER) if k in labels.columns]
    frame = labels.sort_values(keys, kind="stable") if keys else labels
    frame = frame.drop_duplicates(["candidate_id", "labeller"], keep="last")
    return frame.reset_index(drop=True)


class LabelStore:
    """A labels file that many labellers (threads, processes) can append to at once.

    Parameters
    ----------
    path : path-like
        ``*.csv`` or ``*.parquet``; created on the first label. Events wait in
        the folder ``<path>.d/`` until merged (see the module docstring).

    Raises
    ------
    ValueError
        When the suffix is neither ``.csv`` nor ``.parquet``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = LabelStore(pathlib.Path(tempfile.mkdtemp()) / "labels.csv")
    >>> _ = store.add("c1", "ann", "real", kind="supernova")
    >>> _ = store.add("c1", "ann", "bogus")
    >>> store.load()[["candidate_id", "labeller", "label"]].values.tolist()
    [['c1', 'ann', 'bogus']]
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.suffix not in {".csv", ".parquet"}:
            msg = f"label store path must end in .csv or .parquet, got {path.name!r}"
            raise ValueError(msg)
        self.path = path
        self.events_dir = path.with_name(path.name + ".d")

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    def add(
        self, candidate_id: str, labeller: str, label: str, kind: str = "", note: str = ""
    ) -> dict[str, str]:
        """Record one label now; it is on disk (atomically) when this returns.

        Parameters
        ----------
        candidate_id : str
            The candidate (for alerts, the manifest sample id).
        labeller : str
            Who labels.
        label : {"real", "bogus", "ambiguous"}
            The label.
        kind : str
            A :data:`astrid.classes.CLASS_NAMES` name, or empty.
        note : str
            Free text.

        Returns
        -------
        dict
            The stored row.

        Raises
        ------
        ValueError
            For an empty ``candidate_id`` or ``labeller``, or an unknown ``label`` or ``kind``.
        """
        candidate_id, labeller = str(candidate_id).strip(), str(labeller).strip()
        if not candidate_id:
            msg = "candidate_id must not be empty"
            raise ValueError(msg)
        if not labeller:
            msg = "labeller must not be empty"
            raise ValueError(msg)
        kind = kind or ""
        _check_label(label, kind)
        now = datetime.now(UTC)
        row = {"candidate_id": candidate_id, "labeller": labeller, "label": label, "kind": kind,
               "note": str(note or ""), "time": now.isoformat(timespec="microseconds")}
        order = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with atomic_write(self.events_dir / f"{order}.json", "w") as handle:
            json.dump({**row, _ORDER: order}, handle)
        self.compact(blocking=False)
        return row

    def _event_files(self) -> list[Path]:
        if not self.events_dir.is_dir():
            return []
        return sorted(p for p in self.events_dir.glob("*.json") if not p.name.startswith("."))

    def _read_table(self) -> pd.DataFrame:
        if not self.path.is_file():
            return _empty_labels()
        if self.path.suffix == ".csv":
            table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        else:
            table = pd.read_parquet(self.path).astype(str)
        return table

    def _merged(self) -> tuple[pd.DataFrame, list[Path]]:
        files, events = [], []
        for path in self._event_files():
            try:
                events.append(json.loads(path.read_text()))
            except FileNotFoundError:  # merged into the table meanwhile, which is read after
                continue
            except (OSError, json.JSONDecodeError) as err:
                log.warning("label event %s not read: %s", path, err)
                continue
            files.append(path)
        table = self._read_table()
        if events:
            table = pd.concat([table, pd.DataFrame(events)], ignore_index=True)
        for name in COLUMNS:
            if name not in table.columns:
                table[name] = ""
        table[list(COLUMNS)] = table[list(COLUMNS)].fillna("").astype(str)
        merged = latest_labels(table)[list(COLUMNS)]
        return merged, files

    def _write_table(self, table: pd.DataFrame) -> None:
        if self.path.suffix == ".csv":
            with atomic_write(self.path, "w", overwrite=True) as handle:
                table.to_csv(handle, index=False)
        else:
            with atomic_write(self.path, "wb", overwrite=True) as handle:
                table.to_parquet(handle, index=False)

    def compact(self, *, blocking: bool = True) -> bool:
        """Merge waiting label events into the table file and delete them.

        Parameters
        ----------
        blocking : bool
            Wait for another process's merge to finish; otherwise give up at once.

        Returns
        -------
        bool
            Whether a merge ran (false when the lock was busy or there is no ``fcntl``).
        """
        return self._compact(blocking=blocking) is not None

    def _compact(self, *, blocking: bool) -> pd.DataFrame | None:
        if fcntl is None or not self.events_dir.is_dir():
            return None
        with open(self.events_dir / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                return None
            try:
                merged, files = self._merged()
                if files:
                    self._write_table(merged)
                    for path in files:
                        path.unlink(missing_ok=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return merged

    def load(self) -> pd.DataFrame:
        """Return every label (latest per candidate and labeller), merging waiting events first.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`COLUMNS`, all strings, ordered by time.
        """
        merged = self._compact(blocking=True)
        return merged if merged is not None else self._merged()[0]

    def labels_for(self, candidate_id: str) -> pd.DataFrame:
        """Return the labels given to one candidate."""
        table = self.load()
        return table[table["candidate_id"] == str(candidate_id)].reset_index(drop=True)


# --------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa between two labellers' labels of the same items.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and
    ``p_e`` the agreement expected from each labeller's label frequencies.

    Parameters
    ----------
    a, b : sequence
        Labels of the same items, in the same order.

    Returns
    -------
    float
        Kappa in ``[-1, 1]``; NaN when ``p_e == 1`` (both gave one and the same
        label to everything, so chance explains all agreement).

    Raises
    ------
    ValueError
        When the lengths differ or are zero.

    Examples
    --------
    >>> cohen_kappa(["real", "real", "bogus", "bogus"], ["real", "bogus", "bogus", "bogus"])
    0.5
    """
    first, second = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if first.ndim != 1 or first.shape != second.shape:
        msg = f"a and b must be 1-D of the same length, got {first.shape} and {second.shape}"
        raise ValueError(msg)
    if first.size == 0:
        msg = "a and b are empty"
        raise ValueError(msg)
    observed = float(np.mean(first == second))
    categories = set(first.tolist()) | set(second.tolist())
    expected = float(sum(np.mean(first == c) * np.mean(second == c) for c in categories))
    if np.isclose(expected, 1.0):
        return float("nan")
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa for many labellers.

    Parameters
    ----------
    table : array-like or pandas.DataFrame
        ``(n_items, n_categories)`` counts: how many labellers put item ``i``
        into category ``j``. Every row must sum to the same number of labellers (>= 2).

    Returns
    -------
    float
        Kappa; NaN when all labels fall in one category.

    Raises
    ------
    ValueError
        For a table that is not 2-D, has negative counts, or unequal or too few raters per item.

    Examples
    --------
    >>> round(fleiss_kappa([[2, 0], [0, 2], [1, 1]]), 4)
    0.3333
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] < 2:
        msg = f"table must be (n_items >= 1, n_categories >= 2), got shape {counts.shape}"
        raise ValueError(msg)
    if np.any(counts < 0) or not np.allclose(counts, np.round(counts)):
        msg = "table must hold non-negative integer counts"
        raise ValueError(msg)
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        msg = f"every item needs the same number (>= 2) of labellers, got {sorted(set(raters.tolist()))}"
        raise ValueError(msg)
    n = raters[0]
    per_item = (np.sum(counts**2, axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / counts.sum()
    expected = float(np.sum(shares**2))
    if np.isclose(expected, 1.0):
        return float("nan")
    return float((per_item.mean() - expected) / (1.0 - expected))


def rating_table(labels: pd.DataFrame, *, categories: Sequence[str] = LABELS) -> pd.DataFrame:
    """Count each candidate's labels (latest per labeller) per category, for :func:`fleiss_kappa`.

    Examples
    --------
    >>> df = pd.DataFrame({"candidate_id": ["c", "c"], "labeller": ["a", "b"], "label": ["real", "bogus"]})
    >>> rating_table(df).loc["c"].tolist()
    [1, 1, 0]
    """
    latest = latest_labels(labels)
    counts = pd.crosstab(latest["candidate_id"], latest["label"])
    return counts.reindex(columns=list(categories), fill_value=0).astype(int)


def pairwise_kappa(labels: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every pair of labellers over the candidates both labelled.

    Returns
    -------
    pandas.DataFrame
        Columns ``labeller_a``, ``labeller_b``, ``n_common``, ``agreement``, ``kappa``.

    Examples
    --------
    >>> df = pd.DataFrame({"candidate_id": ["c1", "c2", "c1", "c2"], "labeller": ["a", "a", "b", "b"],
    ...                    "label": ["real", "bogus", "real", "real"]})
    >>> pairwise_kappa(df)[["n_common", "agreement", "kappa"]].values.tolist()
    [[2.0, 0.5, 0.0]]
    """
    latest = latest_labels(labels)
    wide = latest.pivot(index="candidate_id", columns="labeller", values="label")
    rows = []
    for first, second in combinations(sorted(wide.columns), 2):
        both = wide[[first, second]].dropna()
        if both.empty:
            continue
        a, b = both[first].to_numpy(), both[second].to_numpy()
        rows.append({"labeller_a": first, "labeller_b": second, "n_common": float(len(both)),
                     "agreement": float(np.mean(a == b)), "kappa": cohen_kappa(a, b)})
    return pd.DataFrame(rows, columns=["labeller_a", "labeller_b", "n_common", "agreement", "kappa"])


def consensus(labels: pd.DataFrame, *, min_votes: int = 1) -> pd.DataFrame:
    """Majority label of each candidate over its labellers (latest label of each).

    A tie between labels gives ``"ambiguous"``. ``kind`` is the most common
    non-empty kind among the labellers who gave the winning label (ties broken
    alphabetically; empty when none gave a kind). ``agreement`` is the share
    of labellers who gave the winning label (for a tie, the tied share).

    Parameters
    ----------
    labels : pandas.DataFrame
        A labels table (:data:`COLUMNS`; ``kind`` and ``time`` optional).
    min_votes : int
        Keep candidates with at least this many labellers.

    Returns
    -------
    pandas.DataFrame
        Columns ``candidate_id``, ``label``, ``kind``, ``n_votes``, ``agreement``,
        sorted by ``candidate_id``.

    Raises
    ------
    ValueError
        When ``min_votes < 1`` or a column is missing.

    Examples
    --------
    >>> df = pd.DataFrame({"candidate_id": ["c"] * 3, "labeller": ["a", "b", "c"],
    ...                    "label": ["real", "real", "bogus"], "kind": ["supernova", "", ""]})
    >>> row = consensus(df).iloc[0]
    >>> row.label, row.kind, int(row.n_votes), round(float(row.agreement), 3)
    ('real', 'supernova', 3, 0.667)
    """
    if int(min_votes) < 1:
        msg = f"min_votes must be >= 1, got {min_votes!r}"
        raise ValueError(msg)
    latest = latest_labels(labels)
    kinds = (latest["kind"].fillna("").astype(str) if "kind" in latest.columns
             else pd.Series("", index=latest.index))
    rows = []
    for candidate, group in latest.groupby("candidate_id", sort=True):
        votes = Counter(group["label"])
        top = max(votes.values())
        winners = sorted(label for label, count in votes.items() if count == top)
        label = winners[0] if len(winners) == 1 else "ambiguous"
        agreeing = kinds[group.index[group["label"] == label]] if len(winners) == 1 else kinds[group.index]
        kind_votes = Counter(k for k in agreeing if k)
        kind = min(kind_votes, key=lambda k: (-kind_votes[k], k)) if kind_votes else ""
        rows.append({"candidate_id": candidate, "label": label, "kind": kind,
                     "n_votes": len(group), "agreement": top / len(group)})
    result = pd.DataFrame(rows, columns=["candidate_id", "label", "kind", "n_votes", "agreement"])
    result = result[result["n_votes"] >= int(min_votes)].reset_index(drop=True)
    return result.astype({"n_votes": int, "agreement": float})


# --------------------------------------------------------------------------- queue


def active_learning_queue(
    candidates: pd.DataFrame,
    *,
    score_col: str | None = "score",
    uncertainty_col: str | None = "uncertainty",
    labels: pd.DataFrame | LabelStore | None = None,
    id_col: str = "candidate_id",
    exclude_labelled_by: str | None = None,
) -> pd.DataFrame:
    """Order candidates so that the ones most worth a human look come first.

    ``priority = closeness + uncertainty_norm + disagreement`` where

    * ``closeness = 1 - 2 |score - 0.5|`` (1 at 0.5, 0 at a confident 0 or 1;
      a missing score counts as 0.5: nobody has decided yet),
    * ``uncertainty_norm`` is the uncertainty divided by its largest value
      (a missing uncertainty counts as the largest),
    * ``disagreement = 1 - agreement`` of the labellers (0 below two votes).

    Ties go to candidates with fewer votes, then by id.

    Parameters
    ----------
    candidates : pandas.DataFrame
        One row per candidate with ``id_col`` and the named columns.
    score_col, uncertainty_col : str or None
        Column names; ``None`` leaves that term out. A named column that is
        missing raises.
    labels : pandas.DataFrame or LabelStore, optional
        Labels so far.
    id_col : str
        Candidate id column.
    exclude_labelled_by : str, optional
        Drop candidates this labeller has already labelled.

    Returns
    -------
    pandas.DataFrame
        The candidates with ``closeness``, ``uncertainty_norm``, ``n_votes``,
        ``disagreement`` and ``priority`` added, best first, new index.

    Raises
    ------
    ValueError
        When a named column is missing or a score lies outside ``[0, 1]``.

    Examples
    --------
    >>> cands = pd.DataFrame({"candidate_id": ["a", "b", "c"], "score": [0.95, 0.5, 0.2]})
    >>> active_learning_queue(cands, uncertainty_col=None)["candidate_id"].tolist()
    ['b', 'c', 'a']
    """
    for name in (id_col, score_col, uncertainty_col):
        if name is not None and name not in candidates.columns:
            msg = f"candidates have no column {name!r} (columns: {list(candidates.columns)})"
            raise ValueError(msg)
    frame = candidates.copy()
    frame[id_col] = frame[id_col].astype(str)
    n = len(frame)
    if score_col is not None:
        score = pd.to_numeric(frame[score_col], errors="coerce").to_numpy(dtype=float)
        if np.any((score < 0) | (score > 1)):
            msg = f"column {score_col!r} must lie in [0, 1]"
            raise ValueError(msg)
        frame["closeness"] = 1.0 - 2.0 * np.abs(np.where(np.isnan(score), 0.5, score) - 0.5)
    else:
        frame["closeness"] = np.zeros(n)
    if uncertainty_col is not None:
        unc = pd.to_numeric(frame[uncertainty_col], errors="coerce").to_numpy(dtype=float)
        top = np.nanmax(unc) if np.isfinite(unc).any() else 0.0
        frame["uncertainty_norm"] = np.where(np.isnan(unc), 1.0, unc / top if top > 0 else 0.0)
    else:
        frame["uncertainty_norm"] = np.zeros(n)
    table = labels.load() if isinstance(labels, LabelStore) else labels
    frame["n_votes"] = 0
    frame["disagreement"] = 0.0
    if table is not None and len(table):
        agreed = consensus(table).set_index("candidate_id")
        votes = frame[id_col].map(agreed["n_votes"]).fillna(0).astype(int)
        share = frame[id_col].map(agreed["agreement"]).fillna(1.0)
        frame["n_votes"] = votes
        frame["disagreement"] = np.where(votes >= 2, 1.0 - share, 0.0)
        if exclude_labelled_by is not None:
            mine = set(table.loc[table["labeller"] == exclude_labelled_by, "candidate_id"].astype(str))
            frame = frame[~frame[id_col].isin(mine)]
    frame["priority"] = frame["closeness"] + frame["uncertainty_norm"] + frame["disagreement"]
    frame = frame.sort_values(["priority", "n_votes", id_col], ascending=[False, True, True], kind="stable")
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- manifests


def candidates_from_manifest(manifest: Manifest) -> pd.DataFrame:
    """Candidate table of an alerts manifest: one candidate per sample.

    ``score`` is ZTF's ``drb`` (``rb`` where there is no ``drb``) until a model
    scores the alerts; ``uncertainty`` is NaN; ``kind`` is ``"moving"`` for a
    known asteroid, ``"supernova"`` for a TNS ``SN*`` class, else empty.

    Returns
    -------
    pandas.DataFrame
        ``candidate_id`` (= sample id), ``sample_id``, ``split``, ``score``,
        ``uncertainty``, ``kind`` and the alert fields present.
    """
    rows = []
    for sample in manifest.samples:
        drb, rb = sample.get("drb"), sample.get("rb")
        tns = sample.get("label_tns_class") or ""
        kind = "moving" if sample.get("label_asteroid") else "supernova" if tns.startswith("SN") else ""
        row = {"candidate_id": sample["id"], "sample_id": sample["id"], "split": sample["split"],
               "score": drb if drb is not None else rb, "uncertainty": np.nan, "kind": kind}
        for key in ("objectId", "candid", "drb", "rb", "isdiffpos", "magpsf", "sigmapsf", "fid", "jd",
                    "ra", "dec", "fwhm", "ssdistnr", "distpsnr1", "sgscore1", "nbad", "nan_fraction",
                    "label_tns_class"):
            if key in sample:
                row[key] = sample[key]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in ("score", "uncertainty"):
        if name in frame.columns:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def candidates_from_truth(manifest: Manifest) -> pd.DataFrame:
    """Candidate table from the truth catalogs of a synthetic manifest (a labelling demo).

    Returns
    -------
    pandas.DataFrame
        ``candidate_id`` (``<sample id>#<instance>``), ``sample_id``, ``split``,
        ``x``, ``y``, ``kind``, ``score`` (NaN) and ``uncertainty`` (NaN).
    """
    frames = []
    for sample in manifest.samples:
        if "truth" not in sample:
            continue
        truth = pd.read_csv(manifest.file(sample, "truth"))
        frames.append(pd.DataFrame({
            "candidate_id": [f"{sample['id']}#{int(i)}" for i in truth["instance"]],
            "sample_id": sample["id"], "split": sample["split"],
            "x": truth["x"].astype(float), "y": truth["y"].astype(float),
            "kind": truth["kind"].astype(str), "score": np.nan, "uncertainty": np.nan,
        }))
    if not frames:
        msg = f"manifest {manifest.path} has no 'truth' catalogs"
        raise ValueError(msg)
    return pd.concat(frames, ignore_index=True)


def _sample_files(source: Manifest, sample: dict[str, Any]) -> list[str]:
    return [value for value in sample.values() if isinstance(value, str) and value in source.files]


def consensus_to_manifest(
    consensus_df: pd.DataFrame,
    source_manifest: Manifest | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    candidates: pd.DataFrame | None = None,
    include_ambiguous: bool = False,
    min_agreement: float = 0.0,
    name: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Turn consensus labels into a new, self-contained training manifest.

    The files of every labelled sample are **copied** (same relative paths,
    same bytes, so the sha256 carry over and ``verify()`` passes even when the
    source moves). Splits are kept from the source manifest, which already
    splits by field or object.

    * A ``candidate_id`` that is a sample id (alerts) labels that sample:
      fields ``human_label``, ``human_kind``, ``n_votes``, ``agreement`` and
      ``label_real`` (1 real, 0 bogus, None ambiguous) are added.
    * Otherwise ``candidates`` (columns ``candidate_id``, ``sample_id``, ``x``,
      ``y``) maps it to a sample, and each such sample gets a product
      ``human_labels``: ``human_labels/<sample id>.csv`` with one row per
      labelled candidate.

    Parameters
    ----------
    consensus_df : pandas.DataFrame
        Output of :func:`consensus`.
    source_manifest : Manifest or path-like
        The manifest the candidates came from.
    output_dir : path-like
        New (or empty) folder.
    candidates : pandas.DataFrame, optional
        Candidate positions for image manifests.
    include_ambiguous : bool
        Keep ``ambiguous`` consensus labels.
    min_agreement : float
        Keep labels with at least this agreement.
    name : str, optional
        Dataset name (default ``<source name>_labelled``).
    overwrite : bool
        Empty a non-empty ``output_dir`` first.

    Returns
    -------
    Manifest
        The saved manifest; unmatched candidates are listed in ``skipped``.

    Raises
    ------
    ValueError
        When columns are missing, ``min_agreement`` is outside ``[0, 1]``, or
        no label matches a sample.
    """
    missing = {"candidate_id", "label", "kind", "n_votes", "agreement"} - set(consensus_df.columns)
    if missing:
        msg = f"consensus_df lacks column(s) {sorted(missing)}"
        raise ValueError(msg)
    if not 0.0 <= float(min_agreement) <= 1.0:
        msg = f"min_agreement must be in [0, 1], got {min_agreement!r}"
        raise ValueError(msg)
    if candidates is not None:
        lacking = {"candidate_id", "sample_id", "x", "y"} - set(candidates.columns)
        if lacking:
            msg = f"candidates lack column(s) {sorted(lacking)}"
            raise ValueError(msg)
    source = source_manifest if isinstance(source_manifest, Manifest) else Manifest.load(source_manifest)
    chosen = consensus_df[consensus_df["agreement"] >= float(min_agreement)]
    if not include_ambiguous:
        chosen = chosen[chosen["label"] != "ambiguous"]
    by_id = {s["id"]: s for s in source.samples}
    where = {} if candidates is None else dict(zip(candidates["candidate_id"].astype(str),
                                                   candidates[["sample_id", "x", "y"]].to_dict("records"),
                                                   strict=True))
    per_sample: dict[str, dict[str, Any]] = {}
    positions: dict[str, list[dict[str, Any]]] = {}
    skipped = []
    for row in chosen.to_dict("records"):
        cid = str(row["candidate_id"])
        fields = {"human_label": row["label"], "human_kind": row["kind"] or "",
                  "n_votes": int(row["n_votes"]), "agreement": float(row["agreement"]),
                  "label_real": {"real": 1, "bogus": 0}.get(row["label"])}
        if cid in by_id:
            per_sample[cid] = fields
        elif cid in where and str(where[cid]["sample_id"]) in by_id:
            spot = where[cid]
            positions.setdefault(str(spot["sample_id"]), []).append(
                {"candidate_id": cid, "x": spot["x"], "y": spot["y"], **fields})
        else:
            skipped.append({"candidate_id": cid, "reason": "not in source manifest"})
    if not per_sample and not positions:
        msg = f"no consensus label matches a sample of {source.path} ({len(skipped)} unmatched)"
        raise ValueError(msg)
    root = prepare_output_dir(output_dir, overwrite=overwrite)
    manifest = Manifest(
        root=root, name=name or f"{source.name}_labelled", kind=source.kind,
        generator={"function": "astrid.labelling.consensus_to_manifest", "source": str(source.path),
                   "source_hash": source.content_hash(), "include_ambiguous": include_ambiguous,
                   "min_agreement": float(min_agreement)},
        skipped=skipped,
        info={**provenance(), "files": "copied from the source manifest (same relative paths)"},
    )
    for sample in source.samples:
        sid = sample["id"]
        if sid not in per_sample and sid not in positions:
            continue
        entry = json.loads(json.dumps(sample))
        for rel in _sample_files(source, sample):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / rel, root / rel)
            manifest.record_file(rel)
        entry.update(per_sample.get(sid, {}))
        if sid in positions:
            rel = f"human_labels/{sid}.csv"
            with atomic_write(root / rel, "w") as handle:
                pd.DataFrame(positions[sid]).to_csv(handle, index=False)
            manifest.add_product(entry, "human_labels", rel)
        manifest.samples.append(entry)
    if skipped:
        log.warning("%d consensus label(s) match no sample of %s", len(skipped), source.path)
    manifest.save()
    return manifest

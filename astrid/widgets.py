"""The cutout inspector: look at candidates one by one and label them.

:class:`CutoutInspector` is an ipywidgets ``VBox`` on top of
:mod:`astrid.labelling`: science / reference / difference stamps, the
candidate's numbers, filter and sort controls, previous/next, and label
buttons that write to a :class:`~astrid.labelling.LabelStore` at once.

Every control calls a plain method (:meth:`CutoutInspector.label`,
:meth:`~CutoutInspector.next`, :meth:`~CutoutInspector.apply_filter`, ...),
so the whole loop runs headless in tests.

Keyboard shortcuts: ipywidgets has no page-wide key events (and ``ipyevents``
is not a dependency), so the panel has a small ``keys`` text box: click into
it and type ``r`` (real), ``b`` (bogus), ``a`` (ambiguous), ``n`` (next),
``p`` (previous) or ``z`` (zoom to context). Each keystroke acts at once and
the box clears itself.

Stamps come from a *source*, any object with ``triplet(row) -> (3, H, W)``:

* :class:`ArrayStamps` for triplets in memory (e.g. an
  :class:`astrid.alerts.AlertTable`);
* :class:`ManifestStamps` for a manifest: alert manifests (one sample per
  candidate, stamps stored) or image manifests, where stamps are cut on the
  fly around the candidate's ``x``, ``y`` from the full images, which also
  give the "zoom to context" view (``context(row)``).
"""

from __future__ import annotations

import html
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from astrid.classes import CLASS_NAMES
from astrid.labelling import LABELS, LabelStore, active_learning_queue, candidates_from_manifest
from astrid.manifest import Manifest
from astrid.plots import figure_png, show_context, show_triplet

__all__ = ["ALL_KINDS", "KEYS", "SORT_KEYS", "ArrayStamps", "CutoutInspector", "ManifestStamps", "cut_stamp"]

ALL_KINDS = "(all)"
"""Kind-filter value that keeps every kind."""

SORT_KEYS: dict[str, str] = {
    "queue": "most uncertain / disputed first",
    "score": "score, low to high",
    "-score": "score, high to low",
    "-uncertainty": "uncertainty, high to low",
    "drb_disagreement": "disagreement |score - ZTF drb|, high to low",
    "candidate_id": "candidate id",
}
"""Sort orders of the inspector (key -> meaning)."""

KEYS: dict[str, str] = {
    "r": "label real", "b": "label bogus", "a": "label ambiguous",
    "n": "next", "p": "previous", "z": "toggle zoom to context",
}
"""Keyboard shortcuts typed into the ``keys`` box."""

_INFO_FIELDS = ("score", "uncertainty", "kind", "drb", "rb", "drb_disagreement", "isdiffpos", "magpsf",
                "sigmapsf", "fid", "fwhm", "ssdistnr", "distpsnr1", "sgscore1", "nbad", "nan_fraction",
                "label_tns_class", "objectId", "sample_id", "x", "y", "split")


def cut_stamp(image: np.ndarray, x: float, y: float, *, size: int = 63) -> np.ndarray:
    """Cut a ``size × size`` stamp centred on pixel ``(x, y)``, NaN where it leaves the image.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    x, y : float
        0-based column and row of the centre (rounded to the nearest pixel).
    size : int
        Odd stamp side.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)``.

    Raises
    ------
    ValueError
        For a non-2-D image, an even or non-positive ``size``, or a non-finite centre.

    Examples
    --------
    >>> img = np.arange(25.0).reshape(5, 5)
    >>> cut_stamp(img, 0, 0, size=3)
    array([[nan, nan, nan],
           [nan,  0.,  1.],
           [nan,  5.,  6.]], dtype=float32)
    """
    data = np.asarray(image)
    if data.ndim != 2:
        msg = f"image must be 2-D, got shape {data.shape}"
        raise ValueError(msg)
    if size < 1 or size % 2 == 0:
        msg = f"size must be a positive odd number, got {size}"
        raise ValueError(msg)
    if not (math.isfinite(x) and math.isfinite(y)):
        msg = f"stamp centre must be finite, got ({x}, {y})"
        raise ValueError(msg)
    half = size // 2
    cx, cy = int(round(x)), int(round(y))
    out = np.full((size, size), np.nan, dtype=np.float32)
    y0, y1 = max(cy - half, 0), min(cy + half + 1, data.shape[0])
    x0, x1 = max(cx - half, 0), min(cx + half + 1, data.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - (cy - half):y1 - (cy - half), x0 - (cx - half):x1 - (cx - half)] = data[y0:y1, x0:x1]
    return out


class ArrayStamps:
    """Stamps held in memory, looked up by ``candidate_id``.

    Parameters
    ----------
    triplets : numpy.ndarray
        ``(N, 3, H, W)``.
    ids : sequence of str
        Candidate id of each triplet.

    Raises
    ------
    ValueError
        When the shapes do not match or ids repeat.

    Examples
    --------
    >>> src = ArrayStamps(np.zeros((2, 3, 4, 4)), ["a", "b"])
    >>> src.triplet({"candidate_id": "b"}).shape
    (3, 4, 4)
    """

    def __init__(self, triplets: np.ndarray, ids: Sequence[str]):
        stack = np.asarray(triplets)
        if stack.ndim != 4 or stack.shape[1] != 3:
            msg = f"triplets must have shape (N, 3, H, W), got {stack.shape}"
            raise ValueError(msg)
        keys = [str(i) for i in ids]
        if len(keys) != len(stack):
            msg = f"ids has {len(keys)} entries for {len(stack)} triplets"
            raise ValueError(msg)
        if len(set(keys)) != len(keys):
            msg = "ids must be unique"
            raise ValueError(msg)
        self.triplets = stack
        self._index = {key: k for k, key in enumerate(keys)}

    @classmethod
    def from_alert_table(cls, table: Any) -> ArrayStamps:
        """Wrap an :class:`astrid.alerts.AlertTable`; ids are ``<objectId>_<candid>`` as in its manifest."""
        ids = [f"{o}_{c}" for o, c in zip(table.meta["objectId"], table.meta["candid"], strict=True)]
        return cls(table.triplets, ids)

    def triplet(self, row: Mapping[str, Any]) -> np.ndarray:
        """Return the stamps of the candidate in ``row``."""
        key = str(row["candidate_id"])
        if key not in self._index:
            msg = f"no stamps for candidate {key!r}"
            raise KeyError(msg)
        return self.triplets[self._index[key]]


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


class ManifestStamps:
    """Stamps read from a manifest, cut from full images when the candidate has ``x``, ``y``.

    The sample is the row's ``sample_id`` (else its ``candidate_id``). The
    difference is the sample's ``difference`` product when there is one, else
    science minus reference. Stamps smaller than ``size`` (alert manifests)
    are returned whole.

    Parameters
    ----------
    manifest : Manifest
        Alerts or image manifest.
    size : int
        Stamp side when cutting.
    cache_size : int
        Samples' images kept in memory.
    """

    def __init__(self, manifest: Manifest, *, size: int = 63, cache_size: int = 4):
        if size < 1 or size % 2 == 0:
            msg = f"size must be a positive odd number, got {size}"
            raise ValueError(msg)
        self.manifest = manifest
        self.size = size
        self.cache_size = max(int(cache_size), 1)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _images(self, row: Mapping[str, Any]) -> np.ndarray:
        sample_id = row.get("sample_id")
        sample_id = str(sample_id) if _present(sample_id) else str(row["candidate_id"])
        if sample_id in self._cache:
            self._cache.move_to_end(sample_id)
            return self._cache[sample_id]
        sample = self.manifest.sample(sample_id)
        science = self.manifest.read(sample, "science", dtype=np.float32)
        reference = self.manifest.read(sample, "reference", dtype=np.float32)
        if "difference" in sample:
            difference = self.manifest.read(sample, "difference", dtype=np.float32)
        else:
            difference = science - reference
        images = np.stack([science, reference, difference])
        self._cache[sample_id] = images
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return images

    def _centre(self, row: Mapping[str, Any], images: np.ndarray) -> tuple[float, float]:
        x, y = row.get("x"), row.get("y")
        if _present(x) and _present(y):
            return float(x), float(y)
        return (images.shape[2] - 1) / 2, (images.shape[1] - 1) / 2

    def triplet(self, row: Mapping[str, Any]) -> np.ndarray:
        """Return the ``(3, size, size)`` stamps of the candidate in ``row``."""
        images = self._images(row)
        if images.shape[1] <= self.size and images.shape[2] <= self.size:
            return images
        x, y = self._centre(row, images)
        return np.stack([cut_stamp(image, x, y, size=self.size) for image in images])

    def context(self, row: Mapping[str, Any]) -> tuple[np.ndarray, float, float] | None:
        """Return the full difference image and the candidate's position, or None for stamp-only samples."""
        images = self._images(row)
        if images.shape[1] <= self.size and images.shape[2] <= self.size:
            return None
        x, y = self._centre(row, images)
        return images[2], x, y


class CutoutInspector(widgets.VBox):
    """Inspect and label candidates: stamps, numbers, filters, sort orders and label buttons.

    Parameters
    ----------
    candidates : pandas.DataFrame
        One row per candidate with ``candidate_id``; optional ``score`` (in
        [0, 1]), ``uncertainty``, ``kind``, ``drb`` and any metadata to show.
    triplets_source : object
        Has ``triplet(row) -> (3, H, W)`` (:class:`ArrayStamps`, :class:`ManifestStamps`).
    store : LabelStore
        Where labels go.
    labeller : str
        Who is labelling.
    context_source : object, optional
        Has ``context(row) -> (image, x, y) or None``; enables "zoom to context".
    auto_advance : bool
        Move to the next candidate after each label.

    Raises
    ------
    ValueError
        For a missing ``candidate_id`` column, repeated ids, an empty
        ``labeller``, scores outside [0, 1], or sources lacking the methods.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> cands = pd.DataFrame({"candidate_id": ["a", "b"], "score": [0.9, 0.4]})
    >>> store = LabelStore(pathlib.Path(tempfile.mkdtemp()) / "labels.csv")
    >>> ui = CutoutInspector(cands, ArrayStamps(np.zeros((2, 3, 8, 8)), ["a", "b"]),
    ...                      store=store, labeller="ann")
    >>> ui.current["candidate_id"], ui.label("bogus")["label"], ui.current["candidate_id"]
    ('b', 'bogus', 'a')
    """

    def __init__(
        self,
        candidates: pd.DataFrame,
        triplets_source: Any,
        *,
        store: LabelStore,
        labeller: str,
        context_source: Any = None,
        auto_advance: bool = True,
    ):
        if "candidate_id" not in candidates.columns:
            msg = "candidates need a 'candidate_id' column"
            raise ValueError(msg)
        if not callable(getattr(triplets_source, "triplet", None)):
            msg = "triplets_source must have a triplet(row) method"
            raise ValueError(msg)
        if context_source is not None and not callable(getattr(context_source, "context", None)):
            msg = "context_source must have a context(row) method"
            raise ValueError(msg)
        if not isinstance(store, LabelStore):
            msg = f"store must be a LabelStore, got {type(store).__name__}"
            raise ValueError(msg)
        if not str(labeller).strip():
            msg = "labeller must not be empty"
            raise ValueError(msg)
        frame = candidates.reset_index(drop=True).copy()
        frame["candidate_id"] = frame["candidate_id"].astype(str)
        if frame["candidate_id"].duplicated().any():
            msg = "candidate_id values must be unique"
            raise ValueError(msg)
        for name in ("score", "uncertainty", "drb"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce") if name in frame else np.nan
        if ((frame["score"] < 0) | (frame["score"] > 1)).any():
            msg = "candidate scores must lie in [0, 1]"
            raise ValueError(msg)
        frame["kind"] = frame["kind"].fillna("").astype(str) if "kind" in frame else ""
        frame["drb_disagreement"] = (frame["score"] - frame["drb"]).abs()
        super().__init__()
        self.candidates = frame
        self.source = triplets_source
        self.context_source = context_source
        self.store = store
        self.labeller = str(labeller).strip()
        self.auto_advance = auto_advance
        self._order: list[int] = []
        self._position = 0
        self._syncing = False
        self._build()
        self._update_view()
        self._refresh()

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        *,
        store: LabelStore,
        labeller: str,
        candidates: pd.DataFrame | None = None,
        size: int = 63,
    ) -> CutoutInspector:
        """Build an inspector over a manifest.

        Parameters
        ----------
        manifest : Manifest
            An alerts manifest (candidates default to one per sample, see
            :func:`astrid.labelling.candidates_from_manifest`) or an image
            manifest (then ``candidates`` with ``sample_id``, ``x``, ``y`` is
            needed, and "zoom to context" shows the full difference).
        store : LabelStore
            Where labels go.
        labeller : str
            Who is labelling.
        candidates : pandas.DataFrame, optional
            Candidate table.
        size : int
            Stamp side for image manifests.
        """
        source = ManifestStamps(manifest, size=size)
        if candidates is None:
            if manifest.kind != "ztf_alerts":
                msg = "an image manifest needs a candidates table (sample_id, x, y)"
                raise ValueError(msg)
            candidates = candidates_from_manifest(manifest)
        context = None if manifest.kind == "ztf_alerts" else source
        return cls(candidates, source, store=store, labeller=labeller, context_source=context)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        kinds = sorted({k for k in self.candidates["kind"] if k})
        self.kind_filter = widgets.Dropdown(options=[ALL_KINDS, *kinds], value=ALL_KINDS, description="kind")
        self.score_range = widgets.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01,
                                                    description="score", continuous_update=False)
        self.sort_menu = widgets.Dropdown(options=[(text, key) for key, text in SORT_KEYS.items()],
                                          value="queue", description="sort")
        self.prev_button = widgets.Button(description="◀ prev (p)")
        self.next_button = widgets.Button(description="next (n) ▶")
        self.position_text = widgets.HTML()
        self.header = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.context_button = widgets.ToggleButton(description="zoom to context (z)",
                                                   disabled=self.context_source is None)
        self.context_image = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self.info = widgets.HTML()
        styles = {"real": "success", "bogus": "danger", "ambiguous": "warning"}
        self.label_buttons = {
            label: widgets.Button(description=f"{label} ({label[0]})", button_style=styles[label])
            for label in LABELS
        }
        self.kind_menu = widgets.Dropdown(options=[("(no kind)", ""), *[(k, k) for k in CLASS_NAMES[1:]]],
                                          value="", description="kind")
        self.note_text = widgets.Text(placeholder="optional note", description="note")
        self.key_box = widgets.Text(placeholder="click here, type r b a n p z", description="keys",
                                    continuous_update=True)
        self.status = widgets.HTML()

        self.prev_button.on_click(lambda _button: self.prev())
        self.next_button.on_click(lambda _button: self.next())
        for label, button in self.label_buttons.items():
            button.on_click(lambda _button, chosen=label: self.label(chosen))
        self.kind_filter.observe(self._on_filter, names="value")
        self.score_range.observe(self._on_filter, names="value")
        self.sort_menu.observe(self._on_sort, names="value")
        self.context_button.observe(self._on_context, names="value")
        self.key_box.observe(self._on_keys, names="value")
        self.children = [
            self.header,
            widgets.HBox([self.kind_filter, self.score_range, self.sort_menu]),
            widgets.HBox([self.prev_button, self.position_text, self.next_button, self.context_button]),
            self.image,
            self.context_image,
            self.info,
            widgets.HBox(list(self.label_buttons.values())),
            widgets.HBox([self.kind_menu, self.note_text]),
            widgets.HBox([self.key_box, self.status]),
        ]

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Set widget values without their observers acting."""
        before, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = before

    # ------------------------------------------------------------------ state

    @property
    def view(self) -> pd.DataFrame:
        """The candidates that pass the filter, in the current sort order."""
        return self.candidates.loc[self._order]

    @property
    def position(self) -> int:
        """Index of the current candidate in :attr:`view`."""
        return self._position

    @property
    def current(self) -> pd.Series | None:
        """The current candidate's row, or None when nothing passes the filter."""
        if not self._order:
            return None
        return self.candidates.loc[self._order[self._position]]

    def _sorted(self, frame: pd.DataFrame) -> pd.DataFrame:
        key = self.sort_menu.value
        if key == "queue":
            queue = active_learning_queue(frame.assign(_row=frame.index), labels=self.store.load())
            return frame.loc[queue["_row"].to_numpy()]
        if key == "candidate_id":
            return frame.sort_values("candidate_id", kind="stable")
        column = key.lstrip("-")
        descending = key.startswith("-") or key == "drb_disagreement"
        return frame.sort_values(column, ascending=not descending, na_position="last", kind="stable")

    def _update_view(self) -> None:
        keep = self._order[self._position] if self._order else None
        frame = self.candidates
        mask = pd.Series(True, index=frame.index)
        if self.kind_filter.value != ALL_KINDS:
            mask &= frame["kind"] == self.kind_filter.value
        low, high = self.score_range.value
        mask &= frame["score"].isna() | frame["score"].between(low, high)
        self._order = list(self._sorted(frame[mask]).index)
        self._position = self._order.index(keep) if keep in self._order else 0

    # ------------------------------------------------------------------ actions

    def apply_filter(self, *, kind: str | None = None, score_range: tuple[float, float] | None = None) -> int:
        """Show only candidates of ``kind`` (``"(all)"`` for every kind) with score in ``score_range``.

        Candidates without a score always pass the score filter. Returns how many pass.

        Raises
        ------
        ValueError
            For a kind not offered or a range outside [0, 1].
        """
        if kind is not None and kind not in self.kind_filter.options:
            msg = f"kind must be one of {list(self.kind_filter.options)}, got {kind!r}"
            raise ValueError(msg)
        if score_range is not None:
            low, high = (float(v) for v in score_range)
            if not 0.0 <= low <= high <= 1.0:
                msg = f"score_range must satisfy 0 <= low <= high <= 1, got {score_range!r}"
                raise ValueError(msg)
        with self._quiet():
            if kind is not None:
                self.kind_filter.value = kind
            if score_range is not None:
                self.score_range.value = (low, high)
        self._update_view()
        self._refresh()
        return len(self._order)

    def sort_by(self, key: str) -> None:
        """Reorder the view by one of :data:`SORT_KEYS`, staying on the current candidate."""
        if key not in SORT_KEYS:
            msg = f"sort key must be one of {list(SORT_KEYS)}, got {key!r}"
            raise ValueError(msg)
        with self._quiet():
            self.sort_menu.value = key
        self._update_view()
        self._refresh()

    def goto(self, position: int) -> None:
        """Show the candidate at ``position`` of the view (clamped to the ends)."""
        if self._order:
            self._position = min(max(int(position), 0), len(self._order) - 1)
        self._refresh()

    def next(self) -> None:
        """Show the next candidate (stays on the last one)."""
        self.goto(self._position + 1)

    def prev(self) -> None:
        """Show the previous candidate (stays on the first one)."""
        self.goto(self._position - 1)

    def label(self, label: str, *, kind: str | None = None, note: str | None = None) -> dict[str, str] | None:
        """Store ``label`` for the current candidate, then move on when ``auto_advance``.

        Parameters
        ----------
        label : {"real", "bogus", "ambiguous"}
            The label.
        kind : str, optional
            Default: the kind menu's value.
        note : str, optional
            Default: the note box's text.

        Returns
        -------
        dict or None
            The stored row; None when no candidate is shown.

        Raises
        ------
        ValueError
            For an unknown label or kind.
        """
        if label not in LABELS:
            msg = f"label must be one of {LABELS}, got {label!r}"
            raise ValueError(msg)
        row = self.current
        if row is None:
            self._say("nothing to label: no candidate passes the filter")
            return None
        saved = self.store.add(row["candidate_id"], self.labeller, label,
                               kind=self.kind_menu.value if kind is None else kind,
                               note=self.note_text.value if note is None else note)
        with self._quiet():
            self.kind_menu.value = ""
            self.note_text.value = ""
        message = f"saved <b>{html.escape(label)}</b> for {html.escape(saved['candidate_id'])}"
        if self.auto_advance and self._position < len(self._order) - 1:
            self.next()
        else:
            self._refresh()
        self._say(message)
        return saved

    def handle_key(self, key: str) -> None:
        """Act on one shortcut key (see :data:`KEYS`); other keys only show a hint."""
        key = key.lower()
        if key in {"r", "b", "a"}:
            self.label({"r": "real", "b": "bogus", "a": "ambiguous"}[key])
        elif key == "n":
            self.next()
        elif key == "p":
            self.prev()
        elif key == "z":
            self.show_context(not self.context_button.value)
        elif key.strip():
            known = ", ".join(f"{k}={v}" for k, v in KEYS.items())
            self._say(f"unknown key {html.escape(key)!r}; keys: {known}")

    def show_context(self, on: bool = True) -> None:
        """Show (or hide) the full image around the current candidate."""
        if on and self.context_source is None:
            self._say("no context images for these candidates")
            on = False
        with self._quiet():
            self.context_button.value = bool(on)
        self.context_image.layout.display = None if on else "none"
        self._refresh()

    # ------------------------------------------------------------------ callbacks

    def _on_filter(self, _change: Mapping[str, Any]) -> None:
        if not self._syncing:
            self._update_view()
            self._refresh()

    def _on_sort(self, change: Mapping[str, Any]) -> None:
        if not self._syncing:
            self.sort_by(change["new"])

    def _on_context(self, change: Mapping[str, Any]) -> None:
        if not self._syncing:
            self.show_context(bool(change["new"]))

    def _on_keys(self, change: Mapping[str, Any]) -> None:
        if self._syncing or not change["new"]:
            return
        with self._quiet():
            self.key_box.value = ""
        for key in change["new"]:
            self.handle_key(key)

    # ------------------------------------------------------------------ drawing

    def _say(self, message: str) -> None:
        self.status.value = message

    def _refresh(self) -> None:
        total = len(self._order)
        self.position_text.value = f"&nbsp;{self._position + 1 if total else 0} / {total}&nbsp;"
        self.prev_button.disabled = self._position <= 0
        self.next_button.disabled = self._position >= total - 1
        row = self.current
        if row is None:
            self.header.value = "<b>no candidate passes the filter</b>"
            self.image.value = b""
            self.info.value = ""
            return
        name = html.escape(str(row["candidate_id"]))
        self.header.value = f"<b>{name}</b> &nbsp; labeller: {html.escape(self.labeller)}"
        figure = show_triplet(self.source.triplet(row), suptitle=str(row["candidate_id"]))
        self.image.value = figure_png(figure)
        self.info.value = self._info_html(row)
        if self.context_button.value and self.context_source is not None:
            found = self.context_source.context(row)
            self.context_image.value = b"" if found is None else figure_png(show_context(*found))

    def _info_html(self, row: pd.Series) -> str:
        cells = []
        for name in _INFO_FIELDS:
            if name in row.index and _present(row[name]) and row[name] != "":
                value = row[name]
                text = f"{value:.4g}" if isinstance(value, float) else str(value)
                cells.append(f"<td><b>{name}</b></td><td>{html.escape(text)}</td>")
        votes = self.store.labels_for(row["candidate_id"])
        if len(votes):
            given = ", ".join(f"{html.escape(r.labeller)}: {html.escape(r.label)}"
                              + (f" ({html.escape(r.kind)})" if r.kind else "") for r in votes.itertuples())
            cells.append(f"<td><b>labels</b></td><td>{given}</td>")
        rows = "".join(f"<tr>{''.join(cells[i:i + 3])}</tr>" for i in range(0, len(cells), 3))
        return f"<table style='font-size:90%'>{rows}</table>"

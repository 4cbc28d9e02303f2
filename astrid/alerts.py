"""Read ZTF alert packets and broker exports into cutout triplets and manifests.

A ZTF alert carries three gzipped FITS stamps centred on the candidate
(``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``, 63×63 pixels) and
the candidate's measurements. This module reads alerts from Avro container
files (every ZTF schema version: fields an old schema lacks come back as
``None``) and from broker exports of the same alerts in Parquet (candidate
fields either in a ``candidate`` struct or flattened into columns, stamps as
structs with ``stampData`` or as plain bytes).

Conventions
-----------
* A triplet is ``(3, 63, 63)`` float32 in the order science, reference,
  difference (:data:`STAMP_KEYS`).
* The difference is always **science minus reference**. ZTF stores
  reference minus science when ``isdiffpos`` is ``'f'``/``'0'``; those stamps are
  negated and ``diff_sign_flipped`` is recorded. When the stamp's own file name
  (``...scimref...`` / ``...refmsci...``) contradicts ``isdiffpos``, the alert is
  skipped rather than guessed.
* NaN policy: a stamp that is entirely NaN (or non-finite) is always skipped.
  Otherwise, when the largest NaN fraction of the three stamps is at most
  ``max_nan_fraction`` (default ``0.0``: any NaN skips the alert), the NaN
  pixels of each stamp are replaced by the median of that stamp's finite
  pixels and ``nan_fraction`` records the largest fraction replaced.
* Nothing raises halfway through a file: a corrupt or truncated file yields a
  :class:`Skipped` with its reason and ends that file; a bad record (a stamp
  that does not decode, is not 63×63, has too many NaN) yields a
  :class:`Skipped` and reading goes on.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrid.manifest import Manifest, assign_splits, prepare_output_dir, provenance, write_fits
from astrid.surveys import microjansky

__all__ = [
    "CANDIDATE_FIELDS",
    "META_COLUMNS",
    "SKIP_REASONS",
    "STAMP_KEYS",
    "STAMP_SIZE",
    "AlertError",
    "AlertTable",
    "AlertTriplet",
    "Skipped",
    "alert_files",
    "alerts_to_manifest",
    "candidate_fields",
    "diff_is_flipped",
    "difference_flux",
    "iter_alerts",
    "python_value",
    "read_alerts",
    "records_reader",
]

log = logging.getLogger(__name__)

STAMP_SIZE = 63
"""Side of a ZTF cutout in pixels."""

STAMP_KEYS: tuple[str, str, str] = ("science", "reference", "difference")
"""Triplet order, and the manifest keys of the three stamps."""

_CUTOUT_FIELDS = {"science": "cutoutScience", "reference": "cutoutTemplate", "difference": "cutoutDifference"}

CANDIDATE_FIELDS: tuple[str, ...] = (
    "jd", "fid", "ra", "dec", "rb", "drb", "isdiffpos", "magpsf", "sigmapsf", "fwhm",
    "ssdistnr", "ssmagnr", "ssnamenr", "distpsnr1", "sgscore1", "nbad", "classtar", "elong",
    "diffmaglim", "magnr", "distnr", "scorr", "chipsf", "ndethist", "ncovhist", "field", "rcid",
    "programid", "xpos", "ypos", "rbversion", "drbversion",
)  # fmt: skip
"""Candidate fields copied into the metadata (``None`` where the schema lacks them)."""

META_COLUMNS: tuple[str, ...] = (
    "candid", "objectId", *CANDIDATE_FIELDS, "schemavsn", "publisher", "n_prv_candidates",
    "n_prv_detections", "diff_sign_flipped", "nan_fraction", "source", "record",
)  # fmt: skip
"""Columns of :attr:`AlertTable.meta`, in order."""

SKIP_REASONS: dict[str, str] = {
    "unreadable_file": "not a readable Avro or Parquet file",
    "truncated_file": "file ends or breaks after some records; the records before are kept",
    "missing_field": "no candid, objectId or candidate",
    "missing_cutout": "a stamp is absent or empty",
    "corrupt_cutout": "a stamp does not decode as (gzipped) FITS with a 2-D image",
    "bad_shape": f"a stamp is not {STAMP_SIZE}x{STAMP_SIZE} (cut off at a chip edge)",
    "all_nan": "a stamp has no finite pixel",
    "too_many_nan": "more NaN pixels than max_nan_fraction allows",
    "bad_isdiffpos": "isdiffpos unknown, or contradicted by the difference stamp's name",
    "duplicate": "candid already read from an earlier record",
    "corrupt_record": "a field of unexpected type made the record undecodable",
}
"""Reason codes of :class:`Skipped` and what each means."""

_POSITIVE = {"t", "1", "true"}
_NEGATIVE = {"f", "0", "false"}
_AVRO_MAGIC = b"Obj\x01"
_PARQUET_MAGIC = b"PAR1"


class AlertError(ValueError):
    """An alert could not be read (raised only with ``on_error="raise"``)."""


@dataclass(frozen=True)
class Skipped:
    """An input record (or the rest of a file) that gave no triplet.

    Attributes
    ----------
    source : str
        File it came from.
    reason : str
        A key of :data:`SKIP_REASONS`.
    detail : str
        Human-readable specifics.
    candid : int or None
        Candidate id when known.
    record : int or None
        Index of the record in its file when known.
    """

    source: str
    reason: str
    detail: str
    candid: int | None = None
    record: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (for ``Manifest.skipped``)."""
        return {"source": self.source, "candid": self.candid, "record": self.record,
                "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class AlertTriplet:
    """One alert's stamps and metadata.

    Attributes
    ----------
    triplet : numpy.ndarray
        ``(3, 63, 63)`` float32: science, reference, difference (science minus reference).
    meta : dict
        One value per :data:`META_COLUMNS` name.
    """

    triplet: np.ndarray
    meta: dict[str, Any]

    @property
    def candid(self) -> int:
        """ZTF candidate id."""
        return int(self.meta["candid"])

    @property
    def object_id(self) -> str:
        """ZTF object id."""
        return str(self.meta["objectId"])


@dataclass
class AlertTable:
    """Alerts read from files: stamps, one metadata row per stamp triplet, and what was skipped.

    Attributes
    ----------
    triplets : numpy.ndarray
        ``(N, 3, 63, 63)`` float32, rows in the order of ``meta``.
    meta : pandas.DataFrame
        One row per alert, columns :data:`META_COLUMNS`.
    skipped : list of dict
        One ``dict(source, candid, record, reason, detail)`` per record or file not read.
    """

    triplets: np.ndarray
    meta: Any
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.triplets)

    def triplet(self, candid: int) -> np.ndarray:
        """Return the ``(3, 63, 63)`` stamps of candidate ``candid``."""
        rows = np.flatnonzero(self.meta["candid"].to_numpy() == int(candid))
        if rows.size == 0:
            msg = f"candid {candid} is not in this table"
            raise KeyError(msg)
        return self.triplets[rows[0]]

    def skipped_counts(self) -> dict[str, int]:
        """Return how many inputs were skipped for each reason."""
        return dict(sorted(Counter(s["reason"] for s in self.skipped).items()))


# --------------------------------------------------------------------------- low level


def python_value(value: Any) -> Any:
    """Return a field read from Avro or Parquet as plain Python.

    Numpy scalars are unwrapped, bytes decoded (UTF-8) and NaN becomes None.

    Examples
    --------
    >>> python_value(np.float32(2.5)), python_value(b"t"), python_value(float("nan"))
    (2.5, 't', None)
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def candidate_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return an alert's candidate fields: its ``candidate`` struct, or the columns flattened into the row.

    Broker exports in Parquet flatten the struct into ``candidate.<name>`` or
    ``candidate_<name>`` columns; the prefix is dropped (a flattened name wins
    over a top-level column of the same name).

    Examples
    --------
    >>> candidate_fields({"candid": 1, "candidate": {"jd": 2.0}})
    {'jd': 2.0}
    >>> candidate_fields({"candid": 1, "candidate.jd": 2.0})
    {'candid': 1, 'jd': 2.0}
    """
    nested = record.get("candidate")
    if isinstance(nested, Mapping):
        return dict(nested)
    flat: dict[str, Any] = {}
    for key, value in record.items():
        for prefix in ("candidate.", "candidate_"):
            if key.startswith(prefix):
                flat[key[len(prefix):]] = value
                break
        else:
            flat.setdefault(key, value)
    return flat


def _cutout_of(record: Mapping[str, Any], key: str) -> tuple[bytes | None, str | None]:
    """Stamp bytes and stamp file name of ``key`` in any of the layouts brokers use."""
    name = _CUTOUT_FIELDS[key]
    value = record.get(name)
    if value is None:
        value = record.get(f"{name}.stampData", record.get(f"{name}_stampData"))
        file_name = record.get(f"{name}.fileName", record.get(f"{name}_fileName"))
    elif isinstance(value, Mapping):
        value, file_name = value.get("stampData"), value.get("fileName")
    else:
        file_name = None
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    return (value if isinstance(value, bytes) and value else None), python_value(file_name)


def _decode_stamp(data: bytes) -> np.ndarray:
    """Decode (gzipped) FITS bytes into a native float32 2-D array.

    Raises
    ------
    ValueError
        When the bytes are not FITS with a 2-D image.
    """
    from astropy.io import fits

    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        with warnings.catch_warnings():
            # Some real stamps carry a non-standard SIMPLE card; the pixels are fine.
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                for hdu in hdul:
                    if hdu.data is not None and np.ndim(hdu.data) == 2:
                        return np.array(hdu.data, dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - damaged bytes may fail in gzip, zlib or astropy alike
        msg = f"{type(err).__name__}: {err}"
        raise ValueError(msg) from err
    msg = "no 2-D image HDU"
    raise ValueError(msg)


def diff_is_flipped(isdiffpos: Any) -> bool | None:
    """Return whether ZTF's ``isdiffpos`` marks a reference-minus-science difference.

    Returns
    -------
    bool or None
        True for ``'f'``/``'0'``/``'false'`` (reference minus science: the
        candidate faded), False for ``'t'``/``'1'``/``'true'``, None when the
        value is missing or unknown.

    Examples
    --------
    >>> diff_is_flipped("t"), diff_is_flipped(b"f"), diff_is_flipped(None)
    (False, True, None)
    """
    value = python_value(isdiffpos)
    text = str(value).strip().lower() if value is not None else ""
    if text in _POSITIVE:
        return False
    if text in _NEGATIVE:
        return True
    return None


def difference_flux(entry: Mapping[str, Any]) -> tuple[float, float]:
    """Signed difference flux and its error, in microjansky, of one alert or history detection.

    ``magpsf`` and ``sigmapsf`` give the size and error, ``isdiffpos`` the sign
    (negative where the source faded against the reference).

    Returns
    -------
    (float, float)
        Flux and error; both ``nan`` without a ``magpsf`` or a known sign, the
        error ``nan`` without a ``sigmapsf``.

    Examples
    --------
    >>> flux, error = difference_flux({"magpsf": 23.9, "sigmapsf": 0.1, "isdiffpos": "f"})
    >>> round(flux, 3), round(error, 4)
    (-1.0, 0.0921)
    >>> difference_flux({"diffmaglim": 20.5})
    (nan, nan)
    """
    mag, sigma = python_value(entry.get("magpsf")), python_value(entry.get("sigmapsf"))
    flipped = diff_is_flipped(entry.get("isdiffpos"))
    if mag is None or flipped is None:
        return math.nan, math.nan
    size = microjansky(mag)
    error = size * float(sigma) * math.log(10.0) / 2.5 if sigma is not None else math.nan
    return (-size if flipped else size), error


def _decode_record(
    record: Mapping[str, Any], *, source: str, index: int, max_nan_fraction: float
) -> AlertTriplet | Skipped:
    """Turn one alert record into a triplet, or say why not. Never raises on bad data."""
    candidate = candidate_fields(record)
    candid = python_value(record.get("candid", candidate.get("candid")))
    object_id = python_value(record.get("objectId"))

    def skip(reason: str, detail: str) -> Skipped:
        return Skipped(source, reason, detail, candid=candid, record=index)

    if candid is None or object_id is None or not candidate:
        return skip("missing_field", "record lacks candid, objectId or candidate fields")
    try:
        candid = int(candid)
    except (TypeError, ValueError):
        return skip("missing_field", f"candid {candid!r} is not an integer")
    flipped = diff_is_flipped(candidate.get("isdiffpos"))
    if flipped is None:
        return skip("bad_isdiffpos", f"isdiffpos={candidate.get('isdiffpos')!r} is not t/f/1/0")

    stamps = []
    for key in STAMP_KEYS:
        data, file_name = _cutout_of(record, key)
        if data is None:
            return skip("missing_cutout", f"no {_CUTOUT_FIELDS[key]} stamp data")
        try:
            stamp = _decode_stamp(data)
        except ValueError as err:
            return skip("corrupt_cutout", f"{_CUTOUT_FIELDS[key]}: {err}")
        if stamp.shape != (STAMP_SIZE, STAMP_SIZE):
            shape = "x".join(map(str, stamp.shape))
            return skip("bad_shape", f"{_CUTOUT_FIELDS[key]} is {shape}, not {STAMP_SIZE}x{STAMP_SIZE}")
        if key == "difference" and file_name:
            stored = "refmsci" if "refmsci" in file_name else "scimref" if "scimref" in file_name else None
            if stored is not None and (stored == "refmsci") != flipped:
                return skip("bad_isdiffpos", f"isdiffpos={candidate.get('isdiffpos')!r} but the "
                                             f"difference stamp is {file_name!r}")
        stamps.append(stamp)

    fractions = []
    for key, stamp in zip(STAMP_KEYS, stamps, strict=True):
        bad = ~np.isfinite(stamp)
        fraction = float(bad.mean())
        if fraction == 1.0:
            return skip("all_nan", f"{key} stamp has no finite pixel")
        fractions.append(fraction)
    nan_fraction = max(fractions)
    if nan_fraction > max_nan_fraction:
        return skip("too_many_nan", f"NaN fraction {nan_fraction:.4f} > max_nan_fraction {max_nan_fraction}")
    for stamp in stamps:
        bad = ~np.isfinite(stamp)
        if bad.any():
            stamp[bad] = np.median(stamp[~bad])
    triplet = np.stack(stamps).astype(np.float32, copy=False)
    if flipped:
        triplet[2] = -triplet[2]

    prv = record.get("prv_candidates")
    prv_list = list(prv) if isinstance(prv, Iterable) and not isinstance(prv, str | bytes) else []
    meta: dict[str, Any] = {"candid": candid, "objectId": str(object_id)}
    meta.update({name: python_value(candidate.get(name)) for name in CANDIDATE_FIELDS})
    meta.update(
        schemavsn=python_value(record.get("schemavsn")),
        publisher=python_value(record.get("publisher")),
        n_prv_candidates=len(prv_list) if "prv_candidates" in record else None,
        n_prv_detections=sum(1 for p in prv_list if isinstance(p, Mapping) and p.get("candid") is not None)
        if "prv_candidates" in record else None,
        diff_sign_flipped=bool(flipped),
        nan_fraction=nan_fraction,
        source=source,
        record=index,
    )
    return AlertTriplet(triplet=triplet, meta=meta)


def _avro_records(path: Path) -> Iterator[Mapping[str, Any]]:
    import fastavro

    with open(path, "rb") as handle:
        yield from fastavro.reader(handle)


def _parquet_records(path: Path) -> Iterator[Mapping[str, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=256):
        yield from batch.to_pylist()


def records_reader(path: Path) -> Callable[[Path], Iterator[Mapping[str, Any]]] | None:
    """Return the record iterator for an alert file by its magic bytes (Avro or Parquet), None for neither.

    The iterator yields one mapping per alert and raises whatever fastavro or
    pyarrow raise on a damaged file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.avro"
    >>> _ = path.write_bytes(b"not an alert")
    >>> records_reader(path) is None
    True
    """
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == _AVRO_MAGIC:
        return _avro_records
    if magic == _PARQUET_MAGIC:
        return _parquet_records
    return None


# --------------------------------------------------------------------------- public readers


def _check_nan_fraction(max_nan_fraction: float) -> float:
    value = float(max_nan_fraction)
    if not 0.0 <= value < 1.0:
        msg = f"max_nan_fraction must be in [0, 1), got {max_nan_fraction!r}"
        raise ValueError(msg)
    return value


def iter_alerts(
    path: str | os.PathLike, *, max_nan_fraction: float = 0.0
) -> Iterator[AlertTriplet | Skipped]:
    r"""Yield every alert of one Avro or Parquet file as a triplet or a skip record.

    The format is recognised from the file's first bytes (``Obj\\x01`` Avro,
    ``PAR1`` Parquet), not its name. Reading never raises on bad data: a file
    that cannot be opened or breaks off yields one :class:`Skipped` (reason
    ``unreadable_file`` or ``truncated_file``) after the records read so far,
    and ends.

    Parameters
    ----------
    path : path-like
        One alert file.
    max_nan_fraction : float
        Largest fraction of NaN pixels allowed in any stamp; such pixels are
        replaced by the stamp's median. ``0.0`` skips any alert with a NaN.

    Yields
    ------
    AlertTriplet or Skipped

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a file (raised at the call, before iterating).
    ValueError
        When ``max_nan_fraction`` is outside ``[0, 1)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "x.avro"; _ = bad.write_bytes(b"junk")
    >>> [s.reason for s in iter_alerts(bad)]
    ['unreadable_file']
    """
    limit = _check_nan_fraction(max_nan_fraction)
    path = Path(path)
    if not path.is_file():
        msg = f"alert file not found: {path}"
        raise FileNotFoundError(msg)
    return _iter_file(path, limit)


def _iter_file(path: Path, max_nan_fraction: float) -> Iterator[AlertTriplet | Skipped]:
    source = str(path)
    reader = records_reader(path)
    if reader is None:
        yield Skipped(source, "unreadable_file", "neither Avro nor Parquet (unknown magic bytes)")
        return
    records = reader(path)
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - fastavro/pyarrow raise many types on damaged files
            reason = "truncated_file" if index else "unreadable_file"
            detail = f"after {index} record(s): {type(err).__name__}: {err}"
            yield Skipped(source, reason, detail, record=index)
            return
        if not isinstance(record, Mapping):
            yield Skipped(source, "missing_field", "record is not a mapping", record=index)
        else:
            try:
                item = _decode_record(record, source=source, index=index, max_nan_fraction=max_nan_fraction)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError) as err:
                item = Skipped(source, "corrupt_record", f"{type(err).__name__}: {err}", record=index)
            yield item
        index += 1


def alert_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Return the alert files named by ``paths``: files as given, folders searched recursively.

    Folders contribute their ``*.avro``, ``*.parquet``, ``*.parq`` and ``*.pq``
    files in sorted order.

    Raises
    ------
    FileNotFoundError
        When a path does not exist.
    ValueError
        When ``paths`` is empty or no alert file is found.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "b.avro").write_bytes(b""), (folder / "a.parquet").write_bytes(b"")
    >>> [p.name for p in alert_files(folder)]
    ['a.parquet', 'b.avro']
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        msg = "paths is empty: give alert files or folders"
        raise ValueError(msg)
    files: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = [p for p in item.rglob("*") if p.is_file() and p.suffix.lower()
                     in {".avro", ".parquet", ".parq", ".pq"}]
            files.extend(sorted(found))
        elif item.is_file():
            files.append(item)
        else:
            msg = f"alert path not found: {item}"
            raise FileNotFoundError(msg)
    if not files:
        msg = f"no *.avro or *.parquet files under {', '.join(map(str, items))}"
        raise ValueError(msg)
    return files


def read_alerts(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    on_error: str = "skip",
    max_nan_fraction: float = 0.0,
    max_alerts: int | None = None,
) -> AlertTable:
    """Read alerts from files and folders (recursively: ``*.avro``, ``*.parquet``).

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Alert files and/or folders.
    on_error : {"skip", "raise"}
        ``"skip"`` records every bad record or file in ``skipped``; ``"raise"``
        raises :class:`AlertError` at the first one.
    max_nan_fraction : float
        See :func:`iter_alerts`.
    max_alerts : int, optional
        Stop after this many triplets (files are read in sorted order).

    Returns
    -------
    AlertTable
        Triplets, metadata and skips. A candid already read is skipped as ``duplicate``.

    Raises
    ------
    FileNotFoundError
        When a path does not exist.
    ValueError
        For bad options or when no alert file is found.
    AlertError
        With ``on_error="raise"``, at the first unreadable record.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()); _ = (folder / "bad.avro").write_bytes(b"junk")
    >>> table = read_alerts(folder)
    >>> len(table), table.skipped_counts()
    (0, {'unreadable_file': 1})
    """
    if on_error not in {"skip", "raise"}:
        msg = f"on_error must be 'skip' or 'raise', got {on_error!r}"
        raise ValueError(msg)
    if max_alerts is not None and int(max_alerts) < 1:
        msg = f"max_alerts must be a positive integer or None, got {max_alerts!r}"
        raise ValueError(msg)
    limit = _check_nan_fraction(max_nan_fraction)
    import pandas as pd

    triplets: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for path in alert_files(paths):
        if max_alerts is not None and len(triplets) >= max_alerts:
            break
        for item in iter_alerts(path, max_nan_fraction=limit):
            if isinstance(item, AlertTriplet) and item.candid in seen:
                item = Skipped(item.meta["source"], "duplicate", f"first read from {seen[item.candid]}",
                               candid=item.candid, record=item.meta["record"])
            if isinstance(item, Skipped):
                if on_error == "raise":
                    msg = f"{item.source}: {item.reason}: {item.detail}"
                    raise AlertError(msg)
                log.info("skipped %s record %s: %s", item.source, item.record, item.detail)
                skipped.append(item.as_dict())
                continue
            seen[item.candid] = item.meta["source"]
            triplets.append(item.triplet)
            rows.append(item.meta)
            if max_alerts is not None and len(triplets) >= max_alerts:
                break
    stack = np.stack(triplets) if triplets else np.empty((0, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    meta = pd.DataFrame(rows, columns=list(META_COLUMNS))
    return AlertTable(triplets=stack, meta=meta, skipped=skipped)


# --------------------------------------------------------------------------- manifest


def _object_key(object_id: str) -> int:
    """Return a stable integer for an object id (for :func:`astrid.manifest.assign_splits`)."""
    return int(hashlib.sha256(object_id.encode()).hexdigest()[:15], 16)


def _relative_source(source: str, data_root: Path | None) -> str:
    path = Path(source).resolve()
    if data_root is not None:
        try:
            return path.relative_to(data_root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    for parent in reversed(path.parents):  # the outermost ztf_alerts/ (repositories nest their own)
        if parent.name == "ztf_alerts":
            return path.relative_to(parent.parent).as_posix()
    return path.name


def _json_safe(value: Any) -> Any:
    value = python_value(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


def alerts_to_manifest(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    labels_csv: str | os.PathLike | None = None,
    name: str = "ztf_alerts",
    overwrite: bool = False,
    max_nan_fraction: float = 0.0,
    max_alerts: int | None = None,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
) -> Manifest:
    """Read alerts and write them as a dataset: one FITS file per stamp plus ``manifest.json``.

    Each alert becomes one sample with id ``<objectId>_<candid>`` and the
    products ``science``, ``reference`` and ``difference`` (63×63 float32
    FITS under ``stamps/``; the difference is science minus reference). Every
    sample also holds the alert metadata (:data:`META_COLUMNS`, minus
    ``source``/``record``), ``survey="ztf"``, ``band``, ``mjd``,
    ``source_file`` (relative to the shared data folder, i.e. the parent of
    ``ztf_alerts/``, or to ``data_root``), ``label_asteroid`` (1 when
    0 <= ``ssdistnr`` <= 1 arcsec), ``drb_label`` (1 if ``drb`` > 0.5, 0 if
    <= 0.5, None without ``drb``) and ``label_tns_class`` (from ``labels_csv``,
    None otherwise). Splits are drawn per object (``split_group`` =
    ``objectId``), so no object spans two splits. Skipped inputs are listed in
    ``manifest.skipped`` and counted per reason in ``manifest.info``.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        Alert files and/or folders.
    output_dir : path-like
        New (or empty) dataset folder.
    labels_csv : path-like, optional
        The shared ``labels.csv`` (columns ``candid``, ``label_tns_class``, ...).
    name : str
        Dataset name.
    overwrite : bool
        Empty a non-empty ``output_dir`` first.
    max_nan_fraction : float
        See :func:`iter_alerts`.
    max_alerts : int, optional
        Keep at most this many alerts.
    seed : int
        Seed of the split assignment.
    data_root : path-like, optional
        Folder that ``source_file`` is relative to.

    Returns
    -------
    Manifest
        The saved manifest (``kind="ztf_alerts"``).

    Raises
    ------
    FileExistsError
        When ``output_dir`` is not empty and ``overwrite`` is false.
    ValueError
        When ``labels_csv`` has no ``candid`` column, or as :func:`read_alerts`.
    """
    import pandas as pd

    tns: dict[int, tuple[str | None, str | None]] = {}
    if labels_csv is not None:
        labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
        if "candid" not in labels.columns:
            msg = f"labels_csv {labels_csv} has no 'candid' column"
            raise ValueError(msg)
        blank = pd.Series([""] * len(labels), index=labels.index)
        for candid, tns_class, tns_source in zip(
            labels["candid"], labels.get("label_tns_class", blank), labels.get("label_tns_source", blank),
            strict=True,
        ):
            tns[int(candid)] = (tns_class or None, tns_source or None)
    table = read_alerts(paths, max_nan_fraction=max_nan_fraction, max_alerts=max_alerts)
    root = prepare_output_dir(output_dir, overwrite=overwrite)
    root_data = Path(data_root) if data_root is not None else None
    inputs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    manifest = Manifest(
        root=root,
        name=name,
        kind="ztf_alerts",
        generator={
            "function": "astrid.alerts.alerts_to_manifest",
            "inputs": [_relative_source(str(p), root_data) for p in inputs],
            "labels_csv": _relative_source(str(labels_csv), root_data) if labels_csv else None,
            "max_nan_fraction": float(max_nan_fraction),
            "max_alerts": max_alerts,
            "seed": seed,
        },
        info={
            **provenance(),
            "layout": "one 63x63 float32 FITS per stamp: stamps/<id>_{science,reference,difference}.fits",
            "difference_sign": "science minus reference (negated where isdiffpos is f/0)",
            "nan_policy": f"NaN pixels replaced by the stamp median when the largest fraction "
                          f"<= {max_nan_fraction}; otherwise skipped",
        },
    )
    objects = sorted(set(table.meta["objectId"]))
    by_key = assign_splits([_object_key(o) for o in objects], seed=seed)
    split_of = {o: by_key[_object_key(o)] for o in objects}
    for stamps, meta in zip(table.triplets, table.meta.to_dict("records"), strict=True):
        meta = {k: _json_safe(v) for k, v in meta.items()}
        candid, object_id = int(meta["candid"]), str(meta["objectId"])
        sample_id = f"{object_id}_{candid}"
        ssdist, drb, jd = meta["ssdistnr"], meta["drb"], meta["jd"]
        tns_class, tns_source = tns.get(candid, (None, None))
        sample: dict[str, Any] = {
            "id": sample_id,
            "split": split_of[object_id],
            "split_group": object_id,
            "survey": "ztf",
            "band": {1: "g", 2: "r", 3: "i"}.get(meta["fid"]),
            "mjd": jd - 2400000.5 if jd is not None else None,
            **{k: v for k, v in meta.items() if k not in {"source", "record"}},
            "source_file": _relative_source(meta["source"], root_data),
            "source_record": meta["record"],
            "label_asteroid": int(ssdist is not None and 0.0 <= ssdist <= 1.0),
            "drb_label": None if drb is None else int(drb > 0.5),
            "label_tns_class": tns_class,
            "label_tns_source": tns_source,
        }
        header = {"CANDID": candid, "OBJECTID": object_id, "ISDIFPOS": str(meta["isdiffpos"]),
                  "DIFFSIGN": ("SCI-REF", "difference is science minus reference"),
                  "FLIPPED": (bool(meta["diff_sign_flipped"]), "stored difference was negated"),
                  "NANFRAC": (float(meta["nan_fraction"]), "largest NaN fraction replaced by median")}
        if jd is not None:
            header["JD"] = jd
        for key, stamp in zip(STAMP_KEYS, stamps, strict=True):
            rel = f"stamps/{sample_id}_{key}.fits"
            manifest.files[rel] = write_fits(root / rel, stamp, {**header, "STAMP": key})
            sample[key] = rel
        manifest.samples.append(sample)
    manifest.skipped = [{**s, "source": _relative_source(s["source"], root_data)} for s in table.skipped]
    manifest.info["n_alerts"] = len(manifest.samples)
    manifest.info["n_objects"] = len(objects)
    manifest.info["skipped_counts"] = table.skipped_counts()
    manifest.save()
    return manifest

"""Dataset manifests, FITS I/O, hashes, splits and atomic writes.

A dataset is a folder of files plus ``manifest.json``. The manifest is the only
thing passed between phases: each phase reads it, adds its products (files next
to the samples, fields on each entry, their sha256) and writes it back
atomically. Paths inside a manifest are relative to its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from astrid import __version__

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "assign_splits",
    "atomic_write",
    "git_commit",
    "prepare_output_dir",
    "provenance",
    "read_fits",
    "sha256_file",
    "write_fits",
]

MANIFEST_NAME = "manifest.json"
SCHEMA = "astrid.dataset/1"
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest or one of its files is missing, malformed or inconsistent."""


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file's bytes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"")
    >>> sha256_file(p)[:8]
    'e3b0c442'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class atomic_write:  # noqa: N801 - used like open()
    """Context manager that writes to a temporary file and renames it into place.

    A crash halfway leaves the old file (or no file), never a partial one.

    Parameters
    ----------
    path : path-like
        Final file path.
    mode : str
        ``"w"`` (text) or ``"wb"`` (bytes).
    overwrite : bool
        Replace an existing file; otherwise an existing file raises ``FileExistsError``.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w", *, overwrite: bool = False):
        if mode not in {"w", "wb"}:
            msg = f"atomic_write mode must be 'w' or 'wb', got {mode!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.mode = mode
        self.overwrite = overwrite

    def __enter__(self):
        if self.path.exists() and not self.overwrite:
            msg = f"{self.path} exists; pass overwrite=True to replace it"
            raise FileExistsError(msg)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._handle = os.fdopen(fd, self.mode)
        return self._handle

    def __exit__(self, exc_type, exc, tb) -> None:
        self._handle.close()
        if exc_type is None:
            os.chmod(self._tmp, 0o644)  # mkstemp makes 0600 files; datasets are shared read-only
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_fits(
    path: str | os.PathLike,
    data: np.ndarray,
    header: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Write one image as a FITS primary HDU atomically and return its sha256.

    The bytes depend only on ``data`` and ``header`` (no dates are added), so
    the same inputs give byte-identical files.

    Parameters
    ----------
    path : path-like
        Destination file.
    data : numpy.ndarray
        Image (2-D) or stack.
    header : dict, optional
        Keyword -> value, or keyword -> (value, comment); an
        :class:`astropy.io.fits.Header` works too.
    overwrite : bool
        Replace an existing file.
    """
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(data))
    if header is not None:
        items = header.items() if hasattr(header, "items") else header
        for key, value in items:
            hdu.header[key] = value
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        hdu.writeto(handle)
    return sha256_file(path)


def read_fits(path: str | os.PathLike, *, dtype: Any = None) -> tuple[np.ndarray, Any]:
    """Read the first image HDU of a FITS file.

    Returns
    -------
    data : numpy.ndarray
        The image, native byte order, as ``dtype`` when given.
    header : astropy.io.fits.Header
        Its header.

    Raises
    ------
    FileNotFoundError
        When the file is missing.
    ManifestError
        When the file is not readable FITS or holds no image.
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    path = Path(path)
    if not path.is_file():
        msg = f"FITS file not found: {path}"
        raise FileNotFoundError(msg)
    try:
        with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
            warnings.simplefilter("ignore", AstropyWarning)
            hdul.verify("exception")
            for hdu in hdul:
                if hdu.data is not None and hdu.data.ndim >= 2:
                    data = np.asarray(hdu.data)
                    data = data.astype(dtype or data.dtype.newbyteorder("="), copy=True)
                    return data, hdu.header.copy()
    except (OSError, ValueError, TypeError, fits.VerifyError) as err:
        msg = f"corrupt or unreadable FITS file {path}: {err}"
        raise ManifestError(msg) from err
    msg = f"FITS file {path} holds no image HDU"
    raise ManifestError(msg)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """Return the current git commit (with ``+dirty`` when modified), or ``"unknown"``."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def provenance() -> dict[str, str]:
    """Return the package version, git commit and UTC time for records."""
    return {
        "astrid_version": __version__,
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Create ``path`` as an empty folder, refusing to reuse a non-empty one.

    Raises
    ------
    FileExistsError
        If ``path`` exists and is not empty, unless ``overwrite`` (then it is emptied).
    """
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            msg = f"output folder {out} exists and is not empty; choose another or pass overwrite"
            raise FileExistsError(msg)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def assign_splits(
    fields: Iterable[int],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[int, str]:
    """Assign whole fields to train/val/test so that no field spans two splits.

    Every split with a positive fraction gets at least one field when there are
    at least three fields.

    Examples
    --------
    >>> s = assign_splits(range(10), seed=1)
    >>> sorted(set(s.values()))
    ['test', 'train', 'val']
    """
    ids = sorted(set(int(f) for f in fields))
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        msg = f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        raise ValueError(msg)
    order = np.random.default_rng(seed).permutation(len(ids))
    counts = np.floor(frac * len(ids)).astype(int)
    if len(ids) >= 3:
        counts = np.maximum(counts, (frac > 0).astype(int))
    counts[0] = len(ids) - counts[1:].sum()
    labels = np.repeat(np.array(SPLITS), counts)
    return {ids[i]: str(labels[k]) for k, i in enumerate(order)}


@dataclass
class Manifest:
    """A dataset: its folder, how it was made, its samples and file hashes.

    Attributes
    ----------
    root : Path
        Folder holding ``manifest.json``; sample paths are relative to it.
    name : str
        Dataset name.
    kind : str
        ``"synthetic"`` or ``"ztf_alerts"`` and so on.
    generator : dict
        How it was made: function, preset, parameters, seed.
    samples : list of dict
        One entry per sample with at least ``id`` and ``split``.
    files : dict
        Relative path -> sha256 of every file the manifest references.
    skipped : list of dict
        Inputs that were not turned into samples, each with a ``reason``.
    info : dict
        Provenance (version, git commit, creation time) and free-form notes.
    """

    root: Path
    name: str
    kind: str = "synthetic"
    generator: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """Location of ``manifest.json``."""
        return self.root / MANIFEST_NAME

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.samples)

    def split(self, name: str) -> list[dict[str, Any]]:
        """Return the samples of one split (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            msg = f"split must be one of {SPLITS}, got {name!r}"
            raise ValueError(msg)
        return [s for s in self.samples if s.get("split") == name]

    def sample(self, sample_id: str) -> dict[str, Any]:
        """Return the sample with ``id == sample_id``."""
        for entry in self.samples:
            if entry["id"] == sample_id:
                return entry
        msg = f"no sample {sample_id!r} in manifest {self.path}"
        raise KeyError(msg)

    def file(self, sample: dict[str, Any], key: str) -> Path:
        """Absolute path of product ``key`` of ``sample``.

        Raises
        ------
        ManifestError
            When the sample has no such product.
        """
        if key not in sample:
            msg = f"sample {sample.get('id')!r} has no {key!r} product in {self.path}"
            raise ManifestError(msg)
        return self.root / sample[key]

    def read(self, sample: dict[str, Any], key: str, *, dtype: Any = None) -> np.ndarray:
        """Read product ``key`` (FITS) of ``sample`` as an array."""
        return read_fits(self.file(sample, key), dtype=dtype)[0]

    def record_file(self, relpath: str | os.PathLike) -> str:
        """Hash a file under ``root`` and record it; returns the sha256."""
        rel = Path(relpath).as_posix()
        digest = sha256_file(self.root / rel)
        self.files[rel] = digest
        return digest

    def add_product(self, sample: dict[str, Any], key: str, relpath: str | os.PathLike) -> None:
        """Attach a file written under ``root`` to ``sample`` as product ``key``."""
        rel = Path(relpath).as_posix()
        sample[key] = rel
        self.record_file(rel)

    def verify(self) -> list[str]:
        """Return problems found: missing files and sha256 mismatches (empty when all is well)."""
        problems = []
        for rel, digest in sorted(self.files.items()):
            target = self.root / rel
            if not target.is_file():
                problems.append(f"missing: {rel}")
            elif sha256_file(target) != digest:
                problems.append(f"sha256 mismatch: {rel}")
        return problems

    def content_hash(self) -> str:
        """Return a short hash identifying the dataset's content (samples and file hashes)."""
        payload = json.dumps({"samples": self.samples, "files": self.files}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable form (without ``root``)."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "kind": self.kind,
            "info": self.info,
            "generator": self.generator,
            "samples": self.samples,
            "skipped": self.skipped,
            "files": dict(sorted(self.files.items())),
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the manifest atomically (replacing the previous version of itself)."""
        target = Path(path) if path else self.path
        with atomic_write(target, "w", overwrite=True) as handle:
            json.dump(self.to_dict(), handle, indent=1, default=_json_default)
            handle.write("\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest from ``path`` (a ``manifest.json`` or the folder holding one).

        Raises
        ------
        FileNotFoundError
            When there is no manifest there.
        ManifestError
            When it is not a valid AstrID manifest.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            msg = f"no dataset manifest at {path}"
            raise FileNotFoundError(msg)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            msg = f"manifest {path} is not valid JSON: {err}"
            raise ManifestError(msg) from err
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            msg = f"{path} is not an AstrID dataset manifest (schema {SCHEMA!r} expected)"
            raise ManifestError(msg)
        samples = raw.get("samples", [])
        if any("id" not in s or "split" not in s for s in samples):
            msg = f"manifest {path}: every sample needs an 'id' and a 'split'"
            raise ManifestError(msg)
        return cls(
            root=path.parent,
            name=raw.get("name", path.parent.name),
            kind=raw.get("kind", "synthetic"),
            generator=raw.get("generator", {}),
            samples=samples,
            files=raw.get("files", {}),
            skipped=raw.get("skipped", []),
            info=raw.get("info", {}),
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return value.as_posix()
    msg = f"cannot store {type(value).__name__} in a manifest"
    raise TypeError(msg)

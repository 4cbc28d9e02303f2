"""Synthetic datasets on disk: FITS files, truth catalogues and a manifest.

Fields are simulated and written one per task (memory stays flat), in this
process or on a Dask cluster (:mod:`astrid.cluster`). Every field draws its
randomness from ``SeedSequence(seed).spawn(n_fields)[field]``, so the same
survey, parameters and seed give byte-identical files wherever they run, and
:func:`regenerate` can rebuild a dataset from its manifest alone and check
every file's sha256.

While a dataset is being made, ``manifest.partial.json`` records the fields
finished so far (with their hashes); ``manifest.json`` appears only when every
field is written. ``resume=True`` finishes an interrupted dataset: fields whose
files match the recorded hashes are kept, the others are made again.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from astrid.classes import ARTIFACT_KINDS, CLASS_NAMES, TRANSIENT_KINDS
from astrid.cluster import map_items
from astrid.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    assign_splits,
    atomic_write,
    prepare_output_dir,
    provenance,
    sha256_file,
    write_fits,
)
from astrid.simulate.field import (
    SimulatedField,
    SimulatedReference,
    check_parameters,
    simulate_field,
)
from astrid.surveys import BandParameters, SurveyPreset, get_survey

__all__ = [
    "DATASETS",
    "GENERATOR",
    "RegenerationError",
    "generate_dataset",
    "generate_named",
    "object_counts",
    "regenerate",
    "write_field",
]

log = logging.getLogger(__name__)

GENERATOR = "astrid.simulate.generate_dataset"
"""The ``generator.function`` recorded in manifests written here."""

PARTIAL_NAME = "manifest.partial.json"
"""The manifest of the fields finished so far, while a dataset is being made."""

_TRAINING_MIX: dict[str, Any] = {
    "n_supernovae": [1, 3],
    "n_variables": [1, 3],
    "n_moving": [0, 2],
    "n_cosmic_rays": [2, 8],
    "n_hot_pixels": [2, 8],
    "n_satellites": [0, 1],
    "n_bad_columns": [0, 1],
    "n_saturated": [0, 1],
}

DATASETS: dict[str, dict[str, Any]] = {
    # A few seconds: unit tests, nbval and the demo inputs of every notebook.
    "tiny": {
        "survey": "ztf",
        "seed": 0,
        "params": {"n_fields": 6, "n_epochs": 2, "image_size": 64, "n_cosmic_rays": 2,
                   "n_hot_pixels": 2},
    },
    # The quick study: 48 fields x 3 epochs = 144 labelled pairs of 256 px (~10 s to make).
    "quick": {
        "survey": "ztf",
        "seed": 1,
        "params": {"n_fields": 48, "n_epochs": 3, "image_size": 256, **_TRAINING_MIX},
    },
    # The full study, survey-like: g, r, i cycling, two visits a night 30-60 min
    # apart (ZTF's pairs), 4 nights, hot pixels fixed on the detector, 4-8
    # variables per field, so that colour and temporal context exist; 150 fields x
    # 8 epochs = 1200 labelled pairs of 256 px (~1 GB), 30 % of the fields for testing.
    "full": {
        "survey": "ztf",
        "seed": 2,
        "params": {"n_fields": 150, "n_epochs": 8, "image_size": 256, **_TRAINING_MIX,
                   "n_variables": [4, 8], "bands": ["g", "r", "i"], "visits_per_night": 2,
                   "hot_pixels_fixed": True, "split_fractions": [0.6, 0.1, 0.3]},
    },
}
"""Named dataset recipes: survey, seed and parameters of :func:`generate_dataset`."""


class RegenerationError(ManifestError):
    """A regenerated dataset differs from its manifest; ``mismatches`` lists the files."""

    def __init__(self, message: str, mismatches: list[str]):
        super().__init__(message)
        self.mismatches = mismatches


def _plain(value: Any) -> Any:
    """JSON-friendly form of a parameter (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _preset_from_dict(data: dict[str, Any]) -> SurveyPreset:
    data = dict(data)
    data["bands"] = {k: BandParameters(**v) for k, v in data.get("bands", {}).items()}
    return SurveyPreset(**data)


def write_field(
    sim: SimulatedField, root: str | os.PathLike, *, field_id: int, split: str
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write one simulated field under ``root/fNNNN/`` and return its samples and file hashes.

    A one-band field has ``reference.fits`` and ``psf_reference.fits``; a field
    taken in several bands has ``reference_<band>.fits`` and
    ``psf_reference_<band>.fits`` per band, and each sample points at its band's.

    Parameters
    ----------
    sim : SimulatedField
        The field.
    root : path-like
        Dataset folder (the manifest's folder).
    field_id : int
        Field number (names the sub-folder and the sample ids).
    split : str
        ``train``, ``val`` or ``test`` for every sample of the field.

    Returns
    -------
    samples : list of dict
        One manifest entry per science epoch.
    files : dict
        Relative path -> sha256 of every file written.
    """
    root = Path(root)
    folder = f"f{field_id:04d}"
    files: dict[str, str] = {}

    def fits(rel: str, data: np.ndarray, header: dict[str, Any] | None = None) -> str:
        files[rel] = write_fits(root / rel, data, header, overwrite=True)
        return rel

    references = sim.references or {sim.band: SimulatedReference(
        sim.band, sim.reference, sim.psf_reference, sim.reference_header, sim.reference_conditions)}
    refs, psf_refs = {}, {}
    for band, ref in references.items():
        suffix = "" if len(references) == 1 else f"_{band}"
        refs[band] = fits(f"{folder}/reference{suffix}.fits", ref.image, ref.header)
        psf_refs[band] = fits(f"{folder}/psf_reference{suffix}.fits", ref.psf,
                              {"FWHMPIX": ref.header["FWHMPIX"]})
    class_keys = {f"CLASS{c}": (name, "class code") for c, name in enumerate(CLASS_NAMES)}
    samples = []
    for k, ep in enumerate(sim.epochs):
        stem = f"{folder}/e{k:02d}"
        sci = fits(f"{stem}_science.fits", ep.science, ep.header)
        psf = fits(f"{stem}_psf.fits", ep.psf, {"FWHMPIX": ep.header["FWHMPIX"]})
        labels = fits(f"{stem}_labels.fits", ep.class_map, class_keys)
        inst = fits(f"{stem}_instances.fits", ep.instance_map)
        truth = f"{stem}_truth.csv"
        table = ep.catalog.copy()
        table.insert(0, "field", field_id)
        with atomic_write(root / truth, "w", overwrite=True) as handle:
            table.to_csv(handle, index=False, float_format="%.7g", lineterminator="\n")
        files[truth] = sha256_file(root / truth)
        kinds = ep.catalog.kind
        samples.append(
            {
                "id": f"{folder}_e{k:02d}",
                "field": int(field_id),
                "epoch": int(k),
                "split": split,
                "survey": sim.survey.name,
                "band": ep.band,
                "mjd": round(float(ep.mjd), 6),
                "reference": refs[ep.band],
                "science": sci,
                "psf_reference": psf_refs[ep.band],
                "psf_science": psf,
                "labels": labels,
                "instances": inst,
                "truth": truth,
                "ra": round(sim.ra, 6),
                "dec": round(sim.dec, 6),
                "seeing": round(float(ep.conditions.seeing), 4),
                "n_transients": int(kinds.isin(TRANSIENT_KINDS).sum()),
                "n_artifacts": int(kinds.isin(ARTIFACT_KINDS).sum()),
            }
        )
    return samples, files


def _make_field(task: tuple[int, np.random.SeedSequence, str], *, root: str, preset: SurveyPreset,
                params: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Simulate and write one field (a task of :func:`generate_dataset`)."""
    field_id, seed, split = task
    sim = simulate_field(preset, **params, field_id=field_id, seed=seed)
    return write_field(sim, root, field_id=field_id, split=split)


def _finished_fields(out: Path, generator: dict[str, Any]) -> tuple[Manifest, dict[int, tuple]]:
    """Read the record of an interrupted (or finished) dataset in ``out`` for ``resume``.

    Returns the record and, per field whose files all match their hashes, its
    samples and files.
    """
    for candidate in (out / MANIFEST_NAME, out / PARTIAL_NAME):
        if candidate.is_file():
            previous = Manifest.load(candidate)
            break
    else:
        msg = f"cannot resume in {out}: it is not empty and holds no {MANIFEST_NAME} or {PARTIAL_NAME}"
        raise FileExistsError(msg)
    wanted = json.loads(json.dumps(generator))
    if previous.generator != wanted:
        differ = sorted(k for k in set(wanted) | set(previous.generator)
                        if wanted.get(k) != previous.generator.get(k))
        msg = (f"cannot resume in {out}: its dataset was made with other settings ({', '.join(differ)}"
               "); choose another folder or pass overwrite=True")
        raise FileExistsError(msg)
    finished = {}
    for field_id in sorted({int(s["field"]) for s in previous.samples}):
        prefix = f"f{field_id:04d}/"
        files = {rel: digest for rel, digest in previous.files.items() if rel.startswith(prefix)}
        intact = all((out / rel).is_file() and sha256_file(out / rel) == digest
                     for rel, digest in files.items())
        if files and intact:
            samples = [s for s in previous.samples if int(s["field"]) == field_id]
            finished[field_id] = (samples, files)
    return previous, finished


def generate_dataset(
    output_dir: str | os.PathLike,
    *,
    survey: str | SurveyPreset = "ztf",
    n_fields: int = 8,
    n_epochs: int = 2,
    image_size: int = 128,
    seed: int = 0,
    name: str | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    overwrite: bool = False,
    resume: bool = False,
    scheduler: Any = None,
    progress: bool = False,
    **scene_params: Any,
) -> Manifest:
    """Simulate ``n_fields`` fields and write them, one task per field, as a dataset.

    Parameters
    ----------
    output_dir : path-like
        New (or empty) folder for the dataset.
    survey : str or SurveyPreset
        Survey preset.
    n_fields : int
        Number of fields (each one reference and ``n_epochs`` samples).
    n_epochs : int
        Science epochs per field.
    image_size : int
        Image side in pixels.
    seed : int
        Master seed; field ``i`` uses ``SeedSequence(seed).spawn(n_fields)[i]``.
    name : str, optional
        Dataset name (default ``"<survey>_s<seed>"``).
    split_fractions : tuple of float
        Train/val/test fractions of the fields (:func:`astrid.manifest.assign_splits`).
    overwrite : bool
        Empty a non-empty ``output_dir`` instead of refusing.
    resume : bool
        Finish an interrupted dataset in ``output_dir`` made with the same settings:
        fields whose files match their recorded sha256 are skipped (a finished
        dataset is returned as it is).
    scheduler : str, distributed.Client or None
        Where the fields are made: ``"serial"``, ``"local"``, a scheduler address
        or a client (:func:`astrid.cluster.resolve_scheduler`); None means
        ``$ASTRID_DASK_SCHEDULER``, else serial. The files are the same bytes on all.
    progress : bool
        Show a progress bar (and the Dask dashboard link).
    **scene_params
        Further :func:`simulate_field` parameters (counts, band, noise knobs).

    Returns
    -------
    Manifest
        The saved manifest (``output_dir/manifest.json``).

    Raises
    ------
    ValueError
        For bad or unknown parameters (before anything is written).
    FileExistsError
        If ``output_dir`` is not empty and neither ``overwrite`` nor ``resume``
        is given, or ``resume`` finds a dataset made with other settings.

    Examples
    --------
    >>> import tempfile
    >>> m = generate_dataset(tempfile.mkdtemp(), n_fields=1, n_epochs=1, image_size=16)
    >>> len(m), m.samples[0]["id"]
    (1, 'f0000_e00')
    """
    if not isinstance(n_fields, int | np.integer) or isinstance(n_fields, bool) or n_fields < 1:
        msg = f"n_fields must be an int >= 1, got {n_fields!r}"
        raise ValueError(msg)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        msg = f"seed must be a non-negative int, got {seed!r}"
        raise ValueError(msg)
    if overwrite and resume:
        msg = "overwrite and resume exclude each other: overwrite empties the folder, resume keeps it"
        raise ValueError(msg)
    for bad in ("field_id",):
        if bad in scene_params:
            msg = f"{bad} is set per field by generate_dataset and cannot be given"
            raise ValueError(msg)
    preset, band = check_parameters(survey, n_epochs=n_epochs, image_size=image_size,
                                    **scene_params)
    splits = assign_splits(range(n_fields), fractions=tuple(split_fractions), seed=seed)

    defaults = {
        k: p.default
        for k, p in inspect.signature(simulate_field).parameters.items()
        if p.default is not inspect.Parameter.empty and k not in {"survey", "seed", "field_id"}
    }
    params = {**defaults, **scene_params, "band": band, "n_epochs": int(n_epochs),
              "image_size": int(image_size)}
    record = {k: _plain(v) for k, v in sorted(params.items())}
    record.update(n_fields=int(n_fields), split_fractions=_plain(tuple(split_fractions)))
    generator = {"function": GENERATOR, "survey": preset.name, "preset": preset.to_dict(),
                 "params": record, "seed": int(seed)}

    out = Path(output_dir)
    finished: dict[int, tuple] = {}
    if resume and out.is_dir() and any(out.iterdir()):
        previous, finished = _finished_fields(out, generator)
        if len(finished) == n_fields and previous.path.name == MANIFEST_NAME:
            log.info("%s: all %d fields already complete in %s", previous.name, n_fields, out)
            return previous
        log.info("resuming in %s: %d of %d fields already complete", out, len(finished), n_fields)
    else:
        if not overwrite and out.is_dir() and any(out.iterdir()):
            msg = (f"output folder {out} exists and is not empty; choose another, pass overwrite=True, "
                   "or resume=True to finish an interrupted dataset")
            raise FileExistsError(msg)
        out = prepare_output_dir(output_dir, overwrite=overwrite)
    manifest = Manifest(root=out, name=name or f"{preset.name}_s{seed}", kind="synthetic",
                        generator=generator, info=provenance())

    def collect(fields: dict[int, tuple]) -> Manifest:
        manifest.samples = [s for f in sorted(fields) for s in fields[f][0]]
        manifest.files = {rel: d for f in sorted(fields) for rel, d in fields[f][1].items()}
        return manifest

    children = np.random.SeedSequence(int(seed)).spawn(int(n_fields))
    todo = [(f, children[f], splits[f]) for f in range(n_fields) if f not in finished]
    collect(finished).save(out / PARTIAL_NAME)
    map_items(
        _make_field, todo, scheduler=scheduler, progress=progress, desc="generate_field",
        shared={"root": str(out), "preset": preset,
                "params": params},
        on_result=lambda i, result: finished.__setitem__(todo[i][0], result),
        checkpoint=lambda: collect(finished).save(out / PARTIAL_NAME),
    )
    collect(finished).save()
    (out / PARTIAL_NAME).unlink(missing_ok=True)
    log.info("%s: %d samples from %d fields in %s", manifest.name, len(manifest), n_fields, out)
    return manifest


def regenerate(
    manifest_path: str | os.PathLike, output_dir: str | os.PathLike, *, overwrite: bool = False,
    resume: bool = False, scheduler: Any = None, progress: bool = False,
) -> Manifest:
    """Rebuild a synthetic dataset from a manifest's generator record and check every sha256.

    Parameters
    ----------
    manifest_path : path-like
        A ``manifest.json`` (pixels need not be present) or its folder.
    output_dir : path-like
        New (or empty) folder for the rebuilt dataset.
    overwrite : bool
        Empty a non-empty ``output_dir`` instead of refusing.
    resume, scheduler, progress
        As for :func:`generate_dataset`.

    Returns
    -------
    Manifest
        The rebuilt dataset's manifest, whose files all match the source's hashes.

    Raises
    ------
    ManifestError
        When the manifest was not written by :func:`generate_dataset`.
    RegenerationError
        When files differ from the recorded hashes (``err.mismatches`` lists them).

    Examples
    --------
    >>> import tempfile
    >>> m = generate_dataset(tempfile.mkdtemp(), n_fields=1, n_epochs=1, image_size=16)
    >>> len(regenerate(m.path, tempfile.mkdtemp(), overwrite=True))
    1
    """
    source = Manifest.load(manifest_path)
    gen = source.generator
    if gen.get("function") != GENERATOR or "params" not in gen:
        msg = f"{source.path} was not made by {GENERATOR}; cannot regenerate it"
        raise ManifestError(msg)
    params = dict(gen["params"])
    preset = _preset_from_dict(gen["preset"]) if "preset" in gen else get_survey(gen["survey"])
    if "split_fractions" in params:
        params["split_fractions"] = tuple(params["split_fractions"])
    rebuilt = generate_dataset(output_dir, survey=preset, seed=int(gen["seed"]), name=source.name,
                               overwrite=overwrite, resume=resume, scheduler=scheduler,
                               progress=progress, **params)
    mismatches = sorted(
        rel for rel in set(source.files) | set(rebuilt.files)
        if source.files.get(rel) != rebuilt.files.get(rel)
    )
    if mismatches:
        shown = ", ".join(mismatches[:5]) + (" ..." if len(mismatches) > 5 else "")
        msg = (f"regenerated dataset in {rebuilt.root} differs from {source.path} in "
               f"{len(mismatches)} file(s): {shown}")
        raise RegenerationError(msg, mismatches)
    return rebuilt


def generate_named(
    name: str, output_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
    scheduler: Any = None, progress: bool = False,
) -> Manifest:
    """Generate the named recipe ``name`` of :data:`DATASETS` into ``output_dir``.

    ``overwrite``, ``resume``, ``scheduler`` and ``progress`` are as for
    :func:`generate_dataset`.

    Raises
    ------
    ValueError
        For an unknown recipe name.

    Examples
    --------
    >>> sorted(DATASETS)
    ['full', 'quick', 'survey', 'tiny']
    """
    if name not in DATASETS:
        msg = f"unknown dataset recipe {name!r}; known: {', '.join(sorted(DATASETS))}"
        raise ValueError(msg)
    recipe = DATASETS[name]
    return generate_dataset(output_dir, survey=recipe["survey"], seed=recipe["seed"], name=name,
                            overwrite=overwrite, resume=resume, scheduler=scheduler,
                            progress=progress, **recipe["params"])


def object_counts(manifest: Manifest | str | os.PathLike) -> pd.DataFrame:
    """Count labelled objects per kind and split from the truth catalogues.

    Returns
    -------
    pandas.DataFrame
        Index: kind; columns: splits, ``total`` and ``ambiguous``.

    Examples
    --------
    >>> import tempfile
    >>> m = generate_dataset(tempfile.mkdtemp(), n_fields=1, n_epochs=1, image_size=32, seed=3)
    >>> "total" in object_counts(m).columns
    True
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    tables = []
    for sample in manifest.samples:
        table = pd.read_csv(manifest.file(sample, "truth"))
        table["split"] = sample["split"]
        tables.append(table[["kind", "split", "ambiguous"]])
    if not tables:
        return pd.DataFrame(columns=["train", "val", "test", "total", "ambiguous"])
    allrows = pd.concat(tables, ignore_index=True)
    counts = pd.crosstab(allrows.kind, allrows.split)
    counts = counts.reindex(columns=["train", "val", "test"], fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts["ambiguous"] = allrows.groupby("kind").ambiguous.sum().astype(int)
    order = [k for k in CLASS_NAMES if k in counts.index]
    return counts.loc[order]


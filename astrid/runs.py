"""Headless runs: presets of notebooks executed through papermill.

A *preset* is a YAML file in ``papermill_runs/presets/``::

    name: quick
    description: the quick end-to-end study on synthetic data
    parameters:            # given to every notebook that declares them
      seed: 0
    notebooks:
      - notebook: 01_synthetic_generation.ipynb
        parameters: {dataset: quick}
      - notebook: 02_differencing_zogy.ipynb

Each run gets its own new folder (``papermill_runs/<UTC time>_<name>/`` or
``--out``), never an existing one. Every notebook writes into its own
sub-folder, and hands results on by :func:`record_outputs`; the runner passes
them to later notebooks as parameters of the same name. ``run.json`` in the run
folder records the parameters, package version and git commit.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from astrid.manifest import atomic_write, prepare_output_dir, provenance

__all__ = [
    "NOTEBOOK_DIR",
    "OUTPUTS_NAME",
    "PRESET_DIR",
    "RUNS_DIR",
    "Preset",
    "RunFailed",
    "RunResult",
    "Step",
    "demo_alert_history",
    "demo_manifest",
    "demo_model",
    "heldout_dataset",
    "load_preset",
    "new_run_dir",
    "read_outputs",
    "record_outputs",
    "resolve_output_dir",
    "run",
    "run_grid",
]

log = logging.getLogger(__name__)

WORKSPACE = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = WORKSPACE / "notebooks"
RUNS_DIR = WORKSPACE / "papermill_runs"
PRESET_DIR = RUNS_DIR / "presets"
OUTPUTS_NAME = "outputs.json"


class RunFailed(RuntimeError):
    """A notebook of a run failed; the message names the notebook and the cell."""


@dataclass
class Step:
    """One notebook of a preset with its own parameters."""

    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The notebook's stem, also the name of its output sub-folder."""
        return self.notebook.stem


@dataclass
class Preset:
    """A named chain of notebooks with shared parameters."""

    name: str
    steps: list[Step]
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    notebooks : list of Path
        Executed notebooks, in order.
    outputs : dict
        Everything the notebooks recorded with :func:`record_outputs`.
    seconds : float
        Wall-clock duration.
    """

    run_dir: Path
    notebooks: list[Path]
    outputs: dict[str, Any]
    seconds: float


def _find_notebook(name: str | Path) -> Path:
    path = Path(name)
    for candidate in (path, NOTEBOOK_DIR / path, NOTEBOOK_DIR / f"{path}.ipynb"):
        if candidate.suffix == ".ipynb" and candidate.is_file():
            return candidate.resolve()
    msg = f"notebook {str(name)!r} not found (looked in {NOTEBOOK_DIR})"
    raise FileNotFoundError(msg)


def load_preset(target: str | Path) -> Preset:
    """Return the preset named ``target``, read from a YAML path, or wrap one notebook.

    Parameters
    ----------
    target : str or Path
        A preset name (``quick``), a preset YAML file, or a notebook (path or stem).

    Raises
    ------
    FileNotFoundError
        When nothing of that name exists.
    ValueError
        When the preset file is malformed.
    """
    path = Path(target)
    if path.suffix == ".ipynb" or (NOTEBOOK_DIR / f"{path}.ipynb").is_file():
        notebook = _find_notebook(target)
        return Preset(name=notebook.stem, steps=[Step(notebook)])
    if path.suffix not in {".yaml", ".yml"}:
        path = PRESET_DIR / f"{target}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        msg = f"no preset or notebook {str(target)!r}; presets: {', '.join(known)}"
        raise FileNotFoundError(msg)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("notebooks"), list):
        msg = f"preset {path} needs a 'notebooks' list"
        raise ValueError(msg)
    unknown = set(raw) - {"name", "description", "parameters", "notebooks"}
    if unknown:
        msg = f"preset {path}: unknown key(s) {sorted(unknown)}"
        raise ValueError(msg)
    steps = []
    for entry in raw["notebooks"]:
        entry = {"notebook": entry} if isinstance(entry, str) else entry
        steps.append(Step(_find_notebook(entry["notebook"]), dict(entry.get("parameters") or {})))
    return Preset(
        name=str(raw.get("name", path.stem)),
        steps=steps,
        parameters=dict(raw.get("parameters") or {}),
        description=str(raw.get("description", "")),
    )


def new_run_dir(name: str, *, root: Path = RUNS_DIR) -> Path:
    """Create and return a new, empty run folder ``<UTC time>_<name>`` under ``root``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in itertools.count():
        suffix = f"-{attempt}" if attempt else ""
        path = root / f"{stamp}_{name}{suffix}"
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def resolve_output_dir(output_dir: str | Path, prefix: str) -> Path:
    """Return a notebook's output folder, creating it.

    Parameters
    ----------
    output_dir : str or Path
        The notebook's ``output_dir`` parameter; empty means a fresh temporary folder.
    prefix : str
        Name prefix of the temporary folder.
    """
    if not str(output_dir):
        return Path(tempfile.mkdtemp(prefix=f"astrid_{prefix}_"))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def record_outputs(output_dir: str | Path, **outputs: Any) -> Path:
    """Record a notebook's results (paths, URIs, numbers) for the notebooks after it.

    Values merge into ``outputs.json`` in ``output_dir``.
    """
    target = Path(output_dir) / OUTPUTS_NAME
    merged = read_outputs(output_dir)
    merged.update({k: str(v) if isinstance(v, Path) else v for k, v in outputs.items()})
    with atomic_write(target, "w", overwrite=True) as handle:
        json.dump(merged, handle, indent=1)
    return target


def read_outputs(output_dir: str | Path) -> dict[str, Any]:
    """Return what a notebook recorded in ``output_dir`` (empty when nothing)."""
    target = Path(output_dir) / OUTPUTS_NAME
    return json.loads(target.read_text()) if target.is_file() else {}


def _declared_parameters(notebook: Path) -> set[str]:
    """Names papermill can set in ``notebook``; every name its ``parameters`` cell assigns must be one."""
    import ast

    import nbformat
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    source = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells
                       if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = {node.id for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    unread = sorted(assigned - declared)
    if unread:
        msg = (f"{notebook.name}: papermill cannot read parameter(s) {unread} of its parameters cell "
               "(a line it does not parse, e.g. '=' in the comment)")
        raise ValueError(msg)
    return declared


def _plan(preset: Preset, overrides: dict[str, Any]) -> list[tuple[Step, set[str]]]:
    plan = [(step, _declared_parameters(step.notebook)) for step in preset.steps]
    declared = set().union(*(names for _, names in plan))
    unknown = set(overrides) - declared
    if unknown:
        msg = f"unknown parameter(s) {sorted(unknown)} for {preset.name}; known: {sorted(declared)}"
        raise ValueError(msg)
    for step, names in plan:
        bad = set(step.parameters) - names
        if bad:
            msg = f"preset {preset.name}: {step.notebook.name} has no parameter(s) {sorted(bad)}"
            raise ValueError(msg)
    return plan


def run(
    target: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    kernel_name: str | None = None,
) -> RunResult:
    """Execute a preset or one notebook headlessly into a new run folder.

    Parameters
    ----------
    target : str or Path
        Preset name or file, or a notebook.
    parameters : dict, optional
        Overrides, given to every notebook of the run that declares them.
    out : path-like, optional
        Run folder; must not exist or be empty. Default: a new folder under
        ``papermill_runs/``.
    progress : bool
        Show papermill's cell progress bar.
    kernel_name : str, optional
        Jupyter kernel; default the notebook's own.

    Returns
    -------
    RunResult

    Raises
    ------
    RunFailed
        When a notebook fails; names the notebook and the failing cell.
    ValueError
        For parameters that no notebook of the run declares.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    preset = load_preset(target)
    overrides = dict(parameters or {})
    plan = _plan(preset, overrides)
    run_dir = prepare_output_dir(out) if out else new_run_dir(preset.name)
    record: dict[str, Any] = {
        "preset": preset.name,
        "description": preset.description,
        "overrides": overrides,
        "steps": [],
        "status": "running",
        **provenance(),
    }
    _write_record(run_dir, record)
    outputs: dict[str, Any] = {}
    executed = []
    start = time.perf_counter()
    for step, names in plan:
        step_dir = run_dir / step.name
        step_dir.mkdir()
        values = {**preset.parameters, **step.parameters}
        values.update({k: v for k, v in outputs.items() if k not in step.parameters})
        values.update(overrides)
        values = {k: v for k, v in values.items() if k in names}
        values["output_dir"] = str(step_dir)
        executed_path = run_dir / step.notebook.name
        record["steps"].append({"notebook": step.notebook.name, "parameters": values})
        _write_record(run_dir, record)
        log.info("running %s", step.notebook.name)
        step_start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(step.notebook),
                str(executed_path),
                parameters=values,
                progress_bar=progress,
                kernel_name=kernel_name,
                cwd=str(step_dir),
            )
        except PapermillExecutionError as err:
            record["status"] = "failed"
            record["error"] = {"notebook": step.notebook.name, "cell": err.exec_count,
                               "ename": err.ename, "evalue": err.evalue}
            _write_record(run_dir, record)
            msg = (
                f"{step.notebook.name} failed in cell [{err.exec_count}]: {err.ename}: "
                f"{err.evalue} (executed notebook: {executed_path})"
            )
            raise RunFailed(msg) from None
        executed.append(executed_path)
        record["steps"][-1]["seconds"] = round(time.perf_counter() - step_start, 1)
        outputs.update(read_outputs(step_dir))
        outputs["report"] = str(_export_html(executed_path))
    seconds = time.perf_counter() - start
    record.update(status="succeeded", outputs=outputs, seconds=round(seconds, 1))
    _write_record(run_dir, record)
    return RunResult(run_dir=run_dir, notebooks=executed, outputs=outputs, seconds=seconds)


def _export_html(notebook: Path) -> Path:
    """Export an executed notebook to HTML beside it (the run's readable report)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    with atomic_write(target, "w") as handle:
        handle.write(body)
    return target


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    with atomic_write(run_dir / "run.json", "w", overwrite=True) as handle:
        json.dump(record, handle, indent=1, default=str)


def _grid_run(combination: tuple[str, dict[str, Any]], *, preset: str,
              progress: bool) -> dict[str, Any]:
    """Run one grid combination into its own folder (a task of :func:`run_grid`); return its row.

    The folder is emptied first, so that an attempt whose worker died is redone from scratch.
    """
    out, values = combination
    try:
        result = run(preset, parameters=values, out=prepare_output_dir(out, overwrite=True),
                     progress=progress)
    except RunFailed as err:
        return {"status": f"failed: {err}"}
    return {**_headline(result.outputs), "status": "succeeded"}


def run_grid(
    grid_file: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    scheduler: Any = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run a preset once per combination of a parameter grid, concurrently on a cluster.

    The grid file is YAML: ``preset: quick`` and ``grid: {name: [values, ...]}``.
    Each combination is a papermill run (:func:`run`) in its own sub-folder of one
    new batch folder; on a Dask cluster the combinations run side by side, one per
    worker thread (the workers must see the batch folder). ``summary.csv`` there
    holds one row per combination with its headline metrics.

    Parameters
    ----------
    grid_file : str or Path
        The grid YAML.
    parameters : dict, optional
        Overrides for every combination (the grid's values win).
    out : path-like, optional
        Batch folder (new or empty); default a new folder under ``papermill_runs/``.
    progress : bool
        Show progress: papermill's cell bar when serial, Dask's bar of the
        combinations (and the dashboard link) on a cluster.
    scheduler : str, distributed.Client or None
        ``"serial"``, ``"local"``, a scheduler address or a client
        (:func:`astrid.cluster.resolve_scheduler`); None means
        ``$ASTRID_DASK_SCHEDULER``, else serial.

    Returns
    -------
    batch_dir : Path
        The batch folder.
    rows : list of dict
        One summary row per combination, in grid order.

    Raises
    ------
    ValueError
        For a grid file without ``preset`` or a non-empty ``grid`` mapping.
    """
    from astrid.cluster import map_items, resolve_scheduler

    raw = yaml.safe_load(Path(grid_file).read_text()) or {}
    if "preset" not in raw or not isinstance(raw.get("grid"), dict) or not raw["grid"]:
        msg = f"grid file {grid_file} needs 'preset' and a non-empty 'grid' mapping"
        raise ValueError(msg)
    names = list(raw["grid"])
    combos = list(itertools.product(*(list(raw["grid"][n]) for n in names)))
    preset = Path(str(raw["preset"]))
    preset = preset.resolve() if preset.is_file() else preset  # workers may run elsewhere
    batch = (prepare_output_dir(out) if out else new_run_dir(f"grid_{raw['preset']}")).resolve()
    rows = [{"run": f"{index:03d}", **dict(zip(names, combo, strict=True))}
            for index, combo in enumerate(combos)]
    tasks = [(str(batch / row["run"]), {**(parameters or {}), **dict(zip(names, combo, strict=True))})
             for row, combo in zip(rows, combos, strict=True)]
    serial = resolve_scheduler(scheduler) == "serial"
    results = map_items(_grid_run, tasks, scheduler=scheduler, desc="grid_run",
                        progress=progress and not serial, retries=0,
                        shared={"preset": str(preset), "progress": progress and serial})
    for row, result in zip(rows, results, strict=True):
        row.update(result)
    import pandas as pd

    with atomic_write(batch / "summary.csv", "w", overwrite=True) as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    return batch, rows


def _headline(outputs: dict[str, Any]) -> dict[str, Any]:
    """Flatten the headline table a study recorded (``evaluate.headline``) into one row."""
    return {f"{row['model']}_{key}": value for row in outputs.get("headline", [])
            for key, value in row.items() if key != "model"}


def demo_manifest(output_dir: str | Path, *, differenced: bool = False) -> Path:
    """Make the tiny synthetic dataset in ``output_dir/demo_dataset`` and return its manifest.

    Notebooks call this when they are run alone (under nbval) without an input.

    Parameters
    ----------
    output_dir : path-like
        The notebook's output folder.
    differenced : bool
        Also add the ZOGY products (phase 2) to every sample.
    """
    from astrid.simulate import generate_named

    manifest = generate_named("tiny", Path(output_dir) / "demo_dataset")
    if differenced:
        from astrid.differencing import difference_dataset

        difference_dataset(manifest)
    return manifest.path


def heldout_dataset(output_dir: str | Path, *, survey: str, n_fields: int, image_size: int,
                 seed: int) -> Path:
    """Generate and difference a held-out dataset of ``survey`` (every field in the test split).

    Used for the cross-survey test; its seed should differ from the training data's.
    """
    from astrid.differencing import difference_dataset
    from astrid.simulate import generate_dataset

    manifest = generate_dataset(Path(output_dir) / f"test_{survey}", survey=survey,
                                n_fields=n_fields, n_epochs=1, image_size=image_size, seed=seed,
                                split_fractions=(0.0, 0.0, 1.0), name=f"test_{survey}")
    difference_dataset(manifest)
    return manifest.path


def demo_model(output_dir: str | Path, manifest: str | Path) -> Path:
    """Train the tiniest model on ``manifest`` for a standalone notebook; return its bundle."""
    from astrid.model import train_unet

    result = train_unet(
        manifest, output_dir=Path(output_dir) / "demo_model", epochs=1, model_size="tiny",
        tile_size=32, tiles_per_epoch=32, seed=0,
    )
    return result.bundle


def demo_alert_history(
    output_dir: str | Path, *, n_batches: int = 4, images_per_batch: int = 8, shifted_batch: int | None = 3,
    alerts_per_image: int = 4, seed: int = 0,
) -> list[Any]:
    """Simulate alert batches in date order for a standalone monitoring notebook, one of them shifted.

    ``n_batches * images_per_batch`` fields of the ``tiny`` recipe's survey
    (ZTF, 64 px, one epoch each, dated as simulated) are sorted by date and
    cut into consecutive batches. Batch ``shifted_batch`` is the same fields
    (same seeds, dates and objects) observed with twice the seeing and five
    times the read noise. Each image gives up to ``alerts_per_image`` alerts
    (:func:`astrid.monitor.synthetic_alerts`) with their truth in ``label_real``.

    Parameters
    ----------
    output_dir : path-like
        The notebook's output folder (datasets go to ``demo_stream/``, ``demo_stream_shifted/``).
    n_batches, images_per_batch : int
        Batches, and images (exposures) in each.
    shifted_batch : int or None
        Index of the batch observed in degraded conditions (None: none).
    alerts_per_image : int
        Alerts cut from each image.
    seed : int
        Seed of the fields and of the alerts drawn.

    Returns
    -------
    list of astrid.alerts.AlertTable
        Oldest batch first.
    """
    from astrid.differencing import difference_dataset, difference_sample
    from astrid.monitor import synthetic_alerts
    from astrid.simulate import DATASETS, generate_dataset
    from astrid.surveys import get_survey

    recipe = DATASETS["tiny"]
    params = {**recipe["params"], "n_fields": n_batches * images_per_batch, "n_epochs": 1}
    options = {"seed": seed, "split_fractions": (0.0, 0.0, 1.0), "overwrite": True, **params}
    stream = generate_dataset(Path(output_dir) / "demo_stream", survey=recipe["survey"], **options)
    difference_dataset(stream)
    ordered = sorted(stream.samples, key=lambda s: s["mjd"])
    batches = []
    for i in range(n_batches):
        chosen, manifest = ordered[i * images_per_batch:(i + 1) * images_per_batch], stream
        if i == shifted_batch:
            preset = get_survey(recipe["survey"])
            manifest = generate_dataset(
                Path(output_dir) / "demo_stream_shifted", **options,
                survey=preset.with_overrides(seeing_median=2 * preset.seeing_median,
                                             read_noise=5 * preset.read_noise))
            chosen = [manifest.sample(s["id"]) for s in chosen]
            for sample in chosen:
                difference_sample(manifest, sample, overwrite=True)
            manifest.save()
        batches.append(synthetic_alerts(manifest, samples=chosen, max_per_sample=alerts_per_image,
                                        seed=seed + i))
    return batches

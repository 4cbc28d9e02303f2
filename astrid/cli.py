"""The ``astrid`` command.

``astrid run NOTEBOOK_OR_PRESET [-p NAME VALUE]... [--out DIR]``
    Execute a notebook or a preset of notebooks headlessly (papermill).
``astrid run --preset full`` / ``astrid run --grid GRID.yaml [--scheduler SCHEDULER]``
    The same for a named preset, or once per combination of a parameter grid
    (concurrently on a Dask cluster with ``--scheduler local`` or ``tcp://HOST:PORT``).
``astrid data build NAME [--out DIR] [--scheduler SCHEDULER] [--resume]`` / ``astrid data verify PATH``
    Rebuild a named dataset from its manifest (on a Dask cluster, finishing an
    interrupted build), or check a dataset's file hashes.
``astrid models``
    List the models registered in the MLflow tracking store in use.
``astrid score-alerts PATH... --out scores.csv [--model NAME[:VERSION] | --bundle DIR]``
    Score ZTF alert packets (Avro/Parquet files or folders) with a U-Net: one CSV row per
    alert; packets that could not be scored are listed, with the reason, in
    ``<out>.skipped.csv``. The run's metrics and input statistics are logged to MLflow
    (experiment ``astrid-monitoring``) dated by the alerts' JD range, or recorded in
    ``scoring_*.json`` beside ``--out`` when the store is unreachable (``--no-tracking``: neither).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from astrid.cluster import ENV_SCHEDULER

__all__ = ["main"]

SCHEDULER_HELP = ("where tasks run: serial, local (a Dask cluster on this machine), tcp://HOST:PORT "
                  "or a scheduler.json (default: $ASTRID_DASK_SCHEDULER, else serial)")


def _parse_value(text: str) -> Any:
    """Read a ``-p`` value the way papermill does: YAML scalars, else the string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.lower() not in {"null", "none", "~"} else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrid", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a notebook or preset headlessly")
    run.add_argument("target", nargs="?", help="notebook (path or stem) or preset name/file")
    run.add_argument("--preset", help="preset name (same as giving it as TARGET)")
    run.add_argument("--grid", type=Path, help="YAML parameter grid: one run per combination")
    run.add_argument(
        "-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="override a notebook parameter (repeatable)",
    )
    run.add_argument("--out", type=Path, help="run folder (new or empty); default papermill_runs/")
    run.add_argument("--no-progress", action="store_true", help="hide the cell progress bar")
    run.add_argument("--scheduler", help=SCHEDULER_HELP + " (for --grid)")

    data = commands.add_parser("data", help="named datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="(re)build a named dataset from its manifest")
    build.add_argument("name", help="dataset name in data_manifests/ (e.g. quick, full)")
    build.add_argument("--out", type=Path, help="folder (default data/NAME)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    build.add_argument("--resume", action="store_true",
                       help="finish an interrupted build in --out (fields with matching hashes are kept)")
    build.add_argument("--scheduler", help="Dask scheduler: serial, local, tcp://HOST:PORT or a "
                       "scheduler.json (default: $ASTRID_DASK_SCHEDULER, else a local cluster)")
    verify = data_commands.add_parser("verify", help="check a dataset's files against its hashes")
    verify.add_argument("path", type=Path, help="dataset folder or manifest.json")

    commands.add_parser("models", help="list registered models")

    score = commands.add_parser("score-alerts", help="score ZTF alert packets with a U-Net")
    score.add_argument("paths", nargs="+", type=Path, help="alert files or folders (Avro/Parquet)")
    score.add_argument("--out", type=Path, required=True,
                       help="CSV to write (one row per alert; skipped ones in <out>.skipped.csv)")
    chosen = score.add_mutually_exclusive_group()
    chosen.add_argument("--model", help="registered model NAME[:VERSION] (default: the latest "
                                        "version of the first registered model)")
    chosen.add_argument("--bundle", type=Path, help="model bundle folder instead of the registry")
    score.add_argument("--max-alerts", type=int, help="score at most this many alerts")
    score.add_argument("--max-nan-fraction", type=float, default=0.05,
                       help="replace NaN pixels by the stamp median up to this fraction (default 0.05)")
    score.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    score.add_argument("--no-tracking", action="store_true",
                       help="do not log the scoring run (metrics, input statistics, dates) to MLflow")
    return parser


def _run(args: argparse.Namespace) -> int:
    from astrid import runs

    target = args.preset or args.target
    overrides = {name: _parse_value(value) for name, value in args.parameters}
    if args.grid:
        batch, rows = runs.run_grid(args.grid, parameters=overrides, out=args.out,
                                    progress=not args.no_progress, scheduler=args.scheduler)
        print(_table(rows))
        print(f"\nbatch folder: {batch}")
        return 0 if all(r["status"] == "succeeded" for r in rows) else 1
    if not target:
        print("astrid run: give a notebook or preset (or --preset / --grid)", file=sys.stderr)
        return 2
    try:
        result = runs.run(target, parameters=overrides, out=args.out,
                          progress=not args.no_progress)
    except runs.RunFailed as err:
        print(f"astrid run: {err}", file=sys.stderr)
        return 1
    headline = runs.read_outputs(result.run_dir / result.notebooks[-1].stem).get("headline")
    if headline:
        print(_table(headline))
    report = result.outputs.get("report")
    if report:
        print(f"report: {report}")
    print(f"run folder: {result.run_dir} ({result.seconds:.0f} s)")
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _data(args: argparse.Namespace) -> int:
    from astrid.manifest import Manifest

    if args.data_command == "verify":
        problems = Manifest.load(args.path).verify()
        print("\n".join(problems) if problems else "all files match their sha256")
        return 1 if problems else 0
    from astrid.runs import WORKSPACE
    from astrid.simulate import regenerate

    source = WORKSPACE / "data_manifests" / f"{args.name}.json"
    out = args.out or WORKSPACE / "data" / args.name
    scheduler = args.scheduler or os.environ.get(ENV_SCHEDULER, "").strip() or "local"
    manifest = regenerate(source, out, overwrite=args.overwrite, resume=args.resume,
                          scheduler=scheduler, progress=True)
    print(f"{args.name}: {len(manifest)} samples in {manifest.root}")
    return 0


def _models() -> int:
    from astrid.tracking import list_models

    table = list_models()
    print(table.to_string(index=False) if len(table) else "no registered models")
    return 0


def _score_alerts(args: argparse.Namespace) -> int:
    """Score alerts into ``--out``; skipped packets go to ``<out>.skipped.csv`` and are printed.

    Skipped packets are kept out of the scores file so that its ``candid`` column stays a
    plain integer column (candids exceed 2**53, and an empty cell would make readers parse
    the column as float and round them).
    """
    from astrid.manifest import atomic_write
    from astrid.realdata import load_alerts, resolve_model, score_alerts

    model, name, version = resolve_model(args.model, bundle=args.bundle, device=args.device)
    alerts = load_alerts(args.paths, max_alerts=args.max_alerts, max_nan_fraction=args.max_nan_fraction)
    table = score_alerts(alerts, model, device=args.device, model_name=name, model_version=version)
    bad = table["skipped_reason"] != ""
    skipped_path = args.out.with_name(f"{args.out.stem}.skipped.csv")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, rows in ((args.out, table[~bad].drop(columns="skipped_reason")),
                       (skipped_path, table.loc[bad, ["candid", "source", "skipped_reason"]])):
        if path == skipped_path and rows.empty:
            skipped_path.unlink(missing_ok=True)
            continue
        with atomic_write(path, "w", overwrite=True) as handle:
            rows.to_csv(handle, index=False)
    for row in table[bad].itertuples():
        print(f"skipped {row.source} (candid {row.candid}): {row.skipped_reason}", file=sys.stderr)
    label = f"{name}:{version}" if version else name
    print(f"scored {int((~bad).sum())} alerts with {label} -> {args.out}")
    if not args.no_tracking and len(alerts):
        from astrid.monitor import record_scoring

        record = record_scoring(alerts, scores=table, model_name=name, model_version=version,
                                label=" ".join(str(p) for p in args.paths), output_dir=args.out.parent)
        where = f"run {record.tracked.run_id}" if record.tracked.tracked else record.tracked.local_record
        print(f"logged the scoring run (MJD {record.statistics.mjd_start:.3f}-"
              f"{record.statistics.mjd_end:.3f}) -> {where}")
    if bad.any():
        counts = table.loc[bad, "skipped_reason"].str.split(":").str[0].value_counts().to_dict()
        print(f"skipped {int(bad.sum())} {counts} -> {skipped_path}")
    return 0 if (~bad).any() else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``astrid`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "data":
            return _data(args)
        if args.command == "score-alerts":
            return _score_alerts(args)
        return _models()
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError) as err:
        print(f"astrid {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``astrid`` command.

``astrid run NOTEBOOK_OR_PRESET [-p NAME VALUE]... [--out DIR]``
    Execute a notebook or a preset of notebooks headlessly (papermill).
``astrid run --preset full`` / ``astrid run --grid GRID.yaml``
    The same for a named preset, or once per combination of a parameter grid.
``astrid data build NAME [--out DIR]`` / ``astrid data verify PATH``
    Rebuild a named dataset from its manifest, or check a dataset's file hashes.
``astrid models``
    List the models registered in the MLflow tracking store in use.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main"]


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

    data = commands.add_parser("data", help="named datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="(re)build a named dataset from its manifest")
    build.add_argument("name", help="dataset name in data_manifests/ (e.g. quick, full)")
    build.add_argument("--out", type=Path, help="folder (default data/NAME)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    verify = data_commands.add_parser("verify", help="check a dataset's files against its hashes")
    verify.add_argument("path", type=Path, help="dataset folder or manifest.json")

    commands.add_parser("models", help="list registered models")
    return parser


def _run(args: argparse.Namespace) -> int:
    from astrid import runs

    target = args.preset or args.target
    overrides = {name: _parse_value(value) for name, value in args.parameters}
    if args.grid:
        batch, rows = runs.run_grid(args.grid, parameters=overrides, out=args.out,
                                    progress=not args.no_progress)
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
    manifest = regenerate(source, out, overwrite=args.overwrite)
    print(f"{args.name}: {len(manifest)} samples in {manifest.root}")
    return 0


def _models() -> int:
    from astrid.tracking import list_models

    table = list_models()
    print(table.to_string(index=False) if len(table) else "no registered models")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``astrid`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "data":
            return _data(args)
        return _models()
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"astrid {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Kind classifier with and without colour and temporal context on the full study's data (issue 8).

Run: ``python benchmarks/bench_kind_ablation.py [--fields 48] [--seed N] [--data DIR] [--model BUNDLE]
[--causal]``

The ``full`` recipe of :data:`astrid.simulate.DATASETS` (g, r, i cycling, ZTF-like pairs of
visits 30-60 minutes apart, fixed hot pixels; ``--fields`` and ``--seed`` override its number of
fields and seed, e.g. for a smaller development set that is not the study's) is simulated and
differenced with ZOGY (on a Dask LocalCluster). :func:`astrid.evaluate.collect_candidates` finds the
candidates of every image: the S_corr peaks of the baseline detector, or with ``--method unet``
the U-Net's (from ``--model``, or a tiny one trained for one epoch). With ``--model`` (the
study's U-Net, trained on the dataset's train split by notebook 03) the baseline's candidates
also carry the U-Net's class probabilities (:func:`astrid.detect.probabilities_at`), which join
the hand features in every model, as in the study.
:func:`astrid.context.kind_table` gives each candidate its true kind, hand features,
temporal context (``--causal``: earlier epochs only, as an alert stream sees them; default every
epoch of the field, as an offline study) and colour in the night's other bands.
:func:`astrid.classic.feature_ablation` trains the kind classifier on the train split's fields and
scores it on the test split's: hand features alone (``base``), plus colour, plus context, plus
both.

The bars of issue 8, both with colour and context: moving-object recall >= 0.99 and
transient-type macro-F1 (over the true transients called a transient, as the study reports it)
>= 0.97.

Prints the summary table, then ``NAME=VALUE`` lines: ``type_macro_f1_<model>``,
``type_macro_f1_all_<model>``, ``<kind>_recall_<model>`` for the transient kinds,
``bogus_rejection_<model>``, ``real_recall_<model>`` (models ``base``, ``colour``,
``context``, ``colour_context``), the test counts, the timings and whether each bar is met.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from astrid.classes import TRANSIENT_KINDS
from astrid.classic import feature_ablation
from astrid.colour import COLOUR_FEATURES
from astrid.context import CONTEXT_COLUMNS, kind_table
from astrid.detect import FEATURE_COLUMNS, UNET_COLUMNS
from astrid.differencing import difference_dataset
from astrid.evaluate import collect_candidates
from astrid.manifest import MANIFEST_NAME, Manifest
from astrid.simulate import DATASETS, generate_dataset

RECIPE = DATASETS["full"]
MODELS = {"colour": COLOUR_FEATURES, "context": CONTEXT_COLUMNS,
          "colour+context": (*COLOUR_FEATURES, *CONTEXT_COLUMNS)}


def dataset(root: Path, n_fields: int, seed: int) -> Manifest:
    """The full recipe with ``n_fields`` fields and ``seed`` in ``root``, differenced (reused when there)."""
    if (root / MANIFEST_NAME).is_file():
        manifest = Manifest.load(root)
    else:
        params = {**RECIPE["params"], "n_fields": n_fields}
        params["split_fractions"] = tuple(params["split_fractions"])
        manifest = generate_dataset(root, survey=RECIPE["survey"], seed=seed, name="full",
                                    scheduler="local", **params)
    if any("score" not in s for s in manifest.samples):
        manifest = difference_dataset(manifest, scheduler="local")
    return manifest


def unet(manifest: Manifest, method: str, model_dir: Path | None, scratch: Path):
    """``model_dir``'s U-Net; without it a tiny one trained for one epoch for ``--method unet``, else None."""
    from astrid.model import load_model, train_unet

    if model_dir is not None:
        return load_model(model_dir)
    if method != "unet":
        return None  # collect_candidates finds the S_corr peaks alone
    return train_unet(manifest, model_size="tiny", epochs=1, tiles_per_epoch=128, batch_size=16,
                      output_dir=scratch / "unet", device="cpu", progress=False).model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=RECIPE["params"]["n_fields"],
                        help="fields of the full recipe to simulate (default the recipe's)")
    parser.add_argument("--seed", type=int, default=RECIPE["seed"],
                        help="dataset seed (default the recipe's)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder: reused when it holds a manifest, else made there and kept")
    parser.add_argument("--model", type=Path, default=None,
                        help="U-Net bundle: its class probabilities join the features; --method unet "
                             "classifies its candidates")
    parser.add_argument("--method", choices=("baseline", "unet"), default="baseline",
                        help="whose candidates to classify")
    parser.add_argument("--causal", action="store_true", help="context from earlier epochs only")
    parser.add_argument("--motion-radius", type=float, default=100.0,
                        help="arcsec searched for a moving object's other detection")
    parser.add_argument("--max-iter", type=int, default=300, help="boosting iterations of the classifier")
    parser.add_argument("--tables", type=Path, default=None, help="write the candidate tables here (CSV)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        t0 = time.perf_counter()
        manifest = dataset(args.data or scratch / "full", args.fields, args.seed)
        t1 = time.perf_counter()
        model = unet(manifest, args.method, args.model, scratch)
        tables = {}
        for split in ("train", "test"):
            images = collect_candidates(manifest, manifest.split(split), model, device="cpu")
            tables[split] = kind_table(manifest, images, method=args.method, causal=args.causal,
                                       bands=tuple(RECIPE["params"]["bands"]),
                                       motion_radius=args.motion_radius)
        t2 = time.perf_counter()
        network = [c for c in UNET_COLUMNS if c in tables["train"] and c in tables["test"]]
        result = feature_ablation(tables["train"], tables["test"], base_columns=[*FEATURE_COLUMNS, *network],
                                  extra=MODELS, max_iter=args.max_iter)
        t3 = time.perf_counter()
    if args.tables is not None:
        args.tables.mkdir(parents=True, exist_ok=True)
        for split, table in tables.items():
            table.to_csv(args.tables / f"kind_{split}.csv", index=False)

    summary = result.summary
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.round(4))
    test = tables["test"]
    print(f"fields={manifest.generator['params']['n_fields']}")
    print(f"images={len(manifest)}")
    print(f"method={args.method}")
    print(f"causal={args.causal}")
    print(f"unet_features={bool(network)}")
    print(f"n_train={len(tables['train'])}")
    print(f"n_test={len(test)}")
    for kind in TRANSIENT_KINDS:
        print(f"n_test_{kind}={int((test.kind == kind).sum())}")
    for model in ("base", *MODELS):
        name = model.replace("+", "_")
        print(f"type_macro_f1_{name}={summary.loc['type_macro_f1', model]:.4f}")
        print(f"type_macro_f1_all_{name}={summary.loc['type_macro_f1_all', model]:.4f}")
        for kind in TRANSIENT_KINDS:
            if f"recall/{kind}" in summary.index:
                print(f"{kind}_recall_{name}={summary.loc[f'recall/{kind}', model]:.4f}")
        print(f"bogus_rejection_{name}={summary.loc['bogus_rejection', model]:.4f}")
        print(f"real_recall_{name}={summary.loc['real_recall', model]:.4f}")
    print(f"simulate_difference_seconds={t1 - t0:.1f}")
    print(f"candidates_context_colour_seconds={t2 - t1:.1f}")
    print(f"classifier_seconds={t3 - t2:.1f}")
    moving = (summary.loc["recall/moving", "colour+context"] if "recall/moving" in summary.index
              else float("nan"))
    print(f"bar_moving_recall_colour_context={bool(moving >= 0.99)}")
    print(f"bar_type_macro_f1_colour_context={bool(summary.loc['type_macro_f1', 'colour+context'] >= 0.97)}")


if __name__ == "__main__":
    main()

"""Scaling of the batch phases on Dask: 1 vs 2 workers, and the Dask path's overhead.

Run from the repository root::

    python benchmarks/bench_scaling.py                   # prints NAME=VALUE lines
    python benchmarks/bench_scaling.py --per-image       # also CPU seconds per 4096^2 ZOGY
                                                         # and per 2048^2 U-Net image

Makes a synthetic dataset (``--fields`` fields x ``--epochs`` epochs of ``--size`` px)
and differences it three ways: serially in this process, on a LocalCluster of one
worker and on one of two workers. Every worker has one thread, with BLAS/OpenMP/torch
limited to one thread (:func:`astrid.cluster.local_cluster`); this process is limited
the same way and ZOGY gets ``threads=1``, so the ratios measure processes, not
threads. Workers are warmed up (imports) before timing; the start-up is reported
separately as ``cluster_start_{1,2}_s``. The three set-ups run in turn, ``--repeats``
times, and each time is the best of its runs, so that other work on a shared machine
skews them alike (it still lowers the 2-worker speedup whenever it takes a core).

Lines printed (seconds unless named otherwise):

``generate_serial_s``, ``generate_dask1_s``, ``generate_dask2_s``,
``difference_serial_s``, ``difference_dask1_s``, ``difference_dask2_s``
    wall time of each phase;
``speedup_2_workers``
    throughput of generation + differencing on 2 workers over 1 worker (target >= 1.8);
``speedup_2_workers_generate``, ``speedup_2_workers_difference``
    the same per phase;
``dask_overhead``
    time on 1 worker over the serial time, minus one (target <= 0.10);
``zogy_4096_cpu_s``, ``zogy_4096_cpu_2threads_s``, ``difference_sample_4096_cpu_s``, ``unet_2048_cpu_s``
    with ``--per-image``: one 4096^2 float32 ZOGY (as ``bench_zogy_gpu.py`` runs it)
    on 1 and 2 threads; the whole phase-2 step on one 4096^2 pair on 1 thread
    (:func:`astrid.differencing.difference_sample`: FITS in and out, background and
    noise estimation, ZOGY with variance images and astrometric noise); and one
    2048^2 four-channel U-Net inference (default model, ``predict_image`` defaults)
    on 1 thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from distributed import Client
from threadpoolctl import threadpool_limits

from astrid.cluster import local_cluster
from astrid.differencing import difference_dataset
from astrid.simulate import generate_dataset


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def phases(root: Path, params: dict, scheduler) -> tuple[float, float]:
    """Seconds to generate and to difference one dataset on ``scheduler``."""
    holder = {}
    generate = timed(lambda: holder.setdefault(
        "m", generate_dataset(root, scheduler=scheduler, **params)))
    difference = timed(lambda: difference_dataset(holder["m"], scheduler=scheduler, threads=1))
    return generate, difference


def measure(tmp: Path, params: dict, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` phase times, serial and on 1 and 2 workers taken in turn."""
    out: dict[str, float] = {}
    warm = {**params, "n_fields": 2, "image_size": 64}
    with ExitStack() as stack:
        places: dict[str, object] = {"serial": "serial"}
        for n_workers in (1, 2):
            start = time.perf_counter()
            cluster = stack.enter_context(local_cluster(n_workers, dashboard_address=None))
            client = stack.enter_context(Client(cluster))
            phases(tmp / f"warm{n_workers}", warm, client)  # imports on every worker
            out[f"cluster_start_{n_workers}_s"] = time.perf_counter() - start
            places[f"dask{n_workers}"] = client
        times = {name: [] for name in places}
        for r in range(repeats):  # in turn, so that other load on the machine hits all alike
            for name, place in places.items():
                times[name].append(phases(tmp / f"{name}_{r}", params, place))
    for name, runs in times.items():
        out[f"generate_{name}_s"] = min(g for g, _ in runs)
        out[f"difference_{name}_s"] = min(d for _, d in runs)
    both = {k: out[f"generate_{k}_s"] + out[f"difference_{k}_s"] for k in places}
    out["speedup_2_workers"] = both["dask1"] / both["dask2"]
    for phase in ("generate", "difference"):
        out[f"speedup_2_workers_{phase}"] = out[f"{phase}_dask1_s"] / out[f"{phase}_dask2_s"]
    out["dask_overhead"] = both["dask1"] / both["serial"] - 1.0
    return out


def _pair_sample(root: Path, pair: dict) -> tuple:
    """A one-sample manifest of a ``make_pair`` pair (sky added back, ZP and GAIN in the headers)."""
    from astrid.manifest import Manifest, write_fits

    manifest = Manifest(root=root, name="pair")
    sample = {"id": "p0", "split": "test"}
    for key, image, sky_level in (("science", pair["sci"], 800.0), ("reference", pair["ref"], 400.0),
                                  ("psf_science", pair["psf_sci"], 0.0),
                                  ("psf_reference", pair["psf_ref"], 0.0)):
        header = {"ZP": 25.0, "GAIN": 1.0} if sky_level else None
        write_fits(root / f"{key}.fits", (image + sky_level).astype("float32"), header, overwrite=True)
        manifest.add_product(sample, key, f"{key}.fits")
    return manifest, sample


def per_image(repeats: int) -> dict[str, float]:
    """CPU seconds of one 4096^2 ZOGY, one 4096^2 phase-2 step and one 2048^2 U-Net inference."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_model import model_of, sky
    from bench_zogy_gpu import make_pair

    from astrid.differencing import difference_sample, zogy
    from astrid.model import predict_image

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        difference_sample(*_pair_sample(Path(tmp), make_pair(256)), overwrite=True)  # warm-up (imports)
        pair = make_pair(4096)
        for threads, name in ((1, "zogy_4096_cpu_s"), (2, "zogy_4096_cpu_2threads_s")):
            out[name] = min(timed(lambda t=threads: zogy(
                pair["sci"], pair["ref"], pair["psf_sci"], pair["psf_ref"], sigma_science=pair["sig_sci"],
                sigma_reference=pair["sig_ref"], dtype="float32", workers=t)) for _ in range(repeats))
        manifest, sample = _pair_sample(Path(tmp), pair)
        out["difference_sample_4096_cpu_s"] = min(timed(lambda: difference_sample(
            manifest, sample, overwrite=True, workers=1)) for _ in range(repeats))
    torch.set_num_threads(1)
    model, image = model_of("small"), sky(1, 2048)[0]
    predict_image(model, image)  # warm-up
    out["unet_2048_cpu_s"] = min(timed(lambda: predict_image(model, image)) for _ in range(repeats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=16, help="fields (default 16)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per field (default 2)")
    parser.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--per-image", action="store_true",
                        help="also time one 4096^2 ZOGY and one 2048^2 U-Net inference on the CPU")
    args = parser.parse_args()
    threadpool_limits(1)  # BLAS/OpenMP here as in the workers
    params = {"n_fields": args.fields, "n_epochs": args.epochs, "image_size": args.size, "seed": 5}
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.fields} fields x {args.epochs} epochs of {args.size}^2, best of {args.repeats}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp), params, args.repeats)
    if args.per_image:
        results.update(per_image(args.repeats))
    for name, value in results.items():
        print(f"{name}={value:.4g}")
    print(f"# load average {os.getloadavg()[0]:.2f} at the end", flush=True)


if __name__ == "__main__":
    main()

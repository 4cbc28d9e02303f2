"""Speed and memory of the simulator.

Run: ``python benchmarks/bench_simulate.py [--repeat 5] [--fields 20]``

1. One 1024x1024 reference + science pair with about 2000 stars and every kind
   of object: median wall time and tracemalloc peak (target <= 0.5 s on 2 cores).
2. A ``full``-like stream (256 px, 4 epochs per field) written to a temporary
   folder: per-field time and the process's resident memory, which should stay
   flat (well under 2 GB) however many fields are written.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from astrid.simulate import DATASETS, generate_dataset, simulate_field

PAIR = dict(
    image_size=1024, n_epochs=1, n_stars=2000, n_supernovae=4, n_variables=4, n_moving=2,
    n_cosmic_rays=10, n_hot_pixels=10, n_satellites=1, n_bad_columns=1, n_saturated=2,
)


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc), else the peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pair(repeat: int) -> None:
    simulate_field("ztf", seed=0, **PAIR)  # warm-up (imports, FFT plans)
    times = []
    for seed in range(1, repeat + 1):
        t0 = time.perf_counter()
        field = simulate_field("ztf", seed=seed, **PAIR)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    simulate_field("ztf", seed=99, **PAIR)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ep = field.epochs[0]
    print(f"1024^2 pair, {len(field.stars)} stars, {len(field.galaxies)} galaxies, "
          f"{len(ep.catalog)} labelled objects ({', '.join(sorted(set(ep.catalog.kind)))})")
    print(f"  time per pair: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s over {repeat} runs (cpu count {os.cpu_count()})")
    print(f"  peak traced memory during one pair: {peak / 2**20:.0f} MB")

    for survey in ("ztf", "decam"):
        t0 = time.perf_counter()
        field = simulate_field(survey, seed=7, **PAIR)
        print(f"  {survey}: {time.perf_counter() - t0:.3f} s "
              f"(FWHM {field.epochs[0].header['FWHMPIX'][0]:.1f} px)")


def bench_stream(n_fields: int) -> None:
    params = dict(DATASETS["full"]["params"])
    params["n_fields"] = n_fields
    print(f"full-like stream: {n_fields} fields x {params['n_epochs']} epochs at "
          f"{params['image_size']} px")
    with tempfile.TemporaryDirectory() as tmp:
        before = rss_mb()
        t0 = time.perf_counter()
        manifest = generate_dataset(Path(tmp) / "ds", seed=3, **params)
        seconds = time.perf_counter() - t0
        after = rss_mb()
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    pairs = len(manifest)
    print(f"  {pairs} pairs in {seconds:.1f} s ({seconds / pairs * 1000:.0f} ms per pair, "
          f"{size / pairs / 1024:.0f} kB on disk per pair)")
    print(f"  resident memory: {before:.0f} MB before, {after:.0f} MB after "
          f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    # memory per field while streaming: generate again, sampling RSS between fields
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_fields):
            generate_dataset(Path(tmp) / f"f{k}", seed=k, **{**params, "n_fields": 1})
            samples.append(rss_mb())
    print(f"  RSS after each field (MB): first {samples[0]:.0f}, "
          f"last {samples[-1]:.0f}, max {max(samples):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fields", type=int, default=20)
    args = parser.parse_args()
    bench_pair(args.repeat)
    bench_stream(args.fields)


if __name__ == "__main__":
    main()

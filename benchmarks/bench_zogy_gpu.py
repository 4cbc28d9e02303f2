"""ZOGY on a GPU: time, FFT floor, score quality and CPU/GPU parity, in one short run.

For a machine with CuPy and a GPU (run from the repository root)::

    python benchmarks/bench_zogy_gpu.py                 # 4096 x 4096, float32
    python benchmarks/bench_zogy_gpu.py --size 2048 --repeats 10

Generates one synthetic reference/science pair with NumPy (Moffat PSFs of FWHM 2.5
and 3.5 px, 500 stars per Mpix, sky 400 / 800 e-, read noise 5 e-, Poisson noise and
12 transients at S/N 5, 10, 20, as ``../shared/bench/zogy_peers.py`` does), moves it
to the GPU and times :func:`astrid.differencing.zogy` (median of ``--repeats`` after
warm-up, synchronised) against the CuPy "scorr11" FFT floor measured in the same run:
6 forward and 5 inverse n x n real FFTs in the same precision. It then reports S_corr
statistics on source-free pixels, the recovered transient significance against the
optimal S/N, and compares GPU and CPU results (float64 and float32) on a crop.

Imports only NumPy, the standard library, ``astrid.backend`` and
``astrid.differencing`` (CuPy is reached through the backend). ``--device cpu`` runs
the same script on the CPU at a small size, for a dry run without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np

from astrid import backend
from astrid.differencing import zogy

FWHM_REF, FWHM_SCI, BETA = 2.5, 3.5, 3.0
SKY_REF, SKY_SCI, READ = 400.0, 800.0, 5.0


def moffat(fwhm, dx, dy):
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / BETA) - 1.0))
    return (1.0 + (dx * dx + dy * dy) / alpha**2) ** (-BETA)


def make_pair(n, seed=20160127):
    """Synthetic pair (electrons, sky subtracted) and its truth, NumPy only."""
    rng = np.random.default_rng([seed, n])
    h = math.ceil(4 * max(FWHM_REF, FWHM_SCI))
    g = np.arange(-h, h + 1)

    def stamp(fwhm):
        p = moffat(fwhm, g[None, :].astype(float), g[:, None].astype(float))
        return p / p.sum()

    def render(x, y, flux, fwhm):
        img = np.zeros(n * n)
        norm = moffat(fwhm, g[None, :].astype(float), g[:, None].astype(float)).sum()
        for s in range(0, len(x), 2048):
            sl = slice(s, s + 2048)
            ix, iy = np.rint(x[sl]).astype(int), np.rint(y[sl]).astype(int)
            vals = moffat(fwhm, g[None, None, :] - (x[sl] - ix)[:, None, None],
                          g[None, :, None] - (y[sl] - iy)[:, None, None])
            vals *= (flux[sl] / norm)[:, None, None]
            cols = np.broadcast_to(ix[:, None, None] + g[None, None, :], vals.shape)
            rows = np.broadcast_to(iy[:, None, None] + g[None, :, None], vals.shape)
            ok = (cols >= 0) & (cols < n) & (rows >= 0) & (rows < n)
            img += np.bincount(rows[ok] * n + cols[ok], weights=vals[ok], minlength=n * n)
        return img.reshape(n, n)

    n_stars = round(500 * n * n / 1e6)
    x, y = rng.uniform(-h, n + h, n_stars), rng.uniform(-h, n + h, n_stars)
    a, b = 500.0**-1.5, 3e5**-1.5
    flux = (a - rng.uniform(0, 1, n_stars) * (a - b)) ** (-1 / 1.5)
    stars_ref, stars_sci = render(x, y, flux, FWHM_REF), render(x, y, flux, FWHM_SCI)
    psf_ref, psf_sci = stamp(FWHM_REF), stamp(FWHM_SCI)
    sig_ref, sig_sci = math.sqrt(SKY_REF + READ**2), math.sqrt(SKY_SCI + READ**2)
    pr = np.abs(np.fft.fft2(psf_ref, s=(256, 256))) ** 2
    pn = np.abs(np.fft.fft2(psf_sci, s=(256, 256))) ** 2
    snr1 = math.sqrt(np.sum(pn * pr / (sig_sci**2 * pr + sig_ref**2 * pn)) / 256**2)
    faint = (stars_ref < 0.05 * sig_ref) & (stars_sci < 0.05 * sig_sci)
    margin, tx, ty = max(48, 3 * h), [], []
    while len(tx) < 12:
        cx, cy = rng.uniform(margin, n - margin, 2)
        ix, iy = round(cx), round(cy)
        if faint[iy - 8:iy + 9, ix - 8:ix + 9].all() and all(
                (cx - px) ** 2 + (cy - py) ** 2 > 1600 for px, py in zip(tx, ty, strict=True)):
            tx.append(cx)
            ty.append(cy)
    snr = np.array([(5.0, 10.0, 20.0)[i % 3] for i in range(12)])
    trans = render(np.array(tx), np.array(ty), snr / snr1, FWHM_SCI)
    ref = rng.poisson(SKY_REF + stars_ref) - SKY_REF + rng.normal(0, READ, (n, n))
    sci = rng.poisson(SKY_SCI + stars_sci + trans) - SKY_SCI + rng.normal(0, READ, (n, n))
    near = np.zeros((n, n), bool)
    for px, py in zip(tx, ty, strict=True):
        iy, ix = round(py), round(px)
        near[max(iy - 12, 0):iy + 13, max(ix - 12, 0):ix + 13] = True
    inner = np.zeros((n, n), bool)
    inner[32:-32, 32:-32] = True
    return {"ref": ref, "sci": sci, "psf_ref": psf_ref, "psf_sci": psf_sci, "sig_ref": sig_ref,
            "sig_sci": sig_sci, "tx": np.array(tx), "ty": np.array(ty), "snr": snr,
            "source_free": faint & ~near & inner}


def timed(fn, sync, repeats):
    fn()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def fft_floor(xp, n, dtype, sync, repeats):
    """Median time of 6 forward + 5 inverse n x n real FFTs (the harness' scorr11)."""
    x = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    xf = xp.fft.rfft2(x)

    def block():
        for _ in range(6):
            xp.fft.rfft2(x)
        for _ in range(5):
            xp.fft.irfft2(xf, s=(n, n))

    return timed(block, sync, repeats)[0]


def quality(scorr, pair):
    bg = scorr[pair["source_free"]]
    rec = np.array([scorr[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].max()
                    for x, y in zip(pair["tx"], pair["ty"], strict=True)])
    mad = 1.4826 * np.median(np.abs(bg - np.median(bg)))
    return {"std": float(bg.std()), "robust_std": float(mad), "mean": float(bg.mean()),
            "transient_ratio": float(np.median(rec / pair["snr"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=None, help="default 4096 (GPU), 512 (CPU)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--parity-size", type=int, default=1024)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    args = p.parse_args(argv)
    if args.device == "gpu" and not backend.HAS_CUPY:
        print("bench_zogy_gpu: CuPy with a GPU is not available (use --device cpu for a dry run)")
        return 1
    n = args.size or (4096 if args.device == "gpu" else 512)
    t0 = time.perf_counter()
    pair = make_pair(n)
    gen_s = time.perf_counter() - t0
    xp = backend.get_xp(backend.to_device(np.zeros(1), args.device))
    sync = (lambda: xp.cuda.get_current_stream().synchronize()) if xp is not np else (lambda: None)
    rows, report = [], {"size": n, "device": backend.device_name(xp), "generation_s": gen_s}
    floors = {dtype: fft_floor(xp, n, dtype, sync, args.repeats) for dtype in ("float32", "float64")}
    report["scorr11_floor_s"] = floors
    for dtype in ("float32", "float64"):
        sci = backend.to_device(pair["sci"], args.device, dtype=dtype)
        ref = backend.to_device(pair["ref"], args.device, dtype=dtype)

        def run(sci=sci, ref=ref, dtype=dtype):
            return zogy(sci, ref, pair["psf_sci"], pair["psf_ref"], sigma_science=pair["sig_sci"],
                        sigma_reference=pair["sig_ref"], dtype=dtype)

        if xp is not np:
            xp.get_default_memory_pool().free_all_blocks()
        med, best = timed(run, sync, args.repeats)
        q = quality(backend.to_numpy(run().score_corr).astype(np.float64), pair)
        pool = xp.get_default_memory_pool().total_bytes() / 2**20 if xp is not np else float("nan")
        rows.append((dtype, med, best, floors[dtype], med / floors[dtype],
                     med / floors["float64"], pool, q))
        report[dtype] = {"median_s": med, "min_s": best, "x_floor_same_dtype": med / floors[dtype],
                         "x_floor_float64": med / floors["float64"], "pool_mib": pool, **q}
        del sci, ref

    # Parity: the same crop through CPU (NumPy) and this device, both precisions.
    m = min(args.parity_size, n)
    crop = (slice(0, m), slice(0, m))
    parity = {}
    for dtype, tol in (("float64", 1e-9), ("float32", 1e-3)):
        kw = {"sigma_science": pair["sig_sci"], "sigma_reference": pair["sig_ref"],
              "sigma_astrometric": 0.1, "dtype": dtype}
        cpu = zogy(pair["sci"][crop], pair["ref"][crop], pair["psf_sci"], pair["psf_ref"], **kw)
        dev = zogy(backend.to_device(pair["sci"][crop], args.device),
                   backend.to_device(pair["ref"][crop], args.device), pair["psf_sci"],
                   pair["psf_ref"], **kw)
        diff = {k: float(np.abs(backend.to_numpy(getattr(dev, k)) - getattr(cpu, k)).max())
                for k in ("difference", "score_corr")}
        parity[dtype] = {**diff, "ok": all(v <= tol for v in diff.values()), "tolerance": tol}
    report["parity"] = parity

    print(f"## ZOGY {n}x{n} on {report['device']} (pair generated in {gen_s:.1f} s)\n")
    print("| dtype | zogy median ms | min ms | scorr11 FFT floor ms (same dtype) | x floor "
          "| x float64 floor | pool MiB | S_corr std (src-free) | robust std | mean "
          "| transient ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, med, best, floor, ratio, ratio64, pool, q in rows:
        print(f"| {dtype} | {1e3 * med:.2f} | {1e3 * best:.2f} | {1e3 * floor:.2f} | {ratio:.2f} "
              f"| {ratio64:.2f} | {pool:.0f} | {q['std']:.3f} | {q['robust_std']:.3f} "
              f"| {q['mean']:.3f} | {q['transient_ratio']:.3f} |")
    print(f"\nCPU vs {args.device} parity on a {m}x{m} crop (max |diff|, sigma_astrometric=0.1):")
    for dtype, r in parity.items():
        print(f"  {dtype}: D {r['difference']:.2e}, S_corr {r['score_corr']:.2e} "
              f"(tol {r['tolerance']:g}) -> {'OK' if r['ok'] else 'MISMATCH'}")
    print("\nJSON " + json.dumps(report))
    return 0 if all(r["ok"] for r in parity.values()) else 2


if __name__ == "__main__":
    sys.exit(main())

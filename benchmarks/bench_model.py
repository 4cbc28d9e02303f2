"""Benchmarks of the U-Net (prints a report).

CPU (default), on the 2-core workspace machine::

    python benchmarks/bench_model.py            # inference on 2048², training throughput,
                                                # and the estimate for the `full` dataset
GPU::

    python benchmarks/bench_model.py --gpu      # 2048² images per second, bf16

Targets: a 2048×2048 four-channel image in ≤ 2 s on 2 CPU cores with the
default model and ``predict_image`` defaults; ≥ 100 such images per second on
one GPU. Weights are random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from astrid.manifest import Manifest, write_fits
from astrid.model import (
    CHANNELS,
    Augmentation,
    ModelConfig,
    Normalisation,
    SegmentationLoss,
    TrainedModel,
    UNetSpec,
    build_unet,
    count_parameters,
    predict_image,
)
from astrid.model.data import TileDataset, TileSampler, load_split

FULL_PAIRS, FULL_SIZE = 1200, 256  # the `full` recipe of astrid.simulate.DATASETS
TRAIN_SHARE, VALID_SHARE = 0.7, 0.15
DEFAULTS = {"epochs": 20, "tiles_per_epoch": 2048, "tile_size": 64, "batch_size": 32,
            "max_valid_tiles": 2048}  # train_unet's defaults


def sky(n_images: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Survey-like stacks (science, reference, D, S_corr): sky, noise, stars, a few transients."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_images, 4, size, size), np.float32)
    for k in range(n_images):
        stars = np.zeros((size, size), np.float32)
        idx = rng.integers(0, size, (size * size // 2000, 2))
        stars[idx[:, 0], idx[:, 1]] = rng.pareto(1.5, len(idx)).astype(np.float32) * 500
        ref = 300 + 8 * rng.standard_normal((size, size), dtype=np.float32) + stars
        sci = 300 + 10 * rng.standard_normal((size, size), dtype=np.float32) + stars
        diff = sci - ref
        out[k] = np.stack([sci, ref, diff, diff / 12.8])
    return out


def model_of(size: str) -> TrainedModel:
    spec = UNetSpec.named(size, n_channels=len(CHANNELS))
    torch.manual_seed(0)
    return TrainedModel(build_unet(len(CHANNELS), spec=spec).eval(), ModelConfig(spec, CHANNELS))


def timed(fn, *, repeat: int, warmup: int = 1, sync=None) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return times


def line(label: str, times: list[float], unit: str = "s") -> str:
    return f"{label}: min {min(times):.3f} {unit}, median {statistics.median(times):.3f} {unit}"


def train_step_rate(net, *, batch: int, tile: int, device: torch.device, steps: int,
                    dtype: torch.dtype | None = None) -> float:
    """Tiles per second of forward + backward + AdamW on random tiles (the model's share)."""
    net = net.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss(torch.ones(9)).to(device)
    x = torch.randn(batch, 4, tile, tile, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 9, (batch, tile, tile), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    times = timed(step, repeat=steps, warmup=2, sync=sync)
    return batch / statistics.median(times)


def eval_rate(net, *, batch: int, tile: int, device: torch.device, steps: int) -> float:
    """Tiles per second of the validation forward pass (float32, as fastai runs it on a CPU)."""
    net = net.to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 4, tile, tile, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        times = timed(lambda: net(x), repeat=steps)
    return batch / statistics.median(times)


def write_dataset(root: Path, n: int, size: int) -> Manifest:
    manifest = Manifest(root=root, name="bench")
    stacks = sky(n, size, seed=1)
    rng = np.random.default_rng(2)
    for k in range(n):
        sample = {"id": f"s{k}", "split": "train"}
        labels = (rng.random((size, size)) < 0.002).astype(np.uint8) * 4
        for key, image in zip((*CHANNELS, "labels"), (*stacks[k], labels), strict=True):
            write_fits(root / f"s{k}_{key}.fits", image)
            manifest.add_product(sample, key, f"s{k}_{key}.fits")
        manifest.samples.append(sample)
    manifest.save()
    return manifest


def cpu(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f} (other work on this machine skews timings)")
    model = model_of(args.size)
    print(f"model {args.size!r}: widths {model.config.spec.widths}, "
          f"{count_parameters(model.net):,} parameters")

    image = sky(1, 2048)[0]
    times = timed(lambda: predict_image(model, image), repeat=args.repeat)
    print(line("inference 2048x2048x4, predict_image defaults (tile 512, overlap 64, bf16 where "
               "native)", times), "| target <= 2 s:", "met" if min(times) <= 2 else "NOT met")
    times = timed(lambda: predict_image(model, image, amp=False), repeat=max(1, args.repeat // 2))
    print(line("  same in float32", times))
    times = timed(lambda: predict_image(model, image, mc_samples=4), repeat=1)
    print(line("  with 4 Monte-Carlo dropout passes", times))

    net = build_unet(4, 9, size=args.size)
    t, b = DEFAULTS["tile_size"], DEFAULTS["batch_size"]
    step = train_step_rate(net, batch=b, tile=t, device=torch.device("cpu"), steps=args.steps)
    evals = eval_rate(net, batch=2 * b, tile=t, device=torch.device("cpu"), steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = write_dataset(Path(tmp), 8, FULL_SIZE)
        write_time = time.perf_counter() - start
        start = time.perf_counter()
        pool = load_split(manifest, "train", channels=CHANNELS, normalisation=Normalisation())
        load_per_pair = (time.perf_counter() - start) / len(pool)
    sampler = TileSampler([pool], pool_weights=[1], tile_size=t, empty_fraction=0.25)
    data = TileDataset(sampler, length=10**6, channels=CHANNELS, normalisation=Normalisation(),
                       augmentation=Augmentation(), seed=0)
    n = 256
    start = time.perf_counter()
    for i in range(n):
        data[i]
    data_rate = n / (time.perf_counter() - start)
    combined = 1 / (1 / step + 1 / data_rate)
    print(f"training throughput ({args.size}, {t}x{t} tiles, batch {b}, float32): "
          f"model {step:.0f} tiles/s, data pipeline with augmentation {data_rate:.0f} tiles/s, "
          f"together ~{combined:.0f} tiles/s; validation forward {evals:.0f} tiles/s")

    n_valid_tiles = min(int(FULL_PAIRS * VALID_SHARE) * (FULL_SIZE // t) ** 2,
                        DEFAULTS["max_valid_tiles"])
    epoch = DEFAULTS["tiles_per_epoch"] / combined + n_valid_tiles / evals
    loading = FULL_PAIRS * (TRAIN_SHARE + VALID_SHARE) * load_per_pair
    calibration = n_valid_tiles / evals + 2.0
    total = loading + DEFAULTS["epochs"] * epoch + calibration
    print(f"estimate for `full` ({FULL_PAIRS} pairs of {FULL_SIZE}², defaults "
          f"{DEFAULTS['epochs']} epochs x {DEFAULTS['tiles_per_epoch']} tiles, {n_valid_tiles} "
          f"validation tiles): loading {loading:.0f} s ({1e3 * load_per_pair:.0f} ms/pair), "
          f"{epoch:.1f} s/epoch, calibration {calibration:.0f} s -> about {total / 60:.1f} min "
          f"({'fits' if total <= 20 * 60 else 'does NOT fit'} in 20 min; early stopping only "
          f"shortens it)  [dataset written in {write_time:.1f} s]")


def gpu_model(size: str, args: argparse.Namespace) -> None:
    dev, sync = torch.device("cuda"), torch.cuda.synchronize
    model = model_of(size)
    print(f"model {size!r}: {count_parameters(model.net):,} parameters")
    images = torch.from_numpy(sky(args.batch, 2048)).to(dev)

    def resident(per_call: int) -> None:
        predict_image(model, images[:per_call], tile_size=2048, overlap=0, batch_size=per_call)

    for per_call in sorted({1, args.batch // 2, args.batch} - {0}):
        times = timed(lambda n=per_call: resident(n), repeat=args.repeat, warmup=2, sync=sync)
        rate = per_call / statistics.median(times)
        verdict = ("  | target >= 100: " + ("met" if rate >= 100 else "NOT met")
                   if per_call == args.batch else "")
        print(f"  {per_call:3d} images per call resident on the GPU (bf16, whole-image tiles): "
              f"{rate:7.1f} images/s{verdict}")
    if size == args.size:
        start = time.perf_counter()
        predict_image(model, images, tile_size=2048, overlap=0, batch_size=args.batch, compile=True)
        sync()
        first = time.perf_counter() - start
        times = timed(lambda: predict_image(model, images, tile_size=2048, overlap=0,
                                            batch_size=args.batch, compile=True),
                      repeat=args.repeat, sync=sync)
        rate = args.batch / statistics.median(times)
        print(f"  {args.batch:3d} images per call, compile=True (first call {first:.0f} s): "
              f"{rate:7.1f} images/s  | target >= 100: {'met' if rate >= 100 else 'NOT met'}")
    times = timed(lambda: predict_image(model, images, batch_size=16), repeat=args.repeat,
                  sync=sync)
    print(f"  {args.batch} images, default 512-px tiles with overlap 64: "
          f"{args.batch / statistics.median(times):.1f} images/s")
    host = sky(1, 2048)[0]
    times = timed(lambda: predict_image(model, host, tile_size=2048, overlap=0, device="cuda"),
                  repeat=args.repeat, sync=sync)
    print(f"  one NumPy image in, NumPy out (host copies included): "
          f"{1 / statistics.median(times):.1f} images/s")
    rate = train_step_rate(build_unet(4, 9, size=size), batch=256, tile=64, device=dev,
                           steps=args.steps, dtype=torch.bfloat16)
    print(f"  training step, 64x64 tiles, batch 256, bf16 autocast: {rate:,.0f} tiles/s")


def gpu(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA GPU")
    torch.backends.cudnn.benchmark = True
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for size in dict.fromkeys([args.size, "base"]):
        gpu_model(size, args)
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPU throughput instead of the CPU run")
    parser.add_argument("--size", default="small", help="model size (default: the default model)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (CPU run)")
    parser.add_argument("--batch", type=int, default=16, help="images per call (GPU run)")
    args = parser.parse_args()
    gpu(args) if args.gpu else cpu(args)


if __name__ == "__main__":
    main()

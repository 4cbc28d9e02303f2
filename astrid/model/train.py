"""Training: manifest in, calibrated model bundle out.

:func:`train_unet` reads the train and val splits into memory, trains the
U-Net with fastai's one-cycle schedule (best epoch kept by
``SaveModelCallback``, early stopping on the validation metric), fits the
calibration temperature on the validation split and writes the bundle,
``history.csv`` and ``train_summary.json`` to the output folder. Mixed
precision is used only on a GPU; the same call runs unchanged on a CPU.
With ``init_model`` it fine-tunes an existing model instead of starting
from random weights (:func:`astrid.realdata.finetune_on_alerts` uses this).
With ``processes=N``, or inside a ``torchrun``/``accelerate launch``, it
trains data-parallel over several processes (:mod:`astrid.model.distributed`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astrid.classes import CLASS_NAMES
from astrid.manifest import Manifest, ManifestError, atomic_write
from astrid.model._torch import (
    Callback,
    DataLoader,
    DataLoaders,
    EarlyStoppingCallback,
    Learner,
    ProgressCallback,
    SaveModelCallback,
    resolve_torch_device,
    set_seed,
)
from astrid.model.bundle import ModelConfig, TrainedModel, load_model, save_model
from astrid.model.calibration import Calibration, fit_temperature
from astrid.model.data import (
    CHANNELS,
    IGNORE_INDEX,
    Augmentation,
    GridTiles,
    Normalisation,
    TileDataset,
    TileSampler,
    as_manifest,
    class_frequencies,
    load_split,
    parse_channels,
)
from astrid.model.distributed import (
    data_parallel,
    distrib_barrier,
    distributed_env,
    rank_seed,
    spawn_training,
)
from astrid.model.net import MODEL_SIZES, MacroDice, SegmentationLoss, UNetSpec, build_unet

__all__ = ["LOSSES", "TrainResult", "class_weights_from_frequencies", "train_unet"]

log = logging.getLogger(__name__)

LOSSES = ("ce+dice", "focal+dice", "ce", "focal")
"""Loss choices of :func:`train_unet` (all class-weighted unless ``class_weights=None``)."""


@dataclass
class TrainResult:
    """What :func:`train_unet` produced.

    Attributes
    ----------
    model : TrainedModel
        The best-epoch network with its config (temperature included).
    learner : fastai.learner.Learner or None
        The fastai learner (for further fitting or inspection); ``None``
        after ``processes > 1``, where it lived in a spawned process.
    history : list of dict
        One row per epoch: ``epoch``, ``train_loss``, ``valid_loss``,
        ``macro_dice``, ``seconds``.
    calibration : Calibration or None
        Temperature fit and reliability data on the validation split.
    bundle : Path
        The saved model bundle folder.
    paths : dict of str to Path
        ``bundle``, ``weights``, ``config``, ``history``, ``summary``,
        ``checkpoint``.
    params : dict
        Flat record of the run's settings (dataset hash, channels,
        architecture, loss, epochs, learning rate...), ready for tracking.
    best_epoch : int
        Epoch whose weights were kept.
    best_metric : float
        Its validation ``macro_dice``.
    manifest : Manifest
        The (synthetic) training manifest.
    seconds : float
        Wall-clock time of the whole call.
    summary : dict
        What ``train_summary.json`` holds.
    rank : int
        Process rank in data-parallel training (0 otherwise). Only rank 0
        writes the bundle and records, so log the run from rank 0 only.
    """

    model: TrainedModel
    learner: Any
    history: list[dict[str, float]]
    calibration: Calibration | None
    bundle: Path
    paths: dict[str, Path]
    params: dict[str, Any]
    best_epoch: int
    best_metric: float
    manifest: Manifest
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    rank: int = 0

    @property
    def temperature(self) -> float:
        """The calibration temperature (1.0 when not calibrated)."""
        return self.model.config.temperature


class _EpochTimes(Callback):
    """Records each epoch's wall-clock duration."""

    order = 60

    def before_fit(self) -> None:
        self.seconds: list[float] = []

    def before_epoch(self) -> None:
        self._start = time.perf_counter()

    def after_epoch(self) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _ChannelsLast(Callback):
    """Feeds batches in channels-last memory format (faster convolutions on CPU and GPU)."""

    order = 5

    def before_batch(self) -> None:
        self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) for x in self.xb)


def class_weights_from_frequencies(
    frequencies: Sequence[float], *, power: float = 0.5, max_weight: float = 50.0
) -> np.ndarray:
    """Cross-entropy weights ``(f_background / f_c) ** power``, capped; absent classes get 1.

    Examples
    --------
    >>> class_weights_from_frequencies([0.99, 0.0099, 0.0, 0.0001]).round(1).tolist()
    [1.0, 10.0, 1.0, 50.0]
    """
    f = np.asarray(frequencies, float)
    w = np.ones_like(f)
    seen = f > 0
    if seen.any():
        ref = f[0] if f[0] > 0 else f[seen].max()
        w[seen] = np.clip((ref / f[seen]) ** power, 1.0 / max_weight, max_weight)
    return w


def _collect_calibration_pixels(
    net: torch.nn.Module, dataset: GridTiles, *, device: torch.device, batch_size: int,
    max_pixels: int, seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (P, C) and labels (P,) of a random subset of labelled validation pixels."""
    rng = np.random.default_rng(seed)
    per_tile = max(1, max_pixels // max(len(dataset), 1))
    logits, labels = [], []
    net.eval()
    with torch.inference_mode():
        for b0 in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(b0, min(b0 + batch_size, len(dataset)))]
            xb = torch.stack([x for x, _ in items]).to(device)
            xb = xb.contiguous(memory_format=torch.channels_last)
            out = net(xb).as_subclass(torch.Tensor).float().cpu()
            for (_, y), z in zip(items, out, strict=True):
                flat_y = y.reshape(-1)
                valid = np.flatnonzero(flat_y.numpy() != IGNORE_INDEX)
                if valid.size > per_tile:
                    valid = np.sort(rng.choice(valid, per_tile, replace=False))
                idx = torch.from_numpy(valid)
                logits.append(z.reshape(z.shape[0], -1)[:, idx].T)
                labels.append(flat_y[idx])
    return torch.cat(logits), torch.cat(labels)


def _validate(
    *, tile_size: int, epochs: int, lr: float, batch_size: int, tiles_per_epoch: int,
    real_fraction: float, real_manifest: Any, loss: str, patience: int, monitor: str,
    spec: UNetSpec, processes: int,
) -> None:
    if epochs < 1 or batch_size < 1 or patience < 1 or processes < 1:
        msg = (f"epochs, batch_size, patience and processes must be >= 1, got {epochs}, {batch_size}, "
               f"{patience}, {processes}")
        raise ValueError(msg)
    if not (lr > 0 and math.isfinite(lr)):
        msg = f"lr must be a positive number, got {lr}"
        raise ValueError(msg)
    if tiles_per_epoch < batch_size * processes:
        msg = (f"tiles_per_epoch ({tiles_per_epoch}) must be at least batch_size ({batch_size}) "
               f"times the number of processes ({processes})")
        raise ValueError(msg)
    if tile_size < 2 * spec.multiple or tile_size % spec.multiple:
        msg = (f"tile_size must be a multiple of {spec.multiple} and at least "
               f"{2 * spec.multiple} for this model size, got {tile_size}")
        raise ValueError(msg)
    if not 0 <= real_fraction <= 1:
        msg = f"real_fraction must be in [0, 1], got {real_fraction}"
        raise ValueError(msg)
    if real_fraction > 0 and real_manifest is None:
        msg = "real_fraction > 0 needs real_manifest"
        raise ValueError(msg)
    if loss not in LOSSES:
        msg = f"loss must be one of {LOSSES}, got {loss!r}"
        raise ValueError(msg)
    if monitor not in {"macro_dice", "valid_loss"}:
        msg = f"monitor must be 'macro_dice' or 'valid_loss', got {monitor!r}"
        raise ValueError(msg)


def _survey(manifest: Manifest) -> str:
    surveys = sorted({str(s["survey"]) for s in manifest.samples if s.get("survey")})
    return "+".join(surveys) if surveys else "unknown"


def _init_settings(
    init_model: TrainedModel | str | os.PathLike, channels: str | Sequence[str] | None,
    normalisation: Normalisation | None,
) -> tuple[TrainedModel, str, tuple[str, ...], Normalisation, UNetSpec, str]:
    """Return the init model, its provenance, channels, normalisation, spec and size; check agreement."""
    if isinstance(init_model, str | os.PathLike):
        init, source = load_model(init_model), str(init_model)
    else:
        init = init_model
        source = str(init.config.training.get("dataset_hash", "in-memory"))
    config = init.config
    if channels is not None and parse_channels(channels) != config.channels:
        msg = (f"channels {parse_channels(channels)} disagree with init_model's channels "
               f"{config.channels}; leave channels out to fine-tune")
        raise ValueError(msg)
    if normalisation is not None and normalisation != config.normalisation:
        msg = (f"normalisation {normalisation} disagrees with init_model's {config.normalisation}; "
               "leave normalisation out to fine-tune")
        raise ValueError(msg)
    if tuple(config.classes) != CLASS_NAMES:
        msg = f"init_model predicts classes {config.classes}, training uses {CLASS_NAMES}"
        raise ValueError(msg)
    spec = config.spec
    size = next((k for k, v in MODEL_SIZES.items()
                 if tuple(v["widths"]) == spec.widths and v["last_cross"] == spec.last_cross), "custom")
    return init, source, config.channels, config.normalisation, spec, size


def train_unet(
    manifest: Manifest | str | os.PathLike,
    *,
    channels: str | Sequence[str] | None = None,
    tile_size: int = 64,
    epochs: int = 20,
    lr: float = 3e-3,
    model_size: str = "small",
    batch_size: int = 32,
    tiles_per_epoch: int = 2048,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    device: str = "auto",
    dropout: float = 0.1,
    loss: str = "ce+dice",
    dice_weight: float = 1.0,
    focal_gamma: float = 2.0,
    class_weights: str | Sequence[float] | None = "auto",
    empty_fraction: float = 0.25,
    augmentation: Augmentation | None = None,
    normalisation: Normalisation | None = None,
    real_manifest: Manifest | str | os.PathLike | None = None,
    real_fraction: float = 0.0,
    patience: int = 5,
    monitor: str = "macro_dice",
    weight_decay: float = 1e-2,
    max_valid_tiles: int = 2048,
    calibration_pixels: int = 1_000_000,
    nonfinite: str = "raise",
    progress: bool = True,
    init_model: TrainedModel | str | os.PathLike | None = None,
    processes: int = 1,
) -> TrainResult:
    """Train the U-Net on a dataset manifest and save a calibrated model bundle.

    Parameters
    ----------
    manifest : Manifest or path-like
        Dataset with ``train`` and ``val`` samples holding the input channels and ``labels``.
    channels : str or sequence of str, optional
        Input channels (names of :data:`~astrid.model.data.CHANNELS`, or
        comma-separated); default all of :data:`~astrid.model.data.CHANNELS`,
        or ``init_model``'s channels.
    tile_size : int
        Training tile side (a multiple of the model's down-sampling).
    epochs : int
        Most epochs (early stopping may end sooner).
    lr : float
        Peak learning rate of the one-cycle schedule.
    model_size : str
        A key of :data:`~astrid.model.net.MODEL_SIZES` (ignored with ``init_model``).
    batch_size : int
        Tiles per batch (per process in data-parallel training).
    tiles_per_epoch : int
        Training tiles drawn per epoch (by all processes together).
    seed : int
        Seeds weights, tile draws and augmentation (fastai ``set_seed``).
    output_dir : path-like, optional
        Folder for the bundle and records (default: a new temporary folder;
        required inside a ``torchrun``/``accelerate launch``, where all ranks
        share it).
    device : str
        ``"auto"`` (GPU when torch sees one), ``"cpu"`` or ``"cuda"``.
    dropout : float
        Spatial dropout probability (enables Monte-Carlo dropout; ignored
        with ``init_model``).
    loss : str
        One of :data:`LOSSES`.
    dice_weight, focal_gamma : float
        Weight of the Dice term; focusing parameter of the focal loss.
    class_weights : "auto", sequence of float or None
        Cross-entropy weights; ``"auto"`` derives them from the class
        frequencies in tiles drawn as in training.
    empty_fraction : float
        Share of random (mostly empty) tiles; the rest are centred on
        transients and artifacts, classes drawn uniformly.
    augmentation : Augmentation, optional
        On-the-fly augmentation (default ``Augmentation()``); pass
        ``Augmentation(flips=False, noise=0, artifacts=0)`` for none.
    normalisation : Normalisation, optional
        Input normalisation (default ``Normalisation()``, or ``init_model``'s).
    real_manifest : Manifest or path-like, optional
        A second (real) dataset, mixed in by ``real_fraction``.
    real_fraction : float
        Share of training tiles drawn from ``real_manifest`` (its val samples
        join the validation set).
    patience : int
        Epochs without improvement of ``monitor`` before stopping.
    monitor : {"macro_dice", "valid_loss"}
        Validation quantity for the best epoch and early stopping.
    weight_decay : float
        AdamW weight decay.
    max_valid_tiles : int
        Cap on validation tiles per epoch.
    calibration_pixels : int
        Validation pixels used to fit the temperature (0 skips calibration).
    nonfinite : {"raise", "mask"}
        Non-finite input pixels outside a sample's ``diff_mask``: error, or
        leave them out of the loss.
    progress : bool
        fastai progress bars and epoch table.
    init_model : TrainedModel or path-like, optional
        Fine-tune this model (or bundle folder, read with
        :func:`~astrid.model.load_model`): the network starts from its weights
        and keeps its architecture, channels and normalisation (``model_size``
        and ``dropout`` are ignored; ``channels`` and ``normalisation``, when
        given, must equal its own). The input model is left untouched;
        ``params["finetuned_from"]`` and the bundle's ``training`` record
        where it came from (the bundle path, or the init model's dataset hash).
    processes : int
        Train data-parallel in this many spawned processes (gloo on CPUs,
        one GPU each on GPUs; see :mod:`astrid.model.distributed`). Leave at
        1 inside ``torchrun``/``accelerate launch``: the launched processes
        are used then.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        For bad options, empty or inconsistent manifests, non-finite inputs,
        or ``channels``/``normalisation`` that disagree with ``init_model``.
    """
    options = {k: v for k, v in locals().items() if k not in {"manifest", "processes"}}
    start = time.perf_counter()
    launch = distributed_env()
    if processes > 1 and launch.distributed:
        msg = f"processes={processes} inside a launch of {launch.world_size} processes; leave processes=1"
        raise ValueError(msg)
    augmentation = Augmentation() if augmentation is None else augmentation
    init, finetuned_from = None, ""
    if init_model is not None:
        init, finetuned_from, channels, normalisation, spec, model_size = _init_settings(
            init_model, channels, normalisation)
        dropout = spec.dropout
    else:
        channels = parse_channels(CHANNELS if channels is None else channels)
        normalisation = Normalisation() if normalisation is None else normalisation
        spec = UNetSpec.named(model_size, n_channels=len(channels), n_classes=len(CLASS_NAMES),
                              dropout=dropout)
    _validate(tile_size=tile_size, epochs=epochs, lr=lr, batch_size=batch_size,
              tiles_per_epoch=tiles_per_epoch, real_fraction=real_fraction,
              real_manifest=real_manifest, loss=loss, patience=patience, monitor=monitor,
              spec=spec, processes=processes * launch.world_size)
    if processes > 1:
        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_train_"))
        return spawn_training(manifest, processes=processes, options={**options, "output_dir": out})
    if launch.distributed and output_dir is None:
        msg = "output_dir is required in data-parallel training: every process must share one folder"
        raise ValueError(msg)
    dev = resolve_torch_device(device)
    if launch.distributed and dev.type == "cuda":
        dev = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(dev)
    main = as_manifest(manifest)
    if len(main) == 0:
        msg = f"manifest {main.path} has no samples"
        raise ManifestError(msg)
    real = as_manifest(real_manifest) if real_manifest is not None else None
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_train_"))
    out.mkdir(parents=True, exist_ok=True)

    read = {"channels": channels, "normalisation": normalisation, "nonfinite": nonfinite}
    pools, weights = [], []
    if real_fraction < 1:
        pools.append(load_split(main, "train", **read))
        weights.append(1.0 - real_fraction)
    valid = load_split(main, "val", **read)
    if real is not None and real_fraction > 0:
        pools.append(load_split(real, "train", **read))
        weights.append(real_fraction)
        if real.split("val"):
            valid.extend(load_split(real, "val", **read))
    sampler = TileSampler(pools, pool_weights=weights, tile_size=tile_size,
                          empty_fraction=empty_fraction)
    train_ds = TileDataset(sampler, length=tiles_per_epoch, channels=channels,
                           normalisation=normalisation, augmentation=augmentation,
                           seed=rank_seed(seed, launch.rank))
    valid_ds = GridTiles(valid, tile_size=tile_size, channels=channels,
                         normalisation=normalisation, max_tiles=max_valid_tiles, seed=seed)
    frequencies = class_frequencies(train_ds, seed=seed + 1)
    if isinstance(class_weights, str):
        if class_weights != "auto":
            msg = f"class_weights must be 'auto', a sequence or None, got {class_weights!r}"
            raise ValueError(msg)
        weight = class_weights_from_frequencies(frequencies)
    elif class_weights is None:
        weight = None
    else:
        weight = np.asarray(class_weights, np.float32)
        if weight.shape != (len(CLASS_NAMES),) or np.any(weight <= 0):
            msg = f"class_weights must be {len(CLASS_NAMES)} positive numbers, got {class_weights}"
            raise ValueError(msg)
    loss_func = SegmentationLoss(
        weight, dice=dice_weight if "dice" in loss else 0.0,
        focal_gamma=focal_gamma if loss.startswith("focal") else 0.0,
    )

    set_seed(seed, reproducible=True)
    net = build_unet(len(channels), len(CLASS_NAMES), spec=spec)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    net = net.to(dev).to(memory_format=torch.channels_last)
    dls = DataLoaders(
        DataLoader(train_ds, bs=batch_size, shuffle=False, drop_last=True),
        DataLoader(valid_ds, bs=2 * batch_size, shuffle=False, drop_last=False),
        device=dev,
    )
    times = _EpochTimes()
    learn = Learner(dls, net, loss_func=loss_func, metrics=[MacroDice(len(CLASS_NAMES))],
                    path=out, model_dir="checkpoints", wd=weight_decay,
                    cbs=[_ChannelsLast(), times])
    if not progress or launch.rank:
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *args, **kwargs: None
    precision = "float32"
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            learn.to_bf16()
            precision = "bfloat16-mixed"
        else:
            learn.to_fp16()
            precision = "float16-mixed"
    comp = np.greater if monitor == "macro_dice" else np.less
    callbacks = [
        SaveModelCallback(monitor=monitor, comp=comp, fname="best", with_opt=False),
        EarlyStoppingCallback(monitor=monitor, comp=comp, patience=patience),
    ]
    parallel = data_parallel(learn, cpu=dev.type == "cpu") if launch.distributed else nullcontext()
    with warnings.catch_warnings(), parallel:
        # fastai's checkpoint loader touches numpy.core, deprecated in NumPy 2
        warnings.filterwarnings("ignore", message=r"numpy\.core", category=DeprecationWarning)
        learn.fit_one_cycle(epochs, lr_max=lr, cbs=callbacks)
    if dev.type == "cuda":
        learn.to_fp32()

    names = [n for n in learn.recorder.metric_names[1:] if n != "time"]
    history = []
    for epoch, values in enumerate(learn.recorder.values):
        row = {"epoch": epoch, **{n: float(v) for n, v in zip(names, values, strict=False)}}
        if epoch < len(times.seconds):
            row["seconds"] = round(times.seconds[epoch], 3)
        history.append(row)
    scores = np.array([row.get(monitor, np.nan) for row in history], float)
    best_epoch = int(np.nanargmax(scores) if monitor == "macro_dice" else np.nanargmin(scores))
    best_metric = float(history[best_epoch].get("macro_dice", math.nan))

    calibration = None
    temperature = 1.0
    if calibration_pixels > 0:
        z, y = _collect_calibration_pixels(net, valid_ds, device=dev, batch_size=2 * batch_size,
                                           max_pixels=calibration_pixels, seed=seed)
        fit = fit_temperature(z, y)
        temperature = fit.temperature
        keep = np.random.default_rng(seed).permutation(y.numel())[:100_000]
        z, y = z[keep], y[keep]
        before = torch.softmax(z, 1)
        calibration = Calibration(
            fit=fit,
            confidence_before=before.max(1).values.numpy(),
            confidence_after=torch.softmax(z / temperature, 1).max(1).values.numpy(),
            correct=(before.argmax(1) == y).numpy(),
        )

    params = {
        "dataset_name": main.name,
        "dataset_hash": main.content_hash(),
        "dataset_kind": main.kind,
        "survey": _survey(main),
        "real_dataset_hash": real.content_hash() if real is not None else "",
        "real_fraction": float(real_fraction),
        "synthetic_real_ratio": f"{1 - real_fraction:g}:{real_fraction:g}",
        "n_train_images": sum(len(p) for p in pools),
        "n_valid_images": len(valid),
        "n_valid_tiles": len(valid_ds),
        "channels": ",".join(channels),
        "tile_size": tile_size,
        "model_size": model_size,
        "architecture": "fastai.DynamicUnet",
        "widths": ",".join(str(w) for w in spec.widths),
        "last_cross": spec.last_cross,
        "dropout": dropout,
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "loss": loss_func.name,
        "class_weights": ",".join(f"{w:.3g}" for w in (weight if weight is not None else [])),
        "epochs": epochs,
        "epochs_run": len(history),
        "lr": lr,
        "batch_size": batch_size,
        "tiles_per_epoch": tiles_per_epoch,
        "empty_fraction": empty_fraction,
        "weight_decay": weight_decay,
        "monitor": monitor,
        "patience": patience,
        "seed": seed,
        "device": str(dev),
        "processes": launch.world_size,
        "precision": precision,
        **{f"augment_{k}": v for k, v in augmentation.to_dict().items()},
        **{f"norm_{k}": (",".join(v) if isinstance(v, list) else v)
           for k, v in normalisation.to_dict().items()},
    }
    if init is not None:
        params["finetuned_from"] = finetuned_from
    training = {k: params[k] for k in ("dataset_name", "dataset_hash", "survey", "synthetic_real_ratio",
                                       "epochs_run", "lr", "tile_size", "loss", "seed")}
    training.update(best_epoch=best_epoch, best_macro_dice=best_metric)
    if init is not None:
        training.update(finetuned=True, finetuned_from=finetuned_from)
    config = ModelConfig(spec=spec, channels=channels, normalisation=normalisation,
                         temperature=temperature, tile_size=tile_size, training=training)
    model = TrainedModel(net, config)
    bundle = out / "model"
    if launch.rank == 0:  # every rank holds the same weights; one writes them
        save_model(model, bundle, overwrite=True)
    net.eval()

    paths = {
        "bundle": bundle,
        "weights": bundle / "weights.pt",
        "config": bundle / "config.json",
        "history": out / "history.csv",
        "summary": out / "train_summary.json",
        "checkpoint": out / "checkpoints" / "best.pth",
    }
    seconds = time.perf_counter() - start
    summary = {
        "best_epoch": best_epoch,
        "best_macro_dice": best_metric,
        "valid_loss": history[best_epoch].get("valid_loss"),
        "temperature": temperature,
        "nll_before": calibration.fit.nll_before if calibration else None,
        "nll_after": calibration.fit.nll_after if calibration else None,
        "seconds": round(seconds, 2),
        "params": params,
    }
    if launch.rank == 0:
        _write_history(paths["history"], history)
        with atomic_write(paths["summary"], "w", overwrite=True) as handle:
            json.dump(summary, handle, indent=1, default=str)
        log.info("trained %s U-Net: best macro Dice %.3f at epoch %d, T=%.3f, %.0f s",
                 model_size, best_metric, best_epoch, temperature, seconds)
    distrib_barrier()  # the bundle is on disk for every rank once this returns
    return TrainResult(model=model, learner=learn, history=history, calibration=calibration,
                       bundle=bundle, paths=paths, params=params, best_epoch=best_epoch,
                       best_metric=best_metric, manifest=main, seconds=seconds, summary=summary,
                       rank=launch.rank)


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_write(path, "w", overwrite=True) as handle:
        handle.write(",".join(keys) + "\n")
        for row in history:
            handle.write(",".join("" if row.get(k) is None else f"{row[k]}" for k in keys) + "\n")

"""Whole-image inference: tiled, batched, blended without seams, on CPU or GPU.

The image is normalised once (whole-image statistics), cut into overlapping
tiles, and the calibrated per-tile probabilities are blended with a window
that rises as sin² over the ``overlap`` pixels next to every interior tile
edge. Neighbouring windows sum to one across an overlap, so the blend is a
smooth partition of unity: no seams, and pixels far from tile edges get
exactly the single-tile prediction. Tiles shrink (to a multiple of the
network's down-sampling) so that they cover the image with little waste.

The device follows the data: NumPy in, NumPy out; a torch tensor in, torch
tensors out on the same device (no copy back to the host).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from astrid.manifest import Manifest
from astrid.model._torch import autocast_dtype, resolve_torch_device
from astrid.model.bundle import TrainedModel, load_model
from astrid.model.calibration import mc_dropout
from astrid.model.data import apply_normalisation, as_manifest, noise_stats, read_stack
from astrid.model.net import build_unet

__all__ = ["Prediction", "predict_image", "tile_layout"]


@dataclass
class Prediction:
    """Per-pixel output of :func:`predict_image`.

    Arrays are NumPy for NumPy input, torch tensors on the input's device for
    tensor input; a batched input (N, C, H, W) adds a leading N to each.

    Attributes
    ----------
    probabilities : array, (C, H, W) float32
        Calibrated class probabilities (Monte-Carlo mean with ``mc_samples``).
    uncertainty : array, (H, W) float32
        Predictive entropy of ``probabilities`` divided by log C, in [0, 1].
    class_map : array, (H, W) uint8
        Most probable class code.
    std : array, (H, W) float32, or None
        Monte-Carlo dropout standard deviation of the winning class's
        probability (``None`` without ``mc_samples``).
    mutual_information : array, (H, W) float32, or None
        Epistemic part of the entropy (BALD: entropy of the mean minus mean
        entropy over the passes), divided by log C (``None`` without ``mc_samples``).
    classes : tuple of str
        Class names in code order.
    """

    probabilities: Any
    uncertainty: Any
    class_map: Any
    std: Any = None
    mutual_information: Any = None
    classes: tuple[str, ...] = ()

    def probability_of(self, kinds: Sequence[str]) -> Any:
        """Return the summed probability of the named classes (e.g. all transient kinds).

        Raises
        ------
        ValueError
            For a name not among :attr:`classes`.
        """
        unknown = [k for k in kinds if k not in self.classes]
        if unknown:
            msg = f"unknown class name(s) {unknown}; classes are {self.classes}"
            raise ValueError(msg)
        codes = [self.classes.index(k) for k in kinds]
        return self.probabilities[..., codes, :, :].sum(-3)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_layout(size: int, *, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Tile starts and tile length covering ``size`` pixels with at least ``overlap`` overlap.

    The number of tiles is the least that ``tile`` allows; the tile length is
    then shrunk to the smallest multiple of ``multiple`` that still covers
    ``size`` with that overlap, and the starts are spread evenly. A length
    above ``size`` means the image is padded.

    Examples
    --------
    >>> tile_layout(2048, tile=1024, overlap=32, multiple=16)
    ([0, 672, 1344], 704)
    >>> tile_layout(40, tile=64, overlap=8, multiple=16)
    ([0], 48)
    """
    t = min(_ceil_to(tile, multiple), _ceil_to(size, multiple))
    if t >= size:
        return [0], t
    n = math.ceil((size - overlap) / (t - overlap))
    t = min(t, _ceil_to(math.ceil((size + (n - 1) * overlap) / n), multiple))
    n = max(n, math.ceil((size - overlap) / (t - overlap)))
    starts = np.rint(np.linspace(0, size - t, n)).astype(int).tolist()
    return starts, t


def _window(start: int, length: int, size: int, overlap: int) -> np.ndarray:
    """1-D blending weights of one tile: sin² tapers on edges shared with a neighbour."""
    w = np.ones(length, np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        if start > 0:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if start + length < size:
            w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _input_stack(image: Any, channels: Sequence[str], manifest: Any) -> tuple[torch.Tensor, bool]:
    """(N, C, H, W) float32 tensor of the input, and whether the input was a tensor."""
    if isinstance(image, Mapping):
        if all(isinstance(image.get(c), str | os.PathLike) for c in channels):
            if manifest is None:
                msg = "a manifest sample as image needs manifest= to read its files"
                raise ValueError(msg)
            return torch.from_numpy(read_stack(as_manifest(manifest), dict(image), channels))[None], False
        missing = [c for c in channels if c not in image]
        if missing:
            msg = f"image lacks channel(s) {missing}; the model takes {list(channels)}"
            raise ValueError(msg)
        arrays = [np.asarray(image[c], np.float32) for c in channels]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
            msg = f"channel images must be 2-D and equal in shape, got {[a.shape for a in arrays]}"
            raise ValueError(msg)
        return torch.from_numpy(np.stack(arrays))[None], False
    is_tensor = isinstance(image, torch.Tensor)
    x = image.as_subclass(torch.Tensor) if is_tensor else torch.from_numpy(np.asarray(image, np.float32))
    if x.ndim not in (3, 4):
        msg = f"image must be (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}"
        raise ValueError(msg)
    x = x[None] if x.ndim == 3 else x
    if x.shape[1] != len(channels):
        msg = (f"image has {x.shape[1]} channels but the model takes {len(channels)} "
               f"({', '.join(channels)})")
        raise ValueError(msg)
    return x.float(), is_tensor


def predict_image(
    model: TrainedModel | str | os.PathLike,
    image: Any,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    mc_samples: int = 0,
    amp: bool | None = None,
    manifest: Manifest | str | os.PathLike | None = None,
    nonfinite: str = "raise",
    seed: int = 0,
    compile: bool = False,
) -> Prediction:
    """Segment and classify whole images with calibrated probabilities.

    Parameters
    ----------
    model : TrainedModel or path-like
        A trained model or a bundle folder.
    image : array, torch.Tensor or mapping
        Raw (un-normalised) images in the model's channel order: (C, H, W)
        or a batch (N, C, H, W); or a mapping of channel name to 2-D array;
        or a manifest sample (then pass ``manifest``).
    tile_size : int
        Largest tile side; tiles shrink to cover the image with little waste.
    overlap : int
        Blending overlap between neighbouring tiles, in pixels; pixels farther
        than the network's receptive-field radius (26 px for ``tiny``, 54 for
        ``small``) from every interior tile edge get exactly the whole-image
        result, and an overlap near that radius leaves no visible seams.
    batch_size : int
        Tiles per forward pass.
    device : str or torch.device, optional
        ``None``: the input tensor's device, else ``"auto"`` (GPU when present).
    mc_samples : int
        Monte-Carlo dropout passes (0: one deterministic pass).
    amp : bool, optional
        Reduced precision (see :func:`~astrid.model._torch.autocast_dtype`);
        ``None`` chooses per device, ``False`` forces float32.
    manifest : Manifest or path-like, optional
        Needed when ``image`` is a manifest sample.
    nonfinite : {"raise", "fill"}
        Non-finite input pixels raise, or are set to the background level.
    seed : int
        Seed of the Monte-Carlo dropout masks.
    compile : bool
        Run the network through :func:`torch.compile` (worth it on a GPU for
        many images; the first call compiles for a while).

    Returns
    -------
    Prediction

    Raises
    ------
    ValueError
        For a wrong number of channels, non-finite pixels (``nonfinite="raise"``)
        or bad tiling options.

    Examples
    --------
    >>> from astrid.model.bundle import ModelConfig
    >>> from astrid.model.net import UNetSpec, build_unet
    >>> spec = UNetSpec.named("tiny", n_channels=2)
    >>> m = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("difference", "score")))
    >>> p = predict_image(m, np.random.default_rng(0).normal(size=(2, 40, 40)),
    ...                   tile_size=16, overlap=4)
    >>> p.probabilities.shape, p.class_map.dtype.name
    ((9, 40, 40), 'uint8')
    """
    if isinstance(model, str | os.PathLike):
        model = load_model(Path(model))
    config = model.config
    multiple = config.spec.multiple
    if tile_size < multiple or overlap < 0 or 2 * overlap >= tile_size:
        msg = (f"need tile_size >= {multiple} and 0 <= overlap < tile_size/2, got "
               f"tile_size={tile_size}, overlap={overlap}")
        raise ValueError(msg)
    if batch_size < 1 or mc_samples < 0:
        msg = f"need batch_size >= 1 and mc_samples >= 0, got {batch_size}, {mc_samples}"
        raise ValueError(msg)
    if nonfinite not in {"raise", "fill"}:
        msg = f"nonfinite must be 'raise' or 'fill', got {nonfinite!r}"
        raise ValueError(msg)
    stack, as_tensor = _input_stack(image, config.channels, manifest)
    dev = resolve_torch_device(stack.device if (device is None and as_tensor) else device)
    x = stack.to(dev)
    bad = ~torch.isfinite(x)
    if bad.any():
        if nonfinite == "raise":
            counts = bad.sum(dim=(0, 2, 3)).tolist()
            named = {c: int(n) for c, n in zip(config.channels, counts, strict=True) if n}
            msg = f"image has non-finite pixels {named}; pass nonfinite='fill' to zero them"
            raise ValueError(msg)
        x = torch.where(bad, torch.full_like(x, float("nan")), x)
    probs, extra = _predict(model, x, tile_size=tile_size, overlap=overlap,
                            batch_size=batch_size, mc_samples=mc_samples,
                            dtype=autocast_dtype(dev, amp), seed=seed, compile=compile)
    uncertainty, class_map, std, mi = _summaries(probs, extra)
    out = [probs, uncertainty, class_map, std, mi]
    if not (isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 4):
        out = [None if a is None else a[0] for a in out]
    if not as_tensor:
        out = [None if a is None else a.cpu().numpy() for a in out]
    return Prediction(*out, classes=config.classes)


def _summaries(probs: torch.Tensor, extra: tuple[torch.Tensor, torch.Tensor] | None, *,
               rows: int = 128) -> tuple[torch.Tensor, ...]:
    """Entropy, class map and MC summaries, a band of rows at a time (small temporaries)."""
    n, n_classes, h, w = probs.shape
    log_c = math.log(n_classes)
    uncertainty = torch.empty(n, h, w, device=probs.device)
    class_map = torch.empty(n, h, w, dtype=torch.uint8, device=probs.device)
    std = torch.empty_like(uncertainty) if extra is not None else None
    mi = torch.empty_like(uncertainty) if extra is not None else None
    for r0 in range(0, h, rows):
        band = slice(r0, min(r0 + rows, h))
        p = probs[:, :, band]
        uncertainty[:, band] = torch.special.entr(p).sum(1).div_(log_c)
        best = p.max(1).indices  # much faster than argmax over a strided dim on CPUs
        class_map[:, band] = best.to(torch.uint8)
        if extra is not None:
            second, mean_entropy = extra
            var = (second[:, :, band] - p * p).clamp_min_(0)
            std[:, band] = var.gather(1, best[:, None])[:, 0].sqrt_()
            mi[:, band] = (uncertainty[:, band] - mean_entropy[:, band] / log_c).clamp_min_(0)
    return uncertainty, class_map, std, mi


def _fold_batchnorm(net: nn.Module) -> None:
    """Fold every (Conv2d, BatchNorm2d) pair of a Sequential into the convolution (eval only)."""
    for module in net.modules():
        if not isinstance(module, nn.Sequential) or len(module) < 2:
            continue
        conv, bn = module[0], module[1]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True,
                          padding_mode=conv.padding_mode)
        fused.weight.copy_(conv.weight * factor[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * factor + bn.bias)
        module[0], module[1] = fused, nn.Identity()


def _inference_net(model: TrainedModel, device: torch.device, dtype: torch.dtype | None,
                   compile: bool = False) -> nn.Module:
    """Return an inference copy of the network, cached on the model until its weights change.

    Batch norm is folded into the convolutions and the temperature into the
    classifier; ReLUs work in place; weights are in ``dtype``, channels-last.
    """
    state = model.net.state_dict()
    key = (str(device), dtype, compile, float(model.config.temperature), id(model.net),
           tuple(t._version for t in state.values()))
    cached = model._cache.get("inference")
    if cached is not None and cached[0] == key:
        return cached[1]
    spec = model.config.spec
    with torch.no_grad():
        net = build_unet(spec.n_channels, spec.n_classes, spec=spec)
        net.load_state_dict({k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                             for k, v in state.items()})
        net.eval()
        _fold_batchnorm(net)
        classifier = net.layers[-2][0]
        classifier.weight.div_(model.config.temperature)
        classifier.bias.div_(model.config.temperature)
        net.layers[-1] = nn.Identity()  # fastai's ToTensorBase: plain tensors are faster
        for m in net.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True
        net.to(device, dtype=dtype or torch.float32, memory_format=torch.channels_last)
    if compile:
        net = torch.compile(net, dynamic=False)
    model._cache["inference"] = (key, net)
    return net


@contextmanager
def _inference_mode(net: torch.nn.Module, *, mc: bool, device: torch.device, seed: int):
    """Enter evaluation mode (dropout on for ``mc``), no autograd, seeded dropout; restore on exit."""
    training = net.training
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), torch.inference_mode():
        torch.manual_seed(seed)
        try:
            if mc:
                with mc_dropout(net):
                    yield
            else:
                net.eval()
                yield
        finally:
            net.train(training)


def _predict(
    model: TrainedModel, x: torch.Tensor, *, tile_size: int, overlap: int, batch_size: int,
    mc_samples: int, dtype: torch.dtype | None, seed: int, compile: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Blended probabilities (N, C, H, W) and, with MC, (E[p²], E[entropy])."""
    config = model.config
    norm = config.normalisation
    net = _inference_net(model, x.device, dtype, compile)
    dev = x.device
    n, _, h, w = x.shape
    stats = None
    if norm.scope == "image":  # whole-image background and noise, applied tile by tile
        stats = noise_stats(x, channels=config.channels, normalisation=norm)
    starts_y, th = tile_layout(h, tile=tile_size, overlap=overlap, multiple=config.spec.multiple)
    starts_x, tw = tile_layout(w, tile=tile_size, overlap=overlap, multiple=config.spec.multiple)
    hp, wp = max(h, th), max(w, tw)
    if (hp, wp) != (h, w):  # NaN padding becomes the background level after the stretch
        x = F.pad(x, (0, wp - w, 0, hp - h), value=float("nan"))
    win_y = _windows(starts_y, th, hp, overlap, dev)
    win_x = _windows(starts_x, tw, wp, overlap, dev)
    n_classes = config.spec.n_classes
    acc = torch.zeros(n, n_classes, hp, wp, device=dev)
    acc2 = torch.zeros_like(acc) if mc_samples else None
    acc_h = torch.zeros(n, hp, wp, device=dev) if mc_samples else None
    tiles = [(k, i, j) for k in range(n) for i in range(len(starts_y)) for j in range(len(starts_x))]
    passes = max(1, mc_samples)
    with _inference_mode(net, mc=mc_samples > 0, device=dev, seed=seed):
        for b0 in range(0, len(tiles), batch_size):
            batch = tiles[b0:b0 + batch_size]
            xb = torch.empty((len(batch), x.shape[1], th, tw), dtype=dtype or torch.float32,
                             device=dev).contiguous(memory_format=torch.channels_last)
            for m, (k, i, j) in enumerate(batch):
                t = x[k, :, starts_y[i]:starts_y[i] + th, starts_x[j]:starts_x[j] + tw]
                med, sigma = ((stats[0][k], stats[1][k]) if stats is not None else
                              noise_stats(t, channels=config.channels, normalisation=norm))
                xb[m] = apply_normalisation(t, med, sigma, normalisation=norm)
            sum_p = sum_p2 = sum_h = 0.0
            for _ in range(passes):
                p = torch.softmax(net(xb), dim=1, dtype=torch.float32)
                sum_p = p if passes == 1 else sum_p + p
                if mc_samples:
                    sum_p2 = sum_p2 + p * p
                    sum_h = sum_h + torch.special.entr(p).sum(1)
            for m, (k, i, j) in enumerate(batch):
                wt = win_y[i][:, None] * win_x[j][None, :]
                if passes > 1:
                    wt = wt / passes
                ys, xs = slice(starts_y[i], starts_y[i] + th), slice(starts_x[j], starts_x[j] + tw)
                acc[k, :, ys, xs].addcmul_(sum_p[m], wt)
                if mc_samples:
                    acc2[k, :, ys, xs].addcmul_(sum_p2[m], wt)
                    acc_h[k, ys, xs].addcmul_(sum_h[m], wt)
    probs = acc[:, :, :h, :w]
    if not mc_samples:
        return probs, None
    return probs, (acc2[:, :, :h, :w], acc_h[:, :h, :w])


def _windows(starts: list[int], length: int, size: int, overlap: int,
             device: torch.device) -> list[torch.Tensor]:
    """1-D blending windows of a row of tiles, divided by their sum (a partition of unity)."""
    wins = [_window(s, length, size, overlap) for s in starts]
    total = np.zeros(size)
    for s, win in zip(starts, wins, strict=True):
        total[s:s + length] += win
    return [torch.as_tensor(win / total[s:s + length], dtype=torch.float32, device=device)
            for s, win in zip(starts, wins, strict=True)]

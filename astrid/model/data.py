"""Model inputs: channel stacks, robust normalisation, tile sampling and augmentation.

A network input is a float32 stack of some of a sample's images
(``science``, ``reference``, ``difference``, ``score``). Each image is put in
units of its own noise (background median subtracted, divided by
1.4826·MAD; S_corr is already unit variance and is left as it is) and then
stretched (``a·asinh(x/a)``, or clipped), so faint sources stay linear and
bright stars do not dominate. ImageNet statistics are never used.

All images of a split are read into memory once; training tiles are cut from
them on the fly, oversampling tiles that hold transients and artifacts while
keeping a controlled share of random (mostly empty) tiles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from astrid.classes import CLASS_NAMES
from astrid.manifest import Manifest, ManifestError

__all__ = [
    "CHANNELS",
    "IGNORE_INDEX",
    "Augmentation",
    "GridTiles",
    "Normalisation",
    "SplitImages",
    "TileDataset",
    "TileSampler",
    "apply_normalisation",
    "as_manifest",
    "class_frequencies",
    "load_split",
    "noise_stats",
    "normalise",
    "parse_channels",
    "read_stack",
    "scale",
    "stretch",
]

CHANNELS: tuple[str, ...] = ("science", "reference", "difference", "score")
"""Sample keys that can be input channels, in the default order."""

IGNORE_INDEX = 255
"""Label of pixels left out of the loss and the metric (masked or non-finite inputs)."""

_MAD_TO_SIGMA = 1.4826


def parse_channels(channels: str | Sequence[str]) -> tuple[str, ...]:
    """Return input channel names as a tuple, validated.

    Parameters
    ----------
    channels : str or sequence of str
        Names from :data:`CHANNELS`, or one comma-separated string of them.

    Raises
    ------
    ValueError
        When empty, repeated or unknown.

    Examples
    --------
    >>> parse_channels("difference, score")
    ('difference', 'score')
    """
    names = [c.strip() for c in channels.split(",")] if isinstance(channels, str) else list(channels)
    names = [c for c in names if c]
    if not names:
        msg = "channels must name at least one of " + ", ".join(CHANNELS)
        raise ValueError(msg)
    unknown = [c for c in names if c not in CHANNELS]
    if unknown:
        msg = f"unknown channel(s) {unknown}; channels are {', '.join(CHANNELS)}"
        raise ValueError(msg)
    if len(set(names)) != len(names):
        msg = f"channels must not repeat, got {names}"
        raise ValueError(msg)
    return tuple(names)


@dataclass(frozen=True)
class Normalisation:
    """How raw images become network inputs.

    Attributes
    ----------
    scope : {"image", "tile"}
        Where background and noise are measured: on the whole image (default;
        the same on every tile, so tiled inference matches whole-image
        inference) or on each tile.
    stretch : {"asinh", "clip"}
        ``a·asinh(x/a)`` (linear within ``a`` sigma, logarithmic beyond) or a
        plain clip; both are clipped to ``±clip`` at the end.
    softening : float
        ``a`` of the asinh stretch, in noise sigmas.
    clip : float
        Final clip, in stretched units.
    unit_variance : tuple of str
        Channels already in noise units (S_corr): neither re-centred nor rescaled.
    max_stat_pixels : int
        Background and noise are measured on a regular sub-grid of at most this
        many pixels (exact enough, and fast on 2048² images).
    """

    scope: str = "image"
    stretch: str = "asinh"
    softening: float = 3.0
    clip: float = 50.0
    unit_variance: tuple[str, ...] = ("score",)
    max_stat_pixels: int = 1 << 16

    def __post_init__(self) -> None:
        if self.scope not in {"image", "tile"}:
            msg = f"Normalisation scope must be 'image' or 'tile', got {self.scope!r}"
            raise ValueError(msg)
        if self.stretch not in {"asinh", "clip"}:
            msg = f"Normalisation stretch must be 'asinh' or 'clip', got {self.stretch!r}"
            raise ValueError(msg)
        if not (self.softening > 0 and self.clip > 0 and self.max_stat_pixels > 0):
            msg = "Normalisation softening, clip and max_stat_pixels must be positive"
            raise ValueError(msg)
        object.__setattr__(self, "unit_variance", tuple(self.unit_variance))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        out = asdict(self)
        out["unit_variance"] = list(self.unit_variance)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Normalisation:
        """Build from :meth:`to_dict` output (unknown keys raise ``ValueError``)."""
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            msg = f"unknown normalisation setting(s) {sorted(unknown)}"
            raise ValueError(msg)
        return cls(**{**raw, "unit_variance": tuple(raw.get("unit_variance", ("score",)))})


def _robust_stats(x: torch.Tensor, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and 1.4826·MAD over the last two axes of ``x`` (..., H, W), ignoring NaNs."""
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    sub = x[..., ::step, ::step].reshape(-1, math.ceil(h / step) * math.ceil(w / step)).float()
    med = torch.nanmedian(sub, dim=1).values
    sigma = _MAD_TO_SIGMA * torch.nanmedian((sub - med[:, None]).abs(), dim=1).values
    bad = ~(sigma > 0) | ~torch.isfinite(sigma)
    if bad.any():  # flat or nearly empty channel: fall back to the std, then to 1
        std = torch.from_numpy(np.nan_to_num(np.nanstd(sub.cpu().numpy(), axis=1), nan=0.0))
        std = std.to(sigma.device, sigma.dtype)
        sigma = torch.where(bad, torch.where(std > 0, std, torch.ones_like(std)), sigma)
    return torch.nan_to_num(med, nan=0.0).reshape(lead), sigma.reshape(lead)


def noise_stats(
    stack: torch.Tensor, *, channels: Sequence[str], normalisation: Normalisation
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel background and noise of ``stack`` (C, H, W) or (N, C, H, W).

    Background is the median and noise 1.4826·MAD (on a sub-grid of at most
    ``normalisation.max_stat_pixels`` pixels, NaNs ignored); channels in
    ``normalisation.unit_variance`` get 0 and 1.

    Returns
    -------
    background, noise : torch.Tensor
        Shape (C,) or (N, C).
    """
    if stack.ndim not in (3, 4) or stack.shape[-3] != len(channels):
        msg = (f"stack must be (C, H, W) or (N, C, H, W) with C={len(channels)}, got shape "
               f"{tuple(stack.shape)}")
        raise ValueError(msg)
    med, sigma = _robust_stats(stack, normalisation.max_stat_pixels)
    keep = torch.tensor([c in normalisation.unit_variance for c in channels], device=stack.device)
    return (torch.where(keep, torch.zeros_like(med), med),
            torch.where(keep, torch.ones_like(sigma), sigma))


def scale(
    stack: torch.Tensor, *, channels: Sequence[str], normalisation: Normalisation
) -> torch.Tensor:
    """Put each channel of ``stack`` (C, H, W) in units of its noise (see :func:`noise_stats`).

    NaNs stay NaN.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = 100 + 5 * torch.randn(1, 16, 16, generator=g)
    >>> y = scale(x, channels=["science"], normalisation=Normalisation())
    >>> bool(abs(float(y.median())) < 0.1), bool(0.7 < float(y.std()) < 1.3)
    (True, True)
    """
    med, sigma = noise_stats(stack, channels=channels, normalisation=normalisation)
    return (stack.float() - med[..., None, None]) / sigma[..., None, None]


def _asinh(x: torch.Tensor) -> torch.Tensor:
    """Compute asinh in place where possible.

    On CPUs it goes through log1p, several times faster than ``torch.asinh``;
    on GPUs ``torch.asinh`` is one fused kernel.
    """
    if x.is_cuda:
        return x.asinh_()
    ax = x.abs().clamp_(max=1e18)  # keeps ax² finite in float32
    sq = ax * ax
    root = sq.add_(1.0).sqrt_()
    return torch.log1p(ax.add_(ax.mul(ax).div_(root.add_(1.0)))).copysign_(x)


def stretch(x: torch.Tensor, *, normalisation: Normalisation) -> torch.Tensor:
    """Compress noise-unit values ``x`` into the network's input range (NaN becomes 0).

    Examples
    --------
    >>> stretch(torch.tensor([0.0, 1.0, 1e6]), normalisation=Normalisation()).round().tolist()
    [0.0, 1.0, 40.0]
    """
    one = torch.ones((), device=x.device)
    return apply_normalisation(x, one * 0.0, one, normalisation=normalisation)


def apply_normalisation(
    x: torch.Tensor, background: torch.Tensor, noise: torch.Tensor, *,
    normalisation: Normalisation,
) -> torch.Tensor:
    """``stretch((x - background) / noise)`` per channel in a few fused steps; NaN becomes 0.

    ``background`` and ``noise`` are per channel, (C,), broadcast over (C, H, W).
    """
    factor = 1.0 / noise
    offset = -background * factor
    a = normalisation.softening if normalisation.stretch == "asinh" else 1.0
    if x.ndim >= 3 and factor.ndim == 1:
        factor, offset = factor[:, None, None], offset[:, None, None]
    y = torch.addcmul(offset / a, x.float(), factor / a)
    y = torch.nan_to_num_(y, nan=0.0, posinf=0.0, neginf=0.0)
    if normalisation.stretch == "asinh":
        y = _asinh(y).mul_(a)
    return y.clamp_(-normalisation.clip, normalisation.clip)


def normalise(
    stack: torch.Tensor, *, channels: Sequence[str], normalisation: Normalisation
) -> torch.Tensor:
    """:func:`scale` then :func:`stretch` one (C, H, W) stack."""
    return stretch(scale(stack, channels=channels, normalisation=normalisation),
                   normalisation=normalisation)


def as_manifest(manifest: Manifest | str | os.PathLike) -> Manifest:
    """Return ``manifest`` loaded when given as a path."""
    return manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)


def read_stack(manifest: Manifest, sample: dict[str, Any], channels: Sequence[str]) -> np.ndarray:
    """Read the (C, H, W) float32 input stack of one sample.

    Raises
    ------
    ManifestError
        When the sample lacks a channel, or its images differ in shape.
    """
    images = [manifest.read(sample, key, dtype=np.float32) for key in channels]
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or images[0].ndim != 2:
        got = {key: im.shape for key, im in zip(channels, images, strict=True)}
        msg = f"sample {sample.get('id')!r}: channel images must be 2-D and equal in shape, got {got}"
        raise ManifestError(msg)
    return np.stack(images)


@dataclass
class SplitImages:
    """All images of one split, in memory.

    Attributes
    ----------
    ids : list of str
        Sample ids.
    images : list of numpy.ndarray
        (C, H, W) float32: in noise units (``scope="image"``) or raw
        (``scope="tile"``); masked pixels are NaN.
    labels : list of numpy.ndarray
        (H, W) uint8 class codes, :data:`IGNORE_INDEX` where masked.
    """

    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: SplitImages) -> None:
        """Append the images of ``other``."""
        self.ids += other.ids
        self.images += other.images
        self.labels += other.labels


def load_split(
    manifest: Manifest,
    split: str,
    *,
    channels: Sequence[str],
    normalisation: Normalisation,
    nonfinite: str = "raise",
    n_classes: int = len(CLASS_NAMES),
) -> SplitImages:
    """Read every sample of one split into memory.

    Pixels flagged by the sample's ``diff_mask`` (1 = unusable), when it has
    one, are left out of the loss. Non-finite input pixels elsewhere raise,
    or with ``nonfinite="mask"`` are treated like masked ones.

    Raises
    ------
    ManifestError
        When the split is empty, a sample lacks a product, or images and
        labels disagree in shape.
    ValueError
        For non-finite pixels (``nonfinite="raise"``) or unknown class codes.
    """
    if nonfinite not in {"raise", "mask"}:
        msg = f"nonfinite must be 'raise' or 'mask', got {nonfinite!r}"
        raise ValueError(msg)
    samples = manifest.split(split)
    if not samples:
        msg = f"manifest {manifest.path} has no {split!r} samples ({len(manifest)} samples in all)"
        raise ManifestError(msg)
    out = SplitImages()
    for sample in samples:
        stack = read_stack(manifest, sample, channels)
        labels = manifest.read(sample, "labels")
        sid = sample["id"]
        if labels.shape != stack.shape[1:]:
            msg = f"sample {sid!r}: labels {labels.shape} and images {stack.shape[1:]} differ"
            raise ManifestError(msg)
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
            msg = (f"sample {sid!r}: labels must be integer class codes 0..{n_classes - 1}, got "
                   f"{labels.dtype} in [{labels.min()}, {labels.max()}]")
            raise ValueError(msg)
        labels = labels.astype(np.uint8)
        masked = np.zeros(labels.shape, bool)
        if "diff_mask" in sample:
            masked = manifest.read(sample, "diff_mask").astype(bool)
        bad = ~np.isfinite(stack)
        loose = bad & ~masked[None]
        if loose.any() and nonfinite == "raise":
            counts = {c: int(n) for c, n in zip(channels, loose.sum(axis=(1, 2)), strict=True) if n}
            msg = (f"sample {sid!r} has non-finite input pixels outside its diff_mask: {counts}; "
                   "pass nonfinite='mask' to leave them out")
            raise ValueError(msg)
        masked |= bad.any(axis=0)
        stack[:, masked] = np.nan
        labels[masked] = IGNORE_INDEX
        if normalisation.scope == "image":
            stack = scale(torch.from_numpy(stack), channels=channels,
                          normalisation=normalisation).numpy()
        out.ids.append(sid)
        out.images.append(np.ascontiguousarray(stack, dtype=np.float32))
        out.labels.append(labels)
    return out


@dataclass(frozen=True)
class Augmentation:
    """On-the-fly augmentation of training tiles (through :mod:`astrid.simulate.augment`).

    Attributes
    ----------
    flips : bool
        Random flips and 90° rotations (the 8 symmetries of the square).
    noise : float
        Maximum extra Gaussian noise, in units of the image noise; a tile gets
        ``s ~ U(0, noise)`` and is rescaled by ``1/sqrt(1+s²)`` so its noise
        stays unit while its sources get fainter.
    artifacts : float
        Probability that a tile gets 1-2 injected cosmic rays and 0-1 hot
        pixels (labelled as such) in its single-epoch channels.
    electrons_per_sigma : float
        Pixel noise in electrons assumed when converting the simulator's
        artifact charges into noise units.
    """

    flips: bool = True
    noise: float = 0.3
    artifacts: float = 0.2
    electrons_per_sigma: float = 20.0

    def __post_init__(self) -> None:
        if self.noise < 0 or not 0 <= self.artifacts <= 1 or not self.electrons_per_sigma > 0:
            msg = (f"Augmentation needs noise >= 0, artifacts in [0, 1] and "
                   f"electrons_per_sigma > 0, got {self}")
            raise ValueError(msg)

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return self.flips or self.noise > 0 or self.artifacts > 0

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return asdict(self)


# How an artifact of the science epoch shows in each channel, in that channel's noise units:
# fully in the science image, diluted by the reference noise in D, and through the PSF
# matched filter (a poor match to a sharp hit) in S_corr. The reference coadd rejects them.
_ARTIFACT_GAIN = {"science": 1.0, "difference": 0.8, "score": 0.3}


def _augment(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, channels: Sequence[str],
    augmentation: Augmentation,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip/rotate, add noise and inject artifacts into one noise-unit tile and its labels."""
    # imported here: inference needs neither the simulator nor its dependencies (astropy...)
    from astrid.simulate.augment import add_noise, inject_artifacts, random_flip_rotate

    if augmentation.flips:
        x, y = random_flip_rotate(x, y, rng=rng)
    if augmentation.noise > 0:
        s = float(rng.uniform(0.0, augmentation.noise))
        x = add_noise(x, sigma=s, rng=rng) / np.float32(math.sqrt(1.0 + s * s))
    targets = [(i, _ARTIFACT_GAIN[c]) for i, c in enumerate(channels) if c in _ARTIFACT_GAIN]
    if targets and augmentation.artifacts > 0 and rng.random() < augmentation.artifacts:
        ignored = y == IGNORE_INDEX
        out = inject_artifacts(
            x, np.where(ignored, 0, y).astype(np.uint8), np.zeros(y.shape, np.int32), sigma=1.0,
            rng=rng, n_cosmic_rays=int(rng.integers(1, 3)), n_hot_pixels=int(rng.integers(0, 2)),
            channels=[i for i, _ in targets], signs=[g for _, g in targets],
            electrons_per_unit=augmentation.electrons_per_sigma,
        )
        x, y = out.images, out.class_map
        y[ignored] = IGNORE_INDEX
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


class TileSampler:
    """Draws tile positions: class-balanced on labelled pixels, plus a share of random tiles.

    A tile is random (uniform image and position; mostly empty sky) with
    probability ``empty_fraction``. Otherwise a non-background class is drawn
    uniformly among those present, one of its pixels uniformly, and the tile is
    placed so that pixel falls at a random spot inside it.

    Parameters
    ----------
    pools : sequence of SplitImages
        Image sets (synthetic, real...); one is chosen per tile by ``pool_weights``.
    pool_weights : sequence of float
        Probability of each pool (normalised).
    tile_size : int
        Side of the square tiles.
    empty_fraction : float
        Share of random tiles.
    """

    def __init__(
        self, pools: Sequence[SplitImages], *, pool_weights: Sequence[float], tile_size: int,
        empty_fraction: float,
    ):
        if len(pools) != len(pool_weights) or not pools:
            msg = "pools and pool_weights must be non-empty and of equal length"
            raise ValueError(msg)
        weights = np.asarray(pool_weights, float)
        if np.any(weights < 0) or weights.sum() <= 0:
            msg = f"pool_weights must be non-negative with a positive sum, got {pool_weights}"
            raise ValueError(msg)
        if not 0 <= empty_fraction <= 1:
            msg = f"empty_fraction must be in [0, 1], got {empty_fraction}"
            raise ValueError(msg)
        for pool in pools:
            for sid, lab in zip(pool.ids, pool.labels, strict=True):
                if min(lab.shape) < tile_size:
                    msg = f"tile_size {tile_size} exceeds image {sid!r} of shape {lab.shape}"
                    raise ValueError(msg)
        self.pools = list(pools)
        self.pool_weights = weights / weights.sum()
        self.tile_size = int(tile_size)
        self.empty_fraction = float(empty_fraction)
        self._index = [self._class_index(pool) for pool in self.pools]

    @staticmethod
    def _class_index(pool: SplitImages) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per non-background class: (image index, flat pixel index) of its pixels."""
        found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for k, lab in enumerate(pool.labels):
            flat = lab.ravel()
            fg = np.flatnonzero((flat > 0) & (flat != IGNORE_INDEX))
            for code in np.unique(flat[fg]):
                pix = fg[flat[fg] == code]
                found.setdefault(int(code), []).append((np.full(pix.size, k, np.int32), pix))
        return {c: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
                for c, v in sorted(found.items())}

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """Return (pool, image, y0, x0) of one tile."""
        p = int(rng.choice(len(self.pools), p=self.pool_weights)) if len(self.pools) > 1 else 0
        pool, index, t = self.pools[p], self._index[p], self.tile_size
        if not index or rng.random() < self.empty_fraction:
            k = int(rng.integers(len(pool)))
            h, w = pool.labels[k].shape
            return p, k, int(rng.integers(h - t + 1)), int(rng.integers(w - t + 1))
        codes = list(index)
        images, pixels = index[codes[int(rng.integers(len(codes)))]]
        j = int(rng.integers(images.size))
        k = int(images[j])
        h, w = pool.labels[k].shape
        py, px = divmod(int(pixels[j]), w)
        y0 = min(max(py - int(rng.integers(t)), 0), h - t)
        x0 = min(max(px - int(rng.integers(t)), 0), w - t)
        return p, k, y0, x0


class TileDataset(torch.utils.data.Dataset):
    """Training tiles drawn afresh on every access (the index only counts).

    Deterministic for a given ``seed`` when read in order by one process
    (``num_workers=0``, which suits in-memory data).

    Parameters
    ----------
    sampler : TileSampler
        Where tiles come from.
    length : int
        Tiles per epoch.
    channels : sequence of str
        Channel names of the stacks (for artifact injection).
    normalisation : Normalisation
        Applied per tile when its scope is ``"tile"``; the stretch always.
    augmentation : Augmentation or None
        On-the-fly augmentation; ``None`` for none.
    seed : int
        Seed of the tile draws.
    """

    def __init__(
        self, sampler: TileSampler, *, length: int, channels: Sequence[str],
        normalisation: Normalisation, augmentation: Augmentation | None, seed: int,
    ):
        self.sampler = sampler
        self.length = int(length)
        self.channels = tuple(channels)
        self.normalisation = normalisation
        self.augmentation = augmentation
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.tile(self._rng)

    def tile(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw, cut, augment and normalise one tile with ``rng``."""
        p, k, y0, x0 = self.sampler.draw(rng)
        pool, t = self.sampler.pools[p], self.sampler.tile_size
        x = pool.images[k][:, y0:y0 + t, x0:x0 + t].copy()
        y = pool.labels[k][y0:y0 + t, x0:x0 + t].copy()
        if self.normalisation.scope == "tile":
            x = scale(torch.from_numpy(x), channels=self.channels,
                      normalisation=self.normalisation).numpy()
        x = np.nan_to_num(x, nan=0.0)
        if self.augmentation is not None and self.augmentation.active:
            x, y = _augment(x, y, rng, channels=self.channels, augmentation=self.augmentation)
        xt = stretch(torch.from_numpy(np.ascontiguousarray(x)), normalisation=self.normalisation)
        return xt, torch.from_numpy(y.astype(np.int64))


class GridTiles(torch.utils.data.Dataset):
    """Fixed validation tiles: a grid of non-overlapping tiles over every image.

    The last row and column are aligned with the image edge. With more than
    ``max_tiles`` tiles, a seeded random subset is kept.
    """

    def __init__(
        self, pool: SplitImages, *, tile_size: int, channels: Sequence[str],
        normalisation: Normalisation, max_tiles: int | None = None, seed: int = 0,
    ):
        t = int(tile_size)
        spots = []
        for k, lab in enumerate(pool.labels):
            h, w = lab.shape
            if min(h, w) < t:
                msg = f"tile_size {t} exceeds image {pool.ids[k]!r} of shape {lab.shape}"
                raise ValueError(msg)
            ys = sorted({*range(0, h - t + 1, t), h - t})
            xs = sorted({*range(0, w - t + 1, t), w - t})
            spots += [(k, y0, x0) for y0 in ys for x0 in xs]
        if max_tiles is not None and len(spots) > max_tiles:
            keep = np.sort(np.random.default_rng(seed).choice(len(spots), max_tiles, replace=False))
            spots = [spots[i] for i in keep]
        self.pool, self.tile_size, self.spots = pool, t, spots
        self.channels, self.normalisation = tuple(channels), normalisation

    def __len__(self) -> int:
        return len(self.spots)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, y0, x0 = self.spots[index]
        t = self.tile_size
        x = torch.from_numpy(self.pool.images[k][:, y0:y0 + t, x0:x0 + t].copy())
        if self.normalisation.scope == "tile":
            x = scale(x, channels=self.channels, normalisation=self.normalisation)
        y = torch.from_numpy(self.pool.labels[k][y0:y0 + t, x0:x0 + t].astype(np.int64))
        return stretch(x, normalisation=self.normalisation), y


def class_frequencies(
    dataset: TileDataset, *, n_tiles: int = 256, n_classes: int = len(CLASS_NAMES), seed: int = 0
) -> np.ndarray:
    """Pixel share of each class in ``n_tiles`` tiles drawn as in training.

    This is what the loss sees after oversampling, so class weights built
    from it do not count the oversampling twice.
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros(n_classes, np.int64)
    for _ in range(n_tiles):
        p, k, y0, x0 = dataset.sampler.draw(rng)
        t = dataset.sampler.tile_size
        lab = dataset.sampler.pools[p].labels[k][y0:y0 + t, x0:x0 + t]
        counts += np.bincount(lab[lab != IGNORE_INDEX].ravel(), minlength=n_classes)[:n_classes]
    return counts / max(int(counts.sum()), 1)

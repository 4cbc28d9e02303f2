"""Training-time augmentation applied consistently to image stacks and label maps.

Images are ``(C, H, W)`` stacks (for example reference, science, difference)
or any array whose last two axes are the image; class and instance maps are
``(H, W)``. Every random choice comes from an explicit
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from astrid.classes import CLASS_CODES, CLASS_NAMES
from astrid.simulate.artifacts import cosmic_rays, hot_pixels
from astrid.simulate.labels import PRIORITY

__all__ = ["Augmented", "add_noise", "flip_rotate", "inject_artifacts", "random_flip_rotate"]


def _rank_of_codes() -> np.ndarray:
    """Priority rank per class code (background 0, higher wins)."""
    rank = np.zeros(len(CLASS_NAMES), np.int16)
    for kind in PRIORITY:
        rank[CLASS_CODES[kind]] = len(PRIORITY) - PRIORITY.index(kind)
    return rank


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        msg = f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        raise ValueError(msg)


def flip_rotate(*arrays: np.ndarray, k: int = 0, flip: bool = False) -> tuple[np.ndarray, ...]:
    """Rotate by ``k`` × 90° and optionally mirror left-right, the same way for every array.

    The last two axes are the image axes, so stacks ``(C, H, W)`` and maps
    ``(H, W)`` stay aligned. Pixel values are only moved, so fluxes are kept.

    Parameters
    ----------
    *arrays : numpy.ndarray
        Arrays with the same last two dimensions.
    k : int
        Number of counter-clockwise quarter turns.
    flip : bool
        Mirror along the last axis after rotating.

    Returns
    -------
    tuple of numpy.ndarray
        Contiguous transformed copies, in the input order.

    Raises
    ------
    ValueError
        When no arrays are given or their image shapes differ.

    Examples
    --------
    >>> img, lab = flip_rotate(np.arange(4).reshape(1, 2, 2), np.eye(2, dtype=np.uint8), k=1)
    >>> img[0].tolist(), lab.tolist()
    ([[1, 3], [0, 2]], [[0, 1], [1, 0]])
    """
    if not arrays:
        msg = "arrays: give at least one array"
        raise ValueError(msg)
    shapes = {np.shape(a)[-2:] for a in arrays}
    if any(np.ndim(a) < 2 for a in arrays) or len(shapes) != 1:
        msg = f"arrays must share their last two (image) dimensions, got {sorted(shapes)}"
        raise ValueError(msg)
    out = []
    for a in arrays:
        b = np.rot90(np.asarray(a), int(k) % 4, axes=(-2, -1))
        if flip:
            b = b[..., ::-1]
        out.append(np.ascontiguousarray(b))
    return tuple(out)


def random_flip_rotate(*arrays: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Apply one of the 8 flips/quarter-turns, drawn from ``rng``, to all arrays alike.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = random_flip_rotate(np.ones((2, 4, 4)), np.zeros((4, 4)), rng=rng)
    >>> a.shape, b.shape
    ((2, 4, 4), (4, 4))
    """
    _check_rng(rng)
    return flip_rotate(*arrays, k=int(rng.integers(4)), flip=bool(rng.random() < 0.5))


def add_noise(
    images: np.ndarray, *, sigma: float | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Return ``images`` plus Gaussian noise of standard deviation ``sigma``.

    Parameters
    ----------
    images : numpy.ndarray
        Image or stack.
    sigma : float or numpy.ndarray
        Noise standard deviation, broadcastable to ``images`` (e.g. one value
        per channel as ``(C, 1, 1)``, or a per-pixel map); must be >= 0.
    rng : numpy.random.Generator
        Source of the noise.

    Raises
    ------
    ValueError
        For negative or non-broadcastable ``sigma`` or a missing Generator.

    Examples
    --------
    >>> out = add_noise(np.zeros((1, 64, 64), np.float32), sigma=2.0, rng=np.random.default_rng(0))
    >>> out.dtype.name, 1.9 < float(out.std()) < 2.1
    ('float32', True)
    """
    _check_rng(rng)
    images = np.asarray(images)
    s = np.asarray(sigma, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        msg = "sigma must be finite and >= 0"
        raise ValueError(msg)
    try:
        np.broadcast_shapes(s.shape, images.shape)
    except ValueError as err:
        msg = f"sigma of shape {s.shape} does not broadcast to images of shape {images.shape}"
        raise ValueError(msg) from err
    dtype = images.dtype if np.issubdtype(images.dtype, np.floating) else np.float32
    noise = rng.standard_normal(images.shape, dtype=np.float32) * s.astype(np.float32)
    return (images + noise).astype(dtype, copy=False)


@dataclass
class Augmented:
    """Images and labels after artifact injection.

    Attributes
    ----------
    images : numpy.ndarray
        The stack with the artifacts added.
    class_map, instance_map : numpy.ndarray
        Updated labels (injected pixels win over lower-priority classes only).
    catalog : pandas.DataFrame
        One row per injected artifact that received pixels: ``instance``,
        ``kind``, ``subtype``, ``x``, ``y``, ``flux`` (image units), ``npix``.
    """

    images: np.ndarray
    class_map: np.ndarray
    instance_map: np.ndarray
    catalog: pd.DataFrame


def inject_artifacts(
    images: np.ndarray,
    class_map: np.ndarray,
    instance_map: np.ndarray,
    *,
    sigma: float | np.ndarray,
    rng: np.random.Generator,
    n_cosmic_rays: int = 1,
    n_hot_pixels: int = 1,
    channels: Sequence[int] = (0,),
    signs: Sequence[float] | None = None,
    electrons_per_unit: float = 1.0,
    mask_sigma: float = 1.0,
) -> Augmented:
    """Add cosmic rays and hot pixels to an image stack and label them.

    The artifacts are drawn as in :func:`astrid.simulate.simulate_field`
    (electrons), converted to image units by ``electrons_per_unit`` and added,
    times ``signs``, to the ``channels`` of the stack (for example ``(1, 2)``
    with signs ``(1, 1)`` for the science image and the difference of a
    reference/science/difference stack). Their masks are the pixels above
    ``mask_sigma`` × ``sigma`` (plus each artifact's brightest pixels); they
    overwrite only labels of lower priority (:data:`labels.PRIORITY`).

    Parameters
    ----------
    images : numpy.ndarray
        ``(C, H, W)`` stack.
    class_map, instance_map : numpy.ndarray
        ``(H, W)`` labels of the stack.
    sigma : float or numpy.ndarray
        Noise per pixel in image units (scalar or ``(H, W)``) for the masks.
    rng : numpy.random.Generator
        Source of randomness.
    n_cosmic_rays, n_hot_pixels : int
        How many of each to inject.
    channels : sequence of int
        Channels receiving the artifacts.
    signs : sequence of float, optional
        Multiplier per channel (default all 1).
    electrons_per_unit : float
        Electrons per image unit (the gain for ADU images).
    mask_sigma : float
        Mask threshold in units of ``sigma``.

    Returns
    -------
    Augmented
        New arrays (inputs are not modified) and the injected catalogue.

    Raises
    ------
    ValueError
        For mismatched shapes, bad channels, negative counts or options.

    Examples
    --------
    >>> img = np.zeros((2, 32, 32), np.float32)
    >>> out = inject_artifacts(img, np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.int32),
    ...                        sigma=10.0, rng=np.random.default_rng(1), n_hot_pixels=0)
    >>> out.images[1].sum() == 0, len(out.catalog)
    (np.True_, 1)
    """
    _check_rng(rng)
    images = np.asarray(images)
    if images.ndim != 3:
        msg = f"images must be a (C, H, W) stack, got shape {images.shape}"
        raise ValueError(msg)
    shape = images.shape[1:]
    if np.shape(class_map) != shape or np.shape(instance_map) != shape:
        msg = f"class_map and instance_map must have shape {shape}"
        raise ValueError(msg)
    for name, value in (("n_cosmic_rays", n_cosmic_rays), ("n_hot_pixels", n_hot_pixels)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            msg = f"{name} must be a non-negative int, got {value!r}"
            raise ValueError(msg)
    channels = [int(c) for c in channels]
    if not channels or any(c < 0 or c >= images.shape[0] for c in channels):
        msg = f"channels must index the {images.shape[0]} channels of images, got {channels}"
        raise ValueError(msg)
    signs = [1.0] * len(channels) if signs is None else [float(s) for s in signs]
    if len(signs) != len(channels):
        msg = f"signs must have one entry per channel ({len(channels)}), got {len(signs)}"
        raise ValueError(msg)
    if not electrons_per_unit > 0 or not mask_sigma > 0:
        msg = "electrons_per_unit and mask_sigma must be positive"
        raise ValueError(msg)
    sigma_map = np.broadcast_to(np.asarray(sigma, np.float32), shape)
    if np.any(sigma_map <= 0):
        msg = "sigma must be positive"
        raise ValueError(msg)

    out_images = images.astype(np.result_type(images.dtype, np.float32), copy=True)
    out_class = np.array(class_map, dtype=np.uint8, copy=True)
    out_inst = np.array(instance_map, dtype=np.int32, copy=True)
    rank = _rank_of_codes()
    objects = cosmic_rays(rng, int(n_cosmic_rays), shape=shape)
    objects += hot_pixels(rng, int(n_hot_pixels), shape=shape)
    next_id = int(out_inst.max()) + 1
    rows = []
    for obj in objects:
        rs, cs = obj.slices
        signal = obj.signal / np.float32(electrons_per_unit)
        for c, s in zip(channels, signs, strict=True):
            out_images[c, rs, cs] += np.float32(s) * signal
        mask = np.abs(signal) > mask_sigma * sigma_map[rs, cs]
        if obj.core is not None:
            mask |= obj.core & (signal != 0)
        code = CLASS_CODES[obj.kind]
        win = mask & (rank[out_class[rs, cs]] < rank[code])
        if not win.any():
            continue
        out_class[rs, cs][win] = code
        out_inst[rs, cs][win] = next_id
        rows.append({"instance": next_id, "kind": obj.kind, "subtype": obj.subtype, "x": obj.x,
                     "y": obj.y, "flux": float(signal.sum()), "npix": int(win.sum())})
        next_id += 1
    catalog = pd.DataFrame(rows, columns=["instance", "kind", "subtype", "x", "y", "flux", "npix"])
    return Augmented(out_images, out_class, out_inst, catalog)

"""The one place that decides between NumPy (CPU) and CuPy (GPU).

Everything array-valued in AstrID is written once against an array module
``xp`` obtained from :func:`get_xp`. CuPy is imported here and nowhere else.

The device is chosen by the ``ASTRID_DEVICE`` environment variable:

``cpu``
    always NumPy, even when CuPy and a GPU are present;
``gpu``
    CuPy, and an error when CuPy or a GPU is missing;
``auto`` (default)
    CuPy when it imports and sees a GPU, NumPy otherwise.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

__all__ = [
    "HAS_CUPY",
    "device_name",
    "fft_module",
    "get_xp",
    "resolve_device",
    "to_device",
    "to_numpy",
]


def _probe_cupy() -> ModuleType | None:
    if find_spec("cupy") is None:
        return None
    try:
        import cupy  # noqa: PLC0415 - the only import of CuPy in AstrID

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # no driver, no device, broken install: all mean "no GPU"
        return None
    return cupy


_cupy = _probe_cupy()
HAS_CUPY: bool = _cupy is not None


def resolve_device(device: str | None = None) -> str:
    """Return ``"cpu"`` or ``"gpu"`` for a requested device.

    Parameters
    ----------
    device : {"cpu", "gpu", "auto"} or None
        Requested device; ``None`` reads ``ASTRID_DEVICE`` (default ``"auto"``).

    Returns
    -------
    str
        ``"gpu"`` when CuPy with a GPU will be used, else ``"cpu"``.

    Raises
    ------
    ValueError
        For an unknown device name, or ``"gpu"`` without CuPy and a GPU.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    choice = (device or os.environ.get("ASTRID_DEVICE", "auto")).lower()
    if choice not in {"cpu", "gpu", "auto"}:
        msg = f"device must be 'cpu', 'gpu' or 'auto' (ASTRID_DEVICE), got {choice!r}"
        raise ValueError(msg)
    if choice == "gpu" and not HAS_CUPY:
        msg = "device 'gpu' requested but CuPy with a visible GPU is not available"
        raise ValueError(msg)
    if choice == "auto":
        return "gpu" if HAS_CUPY else "cpu"
    return choice


def get_xp(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) that owns ``arrays``.

    Mixing NumPy and CuPy arrays raises instead of copying silently.

    Examples
    --------
    >>> get_xp(np.zeros(3)).__name__
    'numpy'
    """
    on_gpu = [_cupy is not None and isinstance(a, _cupy.ndarray) for a in arrays]
    if any(on_gpu) and not all(on_gpu):
        msg = "arrays live on different devices (NumPy and CuPy mixed); move them with to_device"
        raise TypeError(msg)
    return _cupy if on_gpu and all(on_gpu) else np


def to_device(array: Any, device: str | None = None, *, dtype: Any = None) -> Any:
    """Move ``array`` to ``device`` (see :func:`resolve_device`) as ``dtype``.

    Examples
    --------
    >>> to_device([1, 2], "cpu", dtype=np.float32).dtype
    dtype('float32')
    """
    xp = _cupy if resolve_device(device) == "gpu" else np
    return xp.asarray(array, dtype=dtype)


def to_numpy(array: Any) -> np.ndarray:
    """Return ``array`` as a NumPy array, copying from the GPU when needed.

    Examples
    --------
    >>> to_numpy(np.ones(2)).tolist()
    [1.0, 1.0]
    """
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def fft_module(xp: ModuleType) -> ModuleType:
    """Return the FFT module for ``xp``: ``scipy.fft`` on NumPy, ``cupyx.scipy.fft`` on CuPy.

    ``scipy.fft`` takes ``workers=`` (CPU threads); ``cupyx.scipy.fft`` does not, so
    callers pass it only for NumPy arrays.

    Examples
    --------
    >>> fft_module(np).__name__
    'scipy.fft'
    """
    if xp is np:
        return scipy.fft
    import cupyx.scipy.fft  # noqa: PLC0415 - guarded GPU import, only reached with CuPy arrays

    return cupyx.scipy.fft


def device_name(xp: ModuleType) -> str:
    """Describe the device behind ``xp`` for logs and reports.

    Examples
    --------
    >>> device_name(np).startswith("cpu")
    True
    """
    if xp is np:
        return f"cpu ({os.cpu_count()} cores)"
    props = _cupy.cuda.runtime.getDeviceProperties(_cupy.cuda.Device().id)
    return f"gpu ({props['name'].decode()})"

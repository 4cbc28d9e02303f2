"""torch and fastai imports in one place, plus device and precision helpers.

Importing fastai triggers two deprecation warnings from its dependencies
(``torch.jit.script`` at module level; a pandas option that pandas 3 ignores).
They are silenced here, once, for those messages only, so test suites that
turn warnings into errors can import AstrID.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*mode\.chained_assignment.*")
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401 - patches Learner
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.layers import ConvLayer
    from fastai.learner import Learner, Metric
    from fastai.torch_core import set_seed
    from fastai.vision.models.unet import DynamicUnet

__all__ = [
    "Callback",
    "ConvLayer",
    "DataLoader",
    "DataLoaders",
    "DynamicUnet",
    "EarlyStoppingCallback",
    "Learner",
    "Metric",
    "ProgressCallback",
    "SaveModelCallback",
    "autocast_dtype",
    "resolve_torch_device",
    "set_seed",
]


def resolve_torch_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"gpu"``...).

    ``"auto"`` (or ``None``) means the first CUDA GPU when torch sees one, else the CPU.

    Raises
    ------
    ValueError
        For an unknown name, or a CUDA device when torch sees no GPU.
    """
    if isinstance(device, torch.device):
        choice = device
    else:
        name = (device or "auto").lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name == "gpu":
            name = "cuda"
        try:
            choice = torch.device(name)
        except RuntimeError as err:
            msg = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
            raise ValueError(msg) from err
    if choice.type == "cuda" and not torch.cuda.is_available():
        msg = f"device {str(choice)!r} requested but torch sees no CUDA GPU"
        raise ValueError(msg)
    if choice.type not in {"cpu", "cuda"}:
        msg = f"device must be a CPU or CUDA device, got {str(choice)!r}"
        raise ValueError(msg)
    return choice


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """Return the reduced precision to run inference in on ``device``, or ``None`` for float32.

    ``amp=None`` chooses: bfloat16 (float16 on GPUs without it) on CUDA, and
    bfloat16 on a CPU with native bfloat16 matrix units (AMX or AVX512-BF16),
    where oneDNN runs convolutions several times faster than in float32.
    """
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp is True:
        return torch.bfloat16
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return torch.bfloat16 if native else None

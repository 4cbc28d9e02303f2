"""Calibrated confidence: temperature scaling and Monte-Carlo dropout.

Temperature scaling divides every logit by one scalar ``T`` fitted on the
validation split to minimise the negative log-likelihood (NLL). The NLL of
softmax(z/T) is convex in 1/T, so a golden-section search over log T finds
the global minimum without gradients or tuning. ``T`` is saved with the model
and applied by :func:`~astrid.model.inference.predict_image`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from astrid.model.data import IGNORE_INDEX

__all__ = ["Calibration", "TemperatureFit", "fit_temperature", "mc_dropout", "nll"]

_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class TemperatureFit:
    """Result of :func:`fit_temperature`.

    Attributes
    ----------
    temperature : float
        Fitted ``T`` (> 1 softens over-confident predictions).
    nll_before, nll_after : float
        Mean NLL per pixel at ``T = 1`` and at the fitted ``T``.
    n_pixels : int
        Pixels used.
    """

    temperature: float
    nll_before: float
    nll_after: float
    n_pixels: int


@dataclass
class Calibration:
    """Validation-split calibration of a trained model, for records and the reliability diagram.

    Attributes
    ----------
    fit : TemperatureFit
        The fitted temperature and NLL before and after.
    confidence_before, confidence_after : numpy.ndarray
        Top-class probability of a random subset of validation pixels at
        ``T = 1`` and at the fitted ``T``.
    correct : numpy.ndarray of bool
        Whether the top class is the true class on those pixels.
    """

    fit: TemperatureFit
    confidence_before: np.ndarray
    confidence_after: np.ndarray
    correct: np.ndarray

    @property
    def temperature(self) -> float:
        """The fitted temperature."""
        return self.fit.temperature


def _flatten(logits, targets) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits).as_subclass(torch.Tensor)
    y = torch.as_tensor(targets).as_subclass(torch.Tensor)
    if z.ndim == 4:  # (N, C, H, W) -> (N*H*W, C)
        z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        y = y.reshape(-1)
    if z.ndim != 2 or y.ndim != 1 or z.shape[0] != y.shape[0]:
        msg = (f"logits must be (N, C) or (N, C, H, W) with targets (N,) or (N, H, W), got "
               f"{tuple(torch.as_tensor(logits).shape)} and {tuple(torch.as_tensor(targets).shape)}")
        raise ValueError(msg)
    y = y.long()
    keep = y != IGNORE_INDEX
    z, y = z[keep].float(), y[keep]
    if z.shape[0] == 0:
        msg = "no labelled pixels to fit the temperature on"
        raise ValueError(msg)
    if not torch.isfinite(z).all():
        msg = "logits contain NaN or infinite values"
        raise ValueError(msg)
    if y.min() < 0 or y.max() >= z.shape[1]:
        msg = f"targets must be class codes 0..{z.shape[1] - 1}"
        raise ValueError(msg)
    return z, y


def nll(logits, targets, *, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` under softmax(logits / T).

    Examples
    --------
    >>> round(nll(torch.zeros(2, 4), torch.tensor([0, 3])), 4)  # log 4
    1.3863
    """
    z, y = _flatten(logits, targets)
    return float(F.cross_entropy(z / temperature, y))


def fit_temperature(
    logits, targets, *, bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-4
) -> TemperatureFit:
    """Fit the temperature that minimises the NLL of ``targets``.

    Parameters
    ----------
    logits : array_like or torch.Tensor
        (N, C) or (N, C, H, W) raw network outputs.
    targets : array_like or torch.Tensor
        (N,) or (N, H, W) class codes; :data:`~astrid.model.data.IGNORE_INDEX`
        pixels are skipped.
    bounds : (float, float)
        Search interval for ``T``.
    tol : float
        Tolerance on log T.

    Returns
    -------
    TemperatureFit

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite logits, no labelled pixel or bad bounds.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(4000, 3, generator=g)
    >>> y = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    >>> round(fit_temperature(3 * z, y).temperature)  # over-confident by 3
    3
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        msg = f"bounds must satisfy 0 < low < high, got {bounds}"
        raise ValueError(msg)
    z, y = _flatten(logits, targets)

    def loss(log_t: float) -> float:
        return float(F.cross_entropy(z * math.exp(-log_t), y))

    a, b = math.log(lo), math.log(hi)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = loss(d)
    log_t = (a + b) / 2
    before, after = loss(0.0), loss(log_t)
    if before <= after:  # T = 1 is as good (within the tolerance): keep the model as it is
        log_t, after = 0.0, before
    return TemperatureFit(math.exp(log_t), before, after, int(y.numel()))


@contextmanager
def mc_dropout(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in evaluation mode with its dropout layers active (Monte-Carlo dropout).

    The previous modes are restored on exit.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    >>> with mc_dropout(net):
    ...     net[0].training, net[1].training
    (False, True)
    >>> net[0].training
    True
    """
    modes = {m: m.training for m in net.modules()}
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    try:
        yield net
    finally:
        for m, mode in modes.items():
            m.train(mode)

"""The network, its loss and its validation metric.

The U-Net is fastai's :class:`~fastai.vision.models.unet.DynamicUnet` over a
small encoder built here for any number of input channels, without
pretrained weights: a full-resolution stem (so single-pixel artifacts keep
their shape) and stages that halve the resolution and double the width.
Every down-sampling stage ends in spatial dropout, and one more dropout sits
before the final 1×1 classifier, so Monte-Carlo dropout can sample the
model's uncertainty at inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from astrid.classes import CLASS_NAMES
from astrid.model._torch import ConvLayer, DynamicUnet, Metric
from astrid.model.data import IGNORE_INDEX

__all__ = [
    "MODEL_SIZES",
    "MacroDice",
    "SegmentationLoss",
    "UNetSpec",
    "build_unet",
    "count_parameters",
]

MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"widths": (8, 16, 32), "last_cross": False},
    "small": {"widths": (8, 16, 32, 64), "last_cross": False},
    "base": {"widths": (16, 32, 64, 128, 256), "last_cross": True},
}
"""Named architectures: encoder widths per stage and whether the raw input is
re-joined at full resolution (fastai's ``last_cross``, costly on a CPU).
``small`` (the default) runs a 2048² four-channel image in about 1.5 s on
2 CPU cores; ``base`` is for GPUs."""


@dataclass(frozen=True)
class UNetSpec:
    """Everything needed to rebuild the network (stored in the model bundle).

    Attributes
    ----------
    n_channels : int
        Input channels.
    n_classes : int
        Output classes.
    widths : tuple of int
        Encoder width per stage; stage 0 is full resolution, each next one
        halves it.
    last_cross : bool
        Concatenate the input before the final residual block.
    dropout : float
        Spatial dropout probability.
    """

    n_channels: int
    n_classes: int
    widths: tuple[int, ...]
    last_cross: bool = False
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.n_channels < 1 or self.n_classes < 2:
            msg = f"need n_channels >= 1 and n_classes >= 2, got {self.n_channels}, {self.n_classes}"
            raise ValueError(msg)
        if len(self.widths) < 2 or min(self.widths) < 1:
            msg = f"widths must hold at least two positive stage widths, got {self.widths}"
            raise ValueError(msg)
        if not 0 <= self.dropout < 1:
            msg = f"dropout must be in [0, 1), got {self.dropout}"
            raise ValueError(msg)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (the total down-sampling)."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UNetSpec:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            msg = f"unknown architecture setting(s) {sorted(unknown)}"
            raise ValueError(msg)
        return cls(**raw)

    @classmethod
    def named(
        cls, size: str, *, n_channels: int, n_classes: int = len(CLASS_NAMES), dropout: float = 0.1
    ) -> UNetSpec:
        """Return the spec of a size in :data:`MODEL_SIZES`."""
        if size not in MODEL_SIZES:
            msg = f"model size must be one of {sorted(MODEL_SIZES)}, got {size!r}"
            raise ValueError(msg)
        return cls(n_channels=n_channels, n_classes=n_classes, dropout=dropout, **MODEL_SIZES[size])


def _encoder(spec: UNetSpec) -> nn.Sequential:
    """Stage 0 at full resolution, then stride-2 stages ending in spatial dropout."""
    widths = spec.widths
    stages: list[nn.Module] = [ConvLayer(spec.n_channels, widths[0], ks=3)]
    for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
        stages.append(nn.Sequential(
            ConvLayer(w_in, w_out, ks=3, stride=2),
            ConvLayer(w_out, w_out, ks=3),
            nn.Dropout2d(spec.dropout),
        ))
    return nn.Sequential(*stages)


def build_unet(
    n_channels: int,
    n_classes: int = len(CLASS_NAMES),
    *,
    size: str = "small",
    dropout: float = 0.1,
    spec: UNetSpec | None = None,
) -> nn.Module:
    """Build the fastai U-Net for ``n_channels`` inputs and ``n_classes`` outputs.

    Parameters
    ----------
    n_channels : int
        Input channels.
    n_classes : int
        Output classes (logits per pixel).
    size : str
        A key of :data:`MODEL_SIZES` (ignored when ``spec`` is given).
    dropout : float
        Spatial dropout probability (ignored when ``spec`` is given).
    spec : UNetSpec, optional
        Exact architecture; must agree with ``n_channels`` and ``n_classes``.

    Returns
    -------
    torch.nn.Module
        A :class:`~fastai.vision.models.unet.DynamicUnet`, randomly
        initialised, in training mode.

    Raises
    ------
    ValueError
        For an unknown size or inconsistent numbers.

    Examples
    --------
    >>> net = build_unet(4, 9, size="tiny")
    >>> tuple(net(torch.zeros(1, 4, 16, 16)).shape)
    (1, 9, 16, 16)
    """
    if spec is None:
        spec = UNetSpec.named(size, n_channels=n_channels, n_classes=n_classes, dropout=dropout)
    if (spec.n_channels, spec.n_classes) != (n_channels, n_classes):
        msg = (f"spec is for {spec.n_channels} channels and {spec.n_classes} classes, "
               f"not {n_channels} and {n_classes}")
        raise ValueError(msg)
    side = 4 * spec.multiple
    net = DynamicUnet(_encoder(spec), spec.n_classes, (side, side), last_cross=spec.last_cross)
    # dropout before the final 1x1 classifier (the last two layers are ConvLayer, ToTensorBase)
    net.layers.insert(len(net.layers) - 2, nn.Dropout2d(spec.dropout))
    return net


def count_parameters(net: nn.Module) -> int:
    """Return the number of trainable parameters.

    Examples
    --------
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


class SegmentationLoss(nn.Module):
    """Class-weighted cross-entropy (or focal loss) plus soft Dice, for extreme imbalance.

    ``loss = CE_w + dice · (1 − mean_c Dice_c)``, the Dice mean running over
    the non-background classes present in the batch's targets. Pixels
    labelled :data:`~astrid.model.data.IGNORE_INDEX` count in neither term.

    Parameters
    ----------
    weight : sequence of float, optional
        Per-class weights of the cross-entropy.
    dice : float
        Weight of the Dice term (0 for none).
    focal_gamma : float
        0 for cross-entropy, > 0 for focal loss with this focusing parameter.

    Examples
    --------
    >>> loss = SegmentationLoss([1.0, 5.0])
    >>> target = torch.zeros(1, 4, 4, dtype=torch.long); target[0, 1, 1] = 1
    >>> good = torch.where(target == 1, 1.0, -1.0)[:, None] * torch.tensor([-9.0, 9.0])[:, None, None]
    >>> bool(loss(good, target) < loss(-good, target))
    True
    """

    def __init__(self, weight=None, *, dice: float = 1.0, focal_gamma: float = 0.0):
        super().__init__()
        if dice < 0 or focal_gamma < 0:
            msg = f"dice and focal_gamma must be >= 0, got {dice}, {focal_gamma}"
            raise ValueError(msg)
        w = None if weight is None else torch.as_tensor(np.asarray(weight, np.float32))
        self.register_buffer("weight", w)
        self.dice, self.focal_gamma = float(dice), float(focal_gamma)

    @property
    def name(self) -> str:
        """Short description for records (``"weighted_ce+0.5dice"``...)."""
        base = f"focal{self.focal_gamma:g}" if self.focal_gamma else "ce"
        base = f"weighted_{base}" if self.weight is not None else base
        return f"{base}+{self.dice:g}dice" if self.dice else base

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean loss of ``logits`` (N, C, H, W) against ``target`` (N, H, W)."""
        logits = logits.as_subclass(torch.Tensor).float()
        target = target.as_subclass(torch.Tensor).long()
        valid = target != IGNORE_INDEX
        if not valid.any():
            return logits.sum() * 0.0
        if self.focal_gamma:
            logp = F.log_softmax(logits, dim=1)
            safe = torch.where(valid, target, 0)
            logpt = logp.gather(1, safe[:, None])[:, 0]
            w = self.weight[safe] if self.weight is not None else torch.ones_like(logpt)
            w = w * valid
            term = -((1 - logpt.exp()) ** self.focal_gamma) * logpt * w
            loss = term.sum() / w.sum().clamp_min(1e-12)
        else:
            loss = F.cross_entropy(logits, target, weight=self.weight, ignore_index=IGNORE_INDEX)
        if self.dice:
            loss = loss + self.dice * self._dice_loss(logits, target, valid)
        return loss

    @staticmethod
    def _dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        probs = F.softmax(logits, dim=1) * valid[:, None]
        onehot = F.one_hot(torch.where(valid, target, 0), n_classes).permute(0, 3, 1, 2)
        onehot = onehot * valid[:, None]
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)[1:]
        total = (probs.sum(dims) + onehot.sum(dims))[1:]
        present = onehot.sum(dims)[1:] > 0
        if not present.any():
            return logits.sum() * 0.0
        dice = (2 * inter + 1.0) / (total + 1.0)
        return 1 - dice[present].mean()

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits (used by fastai's ``get_preds``)."""
        return F.softmax(x, dim=1)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        """Class map from probabilities or logits."""
        return x.argmax(dim=1)


class MacroDice(Metric):
    """Mean Dice over the non-background classes seen in targets or predictions of an epoch.

    Computed from a confusion matrix accumulated over the whole validation
    set (not averaged per batch); pixels labelled ``IGNORE_INDEX`` are skipped.
    """

    def __init__(self, n_classes: int = len(CLASS_NAMES)):
        self.n_classes = n_classes
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        self.confusion = torch.zeros(self.n_classes, self.n_classes, dtype=torch.long)

    def accumulate(self, learn) -> None:
        """Add one batch (fastai calls this)."""
        pred = learn.pred.as_subclass(torch.Tensor).argmax(dim=1).flatten()
        target = learn.yb[0].as_subclass(torch.Tensor).flatten()
        keep = target != IGNORE_INDEX
        idx = target[keep] * self.n_classes + pred[keep]
        counts = torch.bincount(idx, minlength=self.n_classes**2).cpu()
        self.confusion += counts.reshape(self.n_classes, self.n_classes)

    @property
    def value(self) -> float:
        """The macro Dice (0.0 when no foreground class occurs at all)."""
        return macro_dice(self.confusion.numpy())

    @property
    def name(self) -> str:
        """Metric name in fastai's records and for monitoring."""
        return "macro_dice"


def macro_dice(confusion: np.ndarray) -> float:
    """Mean Dice of the non-background classes present in a confusion matrix (rows = truth).

    Examples
    --------
    >>> macro_dice(np.array([[90, 0], [5, 5]]))
    0.6666666666666666
    """
    confusion = np.asarray(confusion, float)
    tp = np.diag(confusion)[1:]
    total = (confusion.sum(0) + confusion.sum(1))[1:]
    seen = total > 0
    return float(np.mean(2 * tp[seen] / total[seen])) if seen.any() else 0.0

"""Model bundles: a folder with ``weights.pt`` (tensors only) and ``config.json``.

``config.json`` holds everything needed to rebuild and use the network: the
architecture, the input channels and their normalisation, the calibration
temperature, the class names and a summary of the training. The weights are
a plain ``state_dict`` saved with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so loading a bundle never unpickles code.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from astrid.classes import CLASS_NAMES
from astrid.manifest import atomic_write, sha256_file
from astrid.model._torch import resolve_torch_device
from astrid.model.data import Normalisation, parse_channels
from astrid.model.net import UNetSpec, build_unet, count_parameters

__all__ = [
    "CONFIG_NAME",
    "SCHEMA",
    "WEIGHTS_NAME",
    "ModelConfig",
    "ModelError",
    "TrainedModel",
    "load_model",
    "save_model",
]

SCHEMA = "astrid.model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.pt"


class ModelError(ValueError):
    """A model bundle is missing, malformed, or does not match its architecture."""


@dataclass
class ModelConfig:
    """How to rebuild and feed a trained network.

    Attributes
    ----------
    spec : UNetSpec
        Architecture.
    channels : tuple of str
        Input channel names, in order.
    normalisation : Normalisation
        Input normalisation.
    temperature : float
        Calibration temperature applied to the logits.
    classes : tuple of str
        Output class names, in code order.
    tile_size : int
        Training tile side.
    training : dict
        Free-form summary of how it was trained (dataset hash, epochs...).
    """

    spec: UNetSpec
    channels: tuple[str, ...]
    normalisation: Normalisation = field(default_factory=Normalisation)
    temperature: float = 1.0
    classes: tuple[str, ...] = CLASS_NAMES
    tile_size: int = 64
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = parse_channels(self.channels)
        self.classes = tuple(self.classes)
        if len(self.channels) != self.spec.n_channels:
            msg = (f"config names {len(self.channels)} channels {self.channels} but the "
                   f"architecture takes {self.spec.n_channels}")
            raise ModelError(msg)
        if len(self.classes) != self.spec.n_classes:
            msg = (f"config names {len(self.classes)} classes but the architecture outputs "
                   f"{self.spec.n_classes}")
            raise ModelError(msg)
        if not self.temperature > 0:
            msg = f"temperature must be positive, got {self.temperature}"
            raise ModelError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "schema": SCHEMA,
            "architecture": self.spec.to_dict(),
            "channels": list(self.channels),
            "normalisation": self.normalisation.to_dict(),
            "temperature": float(self.temperature),
            "classes": list(self.classes),
            "tile_size": int(self.tile_size),
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ModelError
            Naming the problem: wrong schema, missing or malformed entries.
        """
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            msg = f"{source} is not an AstrID model config (schema {SCHEMA!r} expected)"
            raise ModelError(msg)
        missing = {"architecture", "channels", "normalisation", "temperature", "classes"} - set(raw)
        if missing:
            msg = f"{source} lacks {sorted(missing)}"
            raise ModelError(msg)
        try:
            return cls(
                spec=UNetSpec.from_dict(raw["architecture"]),
                channels=tuple(raw["channels"]),
                normalisation=Normalisation.from_dict(raw["normalisation"]),
                temperature=float(raw["temperature"]),
                classes=tuple(raw["classes"]),
                tile_size=int(raw.get("tile_size", 64)),
                training=dict(raw.get("training", {})),
            )
        except (TypeError, ValueError) as err:
            msg = f"{source}: {err}"
            raise ModelError(msg) from err


@dataclass
class TrainedModel:
    """A network together with its config: what :func:`predict_image` runs.

    Attributes
    ----------
    net : torch.nn.Module
        The U-Net.
    config : ModelConfig
        Its architecture, inputs, normalisation and temperature.
    """

    net: nn.Module
    config: ModelConfig
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_parameters(self) -> int:
        """Trainable parameters."""
        return count_parameters(self.net)

    @property
    def temperature(self) -> float:
        """Calibration temperature."""
        return self.config.temperature


def _state_bytes(net: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_model(model: TrainedModel, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a bundle folder and return the folder.

    Parameters
    ----------
    model : TrainedModel
        Network and config.
    directory : path-like
        Bundle folder (created).
    overwrite : bool
        Replace an existing bundle there.

    Raises
    ------
    FileExistsError
        When a bundle exists there and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile
    >>> spec = UNetSpec.named("tiny", n_channels=2)
    >>> m = TrainedModel(build_unet(2, spec=spec), ModelConfig(spec, ("difference", "score")))
    >>> path = save_model(m, tempfile.mkdtemp())
    >>> sorted(p.name for p in path.iterdir())
    ['config.json', 'weights.pt']
    """
    out = Path(directory)
    if (out / CONFIG_NAME).exists() and not overwrite:
        msg = f"a model bundle exists in {out}; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / WEIGHTS_NAME, "wb", overwrite=True) as handle:
        handle.write(_state_bytes(model.net))
    raw = model.config.to_dict()
    raw["n_parameters"] = model.n_parameters
    raw["weights"] = {"file": WEIGHTS_NAME, "sha256": sha256_file(out / WEIGHTS_NAME)}
    with atomic_write(out / CONFIG_NAME, "w", overwrite=True) as handle:
        json.dump(raw, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return out


def _check_state(state: Any, net: nn.Module, source: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"{source} does not hold a state_dict of tensors"
        raise ModelError(msg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs architecture {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
        msg = (f"weights {source} do not match the architecture in its {CONFIG_NAME} "
               f"(a model file from another architecture?): " + "; ".join(parts))
        raise ModelError(msg)


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a bundle written by :func:`save_model`.

    Parameters
    ----------
    directory : path-like
        Bundle folder (or its ``config.json``).
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    TrainedModel
        In evaluation mode.

    Raises
    ------
    FileNotFoundError
        When the folder lacks ``config.json`` or the weights file.
    ModelError
        When the config is malformed, or the weights do not fit its
        architecture or its recorded hash.

    Examples
    --------
    >>> import tempfile
    >>> spec = UNetSpec.named("tiny", n_channels=1)
    >>> path = save_model(TrainedModel(build_unet(1, spec=spec), ModelConfig(spec, ("score",))),
    ...                   tempfile.mkdtemp())
    >>> load_model(path).config.channels
    ('score',)
    """
    root = Path(directory)
    if root.name == CONFIG_NAME:
        root = root.parent
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        msg = f"no model bundle at {root} (missing {CONFIG_NAME})"
        raise FileNotFoundError(msg)
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{config_path} is not valid JSON: {err}"
        raise ModelError(msg) from err
    config = ModelConfig.from_dict(raw, source=str(config_path))
    weights = raw.get("weights", {})
    weights_path = root / weights.get("file", WEIGHTS_NAME)
    if not weights_path.is_file():
        msg = f"model bundle {root} lacks its weights file {weights_path.name}"
        raise FileNotFoundError(msg)
    net = build_unet(config.spec.n_channels, config.spec.n_classes, spec=config.spec)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means "not a tensors-only state_dict"
        msg = f"{weights_path} is not a tensors-only torch state_dict: {err}"
        raise ModelError(msg) from err
    _check_state(state, net, weights_path)
    if "sha256" in weights and sha256_file(weights_path) != weights["sha256"]:
        msg = (f"{weights_path} is not the weights file {config_path.name} was written with "
               "(sha256 differs)")
        raise ModelError(msg)
    net.load_state_dict(state, strict=True)
    net.to(resolve_torch_device(device)).eval()
    return TrainedModel(net, config)

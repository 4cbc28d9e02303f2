"""The U-Net that segments and classifies transients, with calibrated confidence.

The only AstrID package that imports torch and fastai. Its parts:

:mod:`~astrid.model.data`
    channel stacks, robust normalisation, tile sampling and augmentation;
:mod:`~astrid.model.net`
    the fastai ``DynamicUnet`` over a small n-channel encoder, loss and metric;
:mod:`~astrid.model.train`
    :func:`train_unet`: manifest in, calibrated model bundle out;
:mod:`~astrid.model.calibration`
    temperature scaling and Monte-Carlo dropout;
:mod:`~astrid.model.inference`
    :func:`predict_image`: tiled, blended whole-image inference on CPU or GPU;
:mod:`~astrid.model.bundle`
    :func:`save_model` / :func:`load_model` (tensors-only weights + JSON config).

Examples
--------
>>> from astrid.model import build_unet, count_parameters
>>> count_parameters(build_unet(4, 9, size="small"))
365081
"""

from astrid.model.bundle import ModelConfig, ModelError, TrainedModel, load_model, save_model
from astrid.model.calibration import Calibration, TemperatureFit, fit_temperature, mc_dropout
from astrid.model.data import CHANNELS, IGNORE_INDEX, Augmentation, Normalisation, read_stack
from astrid.model.inference import Prediction, predict_image, tile_layout
from astrid.model.net import MODEL_SIZES, SegmentationLoss, UNetSpec, build_unet, count_parameters
from astrid.model.train import LOSSES, TrainResult, train_unet

__all__ = [
    "CHANNELS",
    "IGNORE_INDEX",
    "LOSSES",
    "MODEL_SIZES",
    "Augmentation",
    "Calibration",
    "ModelConfig",
    "ModelError",
    "Normalisation",
    "Prediction",
    "SegmentationLoss",
    "TemperatureFit",
    "TrainResult",
    "TrainedModel",
    "UNetSpec",
    "build_unet",
    "count_parameters",
    "fit_temperature",
    "load_model",
    "mc_dropout",
    "predict_image",
    "read_stack",
    "save_model",
    "tile_layout",
    "train_unet",
]

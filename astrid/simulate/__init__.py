"""Realistic synthetic training data: fields, epochs, transients, artifacts and labels.

Public entry points:

- :func:`simulate_field` - one field (reference coadd + science epochs) in memory,
  with ideal difference, noise model, class/instance maps and a truth catalogue;
- :func:`generate_dataset`, :func:`generate_named`, :func:`regenerate` and
  :data:`DATASETS` - datasets on disk with a manifest, reproducible byte for byte;
- :mod:`astrid.simulate.augment` - flips/rotations, noise and artifact injection
  applied consistently to image stacks and label maps.
"""

from astrid.simulate.augment import (
    Augmented,
    add_noise,
    flip_rotate,
    inject_artifacts,
    random_flip_rotate,
)
from astrid.simulate.dataset import (
    DATASETS,
    RegenerationError,
    generate_dataset,
    generate_named,
    object_counts,
    regenerate,
)
from astrid.simulate.field import (
    SimulatedEpoch,
    SimulatedField,
    SimulatedReference,
    check_parameters,
    simulate_field,
)
from astrid.simulate.labels import CATALOG_COLUMNS, PRIORITY
from astrid.simulate.psf import MoffatPSF

__all__ = [
    "CATALOG_COLUMNS",
    "DATASETS",
    "PRIORITY",
    "Augmented",
    "MoffatPSF",
    "RegenerationError",
    "SimulatedEpoch",
    "SimulatedField",
    "SimulatedReference",
    "add_noise",
    "check_parameters",
    "flip_rotate",
    "generate_dataset",
    "generate_named",
    "inject_artifacts",
    "object_counts",
    "random_flip_rotate",
    "regenerate",
    "simulate_field",
]

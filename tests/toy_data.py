"""A toy four-channel dataset shared by the model and tracking tests."""

import math

import numpy as np

from astrid.classes import CLASS_CODES
from astrid.manifest import Manifest, write_fits

SUPERNOVA = CLASS_CODES["supernova"]
COSMIC_RAY = CLASS_CODES["cosmic_ray"]


def make_dataset(root, *, n=4, size=64, seed=0, splits=("train", "train", "val", "test")):
    """Noise + bright blobs (supernova) + single hot pixels (cosmic rays), all four channels."""
    rng = np.random.default_rng(seed)
    manifest = Manifest(root=root, name="toy")
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        sid = f"f{k:04d}_e01"
        labels = np.zeros((size, size), np.uint8)
        signal = np.zeros((size, size))
        for _ in range(3):
            cy, cx = rng.integers(6, size - 6, 2)
            blob = 80 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
            signal += blob
            labels[blob > 15] = SUPERNOVA
        for _ in range(4):
            cy, cx = rng.integers(2, size - 2, 2)
            signal[cy, cx] += 200
            labels[cy, cx] = COSMIC_RAY
        reference = 100 + 5 * rng.standard_normal((size, size))
        science = 100 + 5 * rng.standard_normal((size, size)) + signal
        difference = science - reference
        images = {"science": science, "reference": reference, "difference": difference,
                  "score": difference / (5 * math.sqrt(2)), "labels": labels}
        sample = {"id": sid, "field": k, "epoch": 1, "split": splits[k % len(splits)],
                  "survey": "ztf"}
        for key, image in images.items():
            write_fits(root / sid / f"{key}.fits",
                       image if key == "labels" else image.astype(np.float32))
            manifest.add_product(sample, key, f"{sid}/{key}.fits")
        manifest.samples.append(sample)
    manifest.save()
    return manifest

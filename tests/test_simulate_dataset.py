"""Datasets on disk: contract, reproducibility, splits, regeneration, refusals."""

import json

import numpy as np
import pandas as pd
import pytest

from astrid.classes import CLASS_NAMES
from astrid.manifest import Manifest, read_fits
from astrid.simulate import (
    DATASETS,
    RegenerationError,
    generate_dataset,
    generate_named,
    object_counts,
    regenerate,
)

SMALL = dict(n_fields=3, n_epochs=2, image_size=32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("small") / "ds", seed=4, **SMALL)


def test_dataset_follows_the_contract(small):
    assert len(small) == 6
    assert small.path.is_file()
    gen = small.generator
    assert gen["function"] == "astrid.simulate.generate_dataset"
    assert gen["survey"] == "ztf" and gen["seed"] == 4
    assert gen["params"]["n_fields"] == 3 and gen["params"]["image_size"] == 32
    assert "n_supernovae" in gen["params"]  # every parameter, defaults included
    assert {"astrid_version", "git_commit", "created_utc"} <= set(small.info)
    assert small.verify() == []
    keys = {"id", "field", "epoch", "split", "survey", "band", "mjd", "reference", "science",
            "psf_reference", "psf_science", "labels", "instances", "truth"}
    for sample in small.samples:
        assert keys <= set(sample)
        assert sample["id"] == f"f{sample['field']:04d}_e{sample['epoch']:02d}"
        sci, header = read_fits(small.file(sample, "science"))
        ref, ref_header = read_fits(small.file(sample, "reference"))
        labels = small.read(sample, "labels")
        inst = small.read(sample, "instances")
        psf = small.read(sample, "psf_science")
        assert sci.dtype == np.float32 and ref.dtype == np.float32 and sci.shape == (32, 32)
        assert labels.dtype == np.uint8 and labels.max() < len(CLASS_NAMES)
        assert inst.dtype == np.int32
        assert psf.shape[0] % 2 == 1 and psf.sum() == pytest.approx(1.0, abs=1e-4)
        for key in ("GAIN", "RDNOISE", "SATURATE", "SEEING", "FWHMPIX", "MJD", "EXPTIME", "ZP",
                    "SKYLEVEL", "SKYSIG", "CTYPE1", "CRVAL1", "CD1_1"):
            assert key in header and key in ref_header
        assert header["MJD"] == pytest.approx(sample["mjd"])
        truth = pd.read_csv(small.file(sample, "truth"))
        assert {"instance", "x", "y", "kind", "flux", "mag", "snr", "ambiguous"} <= set(truth)
        assert sorted(set(np.unique(inst)) - {0}) == sorted(truth.instance)
        assert truth.ambiguous.dtype == bool


def test_same_seed_gives_identical_bytes(small, tmp_path):
    again = generate_dataset(tmp_path / "again", seed=4, **SMALL)
    assert again.files == small.files
    other = generate_dataset(tmp_path / "other", seed=5, **SMALL)
    assert set(other.files) == set(small.files)
    differ = [rel for rel in small.files if other.files[rel] != small.files[rel]]
    assert len(differ) >= len(small.files) - 2  # psf stamps could coincide, images never


def test_a_field_does_not_depend_on_how_many_fields_follow(small, tmp_path):
    more = generate_dataset(tmp_path / "more", seed=4, **{**SMALL, "n_fields": 4})
    for rel, digest in small.files.items():
        assert more.files[rel] == digest


def test_splits_never_share_a_field(tmp_path):
    m = generate_dataset(tmp_path / "ds", seed=1, n_fields=7, n_epochs=2, image_size=24)
    by_field = {}
    for sample in m.samples:
        by_field.setdefault(sample["field"], set()).add(sample["split"])
    assert all(len(s) == 1 for s in by_field.values())
    assert {s for v in by_field.values() for s in v} == {"train", "val", "test"}


def test_regenerate_checks_every_file(small, tmp_path):
    rebuilt = regenerate(small.path, tmp_path / "rebuilt")
    assert rebuilt.files == small.files and rebuilt.name == small.name
    # a pixel-free copy of the manifest is enough to rebuild
    copy = tmp_path / "manifests" / "small.json"
    copy.parent.mkdir()
    raw = json.loads(small.path.read_text())
    rel = sorted(raw["files"])[0]
    raw["files"][rel] = "0" * 64
    copy.write_text(json.dumps(raw))
    with pytest.raises(RegenerationError) as info:
        regenerate(copy, tmp_path / "tampered")
    assert info.value.mismatches == [rel]


def test_regenerate_refuses_foreign_manifests(tmp_path):
    m = Manifest(root=tmp_path / "x", name="x", generator={"function": "elsewhere"})
    m.root.mkdir()
    m.save()
    with pytest.raises(ValueError, match="generate_dataset"):
        regenerate(m.path, tmp_path / "y")


def test_overwrite_refusal(small, tmp_path):
    with pytest.raises(FileExistsError):
        generate_dataset(small.root, seed=4, **SMALL)
    out = tmp_path / "ds"
    generate_dataset(out, seed=0, n_fields=1, n_epochs=1, image_size=16)
    m = generate_dataset(out, seed=0, n_fields=1, n_epochs=1, image_size=16, overwrite=True)
    assert m.verify() == []


def test_named_recipes():
    assert set(DATASETS) == {"tiny", "quick", "full"}
    full = DATASETS["full"]["params"]
    assert full["n_fields"] * full["n_epochs"] >= 1000
    assert full["bands"] == ["g", "r", "i"] and full["visits_per_night"] == 2
    assert full["hot_pixels_fixed"] and 6 <= full["n_epochs"] <= 8
    quick = DATASETS["quick"]["params"]
    assert 40 <= quick["n_fields"] <= 60 and quick["image_size"] == 256
    assert DATASETS["tiny"]["params"]["image_size"] <= 96


def test_generate_named_tiny_and_counts(tmp_path):
    m = generate_named("tiny", tmp_path / "tiny")
    p = DATASETS["tiny"]["params"]
    assert len(m) == p["n_fields"] * p["n_epochs"] and m.name == "tiny"
    counts = object_counts(m)
    assert counts.loc["supernova", "total"] > 0
    assert (counts[["train", "val", "test"]].sum(axis=1) == counts.total).all()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"survey": "sdss"}, "survey"),
        ({"n_fields": 0}, "n_fields"),
        ({"image_size": -5}, "image_size"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_galaxy": 3}, "n_galaxy"),
        ({"n_cosmic_rays": -2}, "n_cosmic_rays"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "fractions"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_dataset_input(tmp_path, kwargs, word):
    params = {"n_fields": 1, "n_epochs": 1, "image_size": 16, **kwargs}
    with pytest.raises(ValueError, match=word):
        generate_dataset(tmp_path / "ds", **params)
    assert not (tmp_path / "ds").exists()  # nothing written


def test_unknown_recipe():
    with pytest.raises(ValueError, match="recipe"):
        generate_named("huge", "/nonexistent")

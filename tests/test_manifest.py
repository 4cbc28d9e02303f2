import json

import numpy as np
import pytest

from astrid.manifest import (
    Manifest,
    ManifestError,
    assign_splits,
    atomic_write,
    prepare_output_dir,
    read_fits,
    sha256_file,
    write_fits,
)


def test_fits_roundtrip_is_deterministic(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    h1 = write_fits(tmp_path / "a.fits", data, {"GAIN": (6.2, "e-/ADU"), "MJD": 60000.5})
    h2 = write_fits(tmp_path / "b.fits", data, {"GAIN": (6.2, "e-/ADU"), "MJD": 60000.5})
    assert h1 == h2 == sha256_file(tmp_path / "a.fits")
    back, header = read_fits(tmp_path / "a.fits")
    assert np.array_equal(back, data) and header["GAIN"] == 6.2
    with pytest.raises(FileExistsError):
        write_fits(tmp_path / "a.fits", data)


def test_read_fits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_fits(tmp_path / "missing.fits")
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 50)
    with pytest.raises(ManifestError, match="corrupt or unreadable"):
        read_fits(tmp_path / "bad.fits")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, overwrite=True) as handle:
        handle.write("new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_splits_by_field_are_seeded_and_complete():
    a = assign_splits(range(20), seed=3)
    assert a == assign_splits(range(20), seed=3)
    assert a != assign_splits(range(20), seed=4)
    assert set(a.values()) == {"train", "val", "test"}
    assert sum(v == "train" for v in a.values()) == 14
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(range(5), fractions=(0.5, 0.5, 0.5))


def test_manifest_save_load_verify(tmp_path):
    m = Manifest(root=tmp_path, name="t")
    write_fits(tmp_path / "s.fits", np.zeros((2, 2), np.float32))
    sample = {"id": "f0_e1", "split": "train"}
    m.samples.append(sample)
    m.add_product(sample, "science", "s.fits")
    m.save()
    back = Manifest.load(tmp_path)
    assert back.samples == m.samples and back.content_hash() == m.content_hash()
    assert back.verify() == []
    assert back.read(back.sample("f0_e1"), "science").shape == (2, 2)
    (tmp_path / "s.fits").write_bytes(b"changed")
    assert back.verify() == ["sha256 mismatch: s.fits"]
    with pytest.raises(ManifestError, match="no 'labels' product"):
        back.file(sample, "labels")


def test_manifest_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ManifestError, match="not an AstrID dataset manifest"):
        Manifest.load(tmp_path)


def test_prepare_output_dir_never_overwrites(tmp_path):
    out = prepare_output_dir(tmp_path / "run")
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_output_dir(out)
    assert (out / "keep.txt").exists()

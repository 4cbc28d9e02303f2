"""The named datasets' manifests in data_manifests/ rebuild byte for byte on this machine."""

from pathlib import Path

import pytest

from astrid import cli
from astrid.manifest import Manifest
from astrid.simulate import DATASETS

MANIFESTS = Path(__file__).resolve().parent.parent / "data_manifests"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_named_manifest_matches_recipe(name):
    manifest = Manifest.load(MANIFESTS / f"{name}.json")
    recipe = DATASETS[name]
    assert manifest.generator["seed"] == recipe["seed"]
    assert manifest.generator["params"]["n_fields"] == recipe["params"]["n_fields"]
    assert len(manifest) == recipe["params"]["n_fields"] * recipe["params"]["n_epochs"]
    assert all(s["split"] in {"train", "val", "test"} for s in manifest.samples)
    if name == "full":
        assert len(manifest) >= 1000


@pytest.mark.parametrize("name", ["tiny", "quick"])
def test_cli_rebuilds_identical_bytes(name, tmp_path, capsys):
    out = tmp_path / name
    assert cli.main(["data", "build", name, "--out", str(out)]) == 0
    assert cli.main(["data", "verify", str(out)]) == 0
    assert "all files match" in capsys.readouterr().out
    assert cli.main(["data", "build", name, "--out", str(out)]) == 2  # never overwrites

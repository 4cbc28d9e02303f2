"""The cutout inspector, driven headless: clicks and values change the stored labels."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import astrid
from astrid.labelling import LabelStore
from astrid.manifest import Manifest, write_fits
from astrid.widgets import ArrayStamps, CutoutInspector, ManifestStamps, cut_stamp

ZTF = Path(astrid.__file__).parents[1].parent / "shared" / "data" / "ztf_alerts"
PNG = b"\x89PNG"


@pytest.fixture
def cands():
    return pd.DataFrame({
        "candidate_id": ["c0", "c1", "c2", "c3"],
        "score": [0.95, 0.5, 0.1, 0.7],
        "uncertainty": [0.0, 0.0, 0.0, 0.0],
        "kind": ["supernova", "cosmic_ray", "cosmic_ray", "variable"],
        "drb": [0.1, 0.5, 0.1, 0.7],
    })


@pytest.fixture
def stamps():
    rng = np.random.default_rng(1)
    return ArrayStamps(rng.normal(size=(4, 3, 15, 15)).astype(np.float32), ["c0", "c1", "c2", "c3"])


@pytest.fixture
def inspector(cands, stamps, tmp_path):
    return CutoutInspector(cands, stamps, store=LabelStore(tmp_path / "labels.csv"), labeller="ann")


def _stored(ui):
    table = ui.store.load()
    return {(r.candidate_id, r.labeller): (r.label, r.kind, r.note) for r in table.itertuples()}


def test_buttons_and_values_store_labels(inspector):
    ui = inspector
    assert ui.view.candidate_id.tolist() == ["c1", "c3", "c2", "c0"]  # queue: closest to 0.5 first
    assert ui.current.candidate_id == "c1" and ui.image.value[:4] == PNG
    assert ui.prev_button.disabled and not ui.next_button.disabled
    ui.label_buttons["bogus"].click()
    assert _stored(ui) == {("c1", "ann"): ("bogus", "", "")}
    assert ui.current.candidate_id == "c3"  # moved on
    ui.kind_menu.value = "variable"
    ui.note_text.value = "periodic?"
    ui.label_buttons["real"].click()
    assert _stored(ui)[("c3", "ann")] == ("real", "variable", "periodic?")
    assert ui.kind_menu.value == "" and ui.note_text.value == ""  # reset for the next one
    ui.prev_button.click()
    ui.label_buttons["ambiguous"].click()  # relabel c3: the latest label wins
    assert _stored(ui)[("c3", "ann")] == ("ambiguous", "", "")
    assert len(ui.store.load()) == 2
    ui.prev()
    assert ui.current.candidate_id == "c3" and "ann: ambiguous" in ui.info.value
    assert "saved" in ui.status.value


def test_keyboard_box(inspector):
    ui = inspector
    ui.key_box.value = "n"
    assert ui.current.candidate_id == "c3" and ui.key_box.value == ""
    ui.key_box.value = "p"
    assert ui.current.candidate_id == "c1"
    ui.key_box.value = "r"
    ui.key_box.value = "b"
    ui.key_box.value = "a"
    assert [_stored(ui)[(c, "ann")][0] for c in ("c1", "c3", "c2")] == ["real", "bogus", "ambiguous"]
    assert ui.current.candidate_id == "c0"
    ui.key_box.value = "x"
    assert "unknown key" in ui.status.value
    ui.key_box.value = "z"
    assert "no context" in ui.status.value and not ui.context_button.value


def test_navigation_filter_and_sort(inspector):
    ui = inspector
    ui.prev()
    assert ui.position == 0
    for _ in range(10):
        ui.next_button.click()
    assert ui.position == 3 and ui.next_button.disabled
    assert ui.apply_filter(kind="cosmic_ray") == 2
    assert set(ui.view.candidate_id) == {"c1", "c2"} and ui.kind_filter.value == "cosmic_ray"
    ui.kind_filter.value = "(all)"  # the dropdown's observer refilters
    assert len(ui.view) == 4
    ui.score_range.value = (0.6, 1.0)
    assert set(ui.view.candidate_id) == {"c0", "c3"}
    ui.apply_filter(score_range=(0.0, 1.0))
    ui.sort_menu.value = "score"
    assert ui.view.candidate_id.tolist() == ["c2", "c1", "c3", "c0"]
    ui.sort_by("-score")
    assert ui.view.candidate_id.tolist() == ["c0", "c3", "c1", "c2"] and ui.sort_menu.value == "-score"
    ui.sort_by("drb_disagreement")
    assert ui.view.candidate_id.iloc[0] == "c0"  # |0.95 - 0.1| is the largest
    ui.apply_filter(kind="supernova", score_range=(0.0, 0.2))
    assert ui.current is None and ui.label("real") is None and "nothing to label" in ui.status.value
    with pytest.raises(ValueError, match="kind must be one of"):
        ui.apply_filter(kind="unicorn")
    with pytest.raises(ValueError, match="score_range"):
        ui.apply_filter(score_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="sort key"):
        ui.sort_by("random")
    with pytest.raises(ValueError, match="label must be one of"):
        ui.label("maybe")


def test_inspector_validates(cands, stamps, tmp_path):
    store = LabelStore(tmp_path / "labels.csv")
    with pytest.raises(ValueError, match="candidate_id"):
        CutoutInspector(cands.drop(columns="candidate_id"), stamps, store=store, labeller="ann")
    with pytest.raises(ValueError, match="labeller"):
        CutoutInspector(cands, stamps, store=store, labeller="")
    with pytest.raises(ValueError, match="triplet"):
        CutoutInspector(cands, object(), store=store, labeller="ann")
    with pytest.raises(ValueError, match="unique"):
        CutoutInspector(pd.concat([cands, cands]), stamps, store=store, labeller="ann")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CutoutInspector(cands.assign(score=3.0), stamps, store=store, labeller="ann")


def test_cut_stamp_pads_with_nan():
    image = np.arange(100.0).reshape(10, 10)
    stamp = cut_stamp(image, 9, 0, size=5)
    assert stamp.shape == (5, 5) and stamp[2, 2] == 9.0
    assert np.isnan(stamp[:2]).all() and np.isnan(stamp[:, 3:]).all()
    assert np.array_equal(cut_stamp(image, 4.6, 4.4, size=3), image[3:6, 4:7])
    with pytest.raises(ValueError, match="odd"):
        cut_stamp(image, 1, 1, size=4)


def _image_manifest(root):
    manifest = Manifest(root=root, name="tiny")
    yy, xx = np.mgrid[:40, :40]
    for i in range(2):
        sample = {"id": f"f{i}_e01", "field": i, "split": "train"}
        reference = np.zeros((40, 40), np.float32)
        science = (100 * np.exp(-((xx - 10 - i) ** 2 + (yy - 20) ** 2) / 4)).astype(np.float32)
        for key, image in (("science", science), ("reference", reference)):
            write_fits(root / f"{sample['id']}_{key}.fits", image)
            manifest.add_product(sample, key, f"{sample['id']}_{key}.fits")
        manifest.samples.append(sample)
    manifest.save()
    return manifest


def test_image_manifest_cuts_stamps_and_zooms_to_context(tmp_path):
    manifest = _image_manifest(tmp_path / "ds")
    cands = pd.DataFrame({"candidate_id": ["f0_e01#1", "f1_e01#1", "f1_e01#2"],
                          "sample_id": ["f0_e01", "f1_e01", "f1_e01"],
                          "x": [10.0, 11.0, 1.0], "y": [20.0, 20.0, 1.0], "kind": ["supernova"] * 3})
    source = ManifestStamps(manifest, size=15)
    triplet = source.triplet(cands.iloc[0])
    assert triplet.shape == (3, 15, 15) and triplet[2, 7, 7] == pytest.approx(100.0)  # science - reference
    assert np.isnan(source.triplet(cands.iloc[2])[0, 0, 0])  # off the image edge
    image, x, y = source.context(cands.iloc[1])
    assert image.shape == (40, 40) and (x, y) == (11.0, 20.0)
    store = LabelStore(tmp_path / "labels.csv")
    ui = CutoutInspector.from_manifest(manifest, store=store, labeller="ann", candidates=cands, size=15)
    assert not ui.context_button.disabled and bytes(ui.context_image.value) == b""
    ui.context_button.value = True  # "zoom to context"
    assert ui.context_image.value[:4] == PNG and ui.context_image.layout.display is None
    ui.key_box.value = "z"
    assert ui.context_image.layout.display == "none"
    ui.label("real", kind="supernova", note="by keyword")
    assert _stored(ui)[(ui.view.candidate_id.iloc[0], "ann")] == ("real", "supernova", "by keyword")
    with pytest.raises(ValueError, match="candidates table"):
        CutoutInspector.from_manifest(manifest, store=store, labeller="ann")


def test_alerts_manifest_inspector(tmp_path):
    if not (ZTF / "labels.csv").is_file():
        pytest.skip("shared ZTF alert data not found beside the repository")
    from astrid.alerts import alerts_to_manifest, read_alerts

    folder = ZTF / "kowalski/data/ztf_alerts/20231012"
    manifest = alerts_to_manifest(folder, tmp_path / "alerts", max_alerts=4)
    store = LabelStore(tmp_path / "labels.csv")
    ui = CutoutInspector.from_manifest(manifest, store=store, labeller="ann")
    assert len(ui.view) == 4 and ui.context_button.disabled and ui.image.value[:4] == PNG
    first = ui.current.candidate_id
    ui.label_buttons["real"].click()
    assert _stored(ui) == {(first, "ann"): ("real", "", "")}
    table = read_alerts(folder, max_alerts=4)
    same = ArrayStamps.from_alert_table(table)
    assert np.array_equal(same.triplet({"candidate_id": first}), ManifestStamps(manifest).triplet(
        {"candidate_id": first}))

"""Label store (atomic, concurrent), agreement, consensus, queue, training manifests."""

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import astrid
from astrid.labelling import (
    COLUMNS,
    LabelStore,
    active_learning_queue,
    candidates_from_manifest,
    candidates_from_truth,
    cohen_kappa,
    consensus,
    consensus_to_manifest,
    fleiss_kappa,
    pairwise_kappa,
    rating_table,
)
from astrid.manifest import Manifest, write_fits

ZTF = Path(astrid.__file__).parents[1].parent / "shared" / "data" / "ztf_alerts"


def _labels(rows):
    return pd.DataFrame(rows, columns=["candidate_id", "labeller", "label", "kind"]).assign(
        note="", time=[f"2026-01-01T00:00:{i:02d}" for i in range(len(rows))])


# ----------------------------------------------------------------------------- store


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_store_add_load_latest_wins(tmp_path, suffix):
    store = LabelStore(tmp_path / f"labels{suffix}")
    assert store.load().empty and list(store.load().columns) == list(COLUMNS)
    store.add("c1", "ann", "real", kind="supernova", note="clear host")
    store.add("c2", "ann", "bogus", kind="cosmic_ray")
    store.add("c1", "bob", "ambiguous")
    store.add("c1", "ann", "bogus", kind="dipole")  # replaces ann's first label of c1
    table = store.load()
    assert len(table) == 3
    ann_c1 = table[(table.candidate_id == "c1") & (table.labeller == "ann")].iloc[0]
    assert (ann_c1.label, ann_c1.kind, ann_c1.note) == ("bogus", "dipole", "")
    assert store.path.is_file() and not list(store.events_dir.glob("*.json"))  # compacted
    reread = LabelStore(store.path).load()
    pd.testing.assert_frame_equal(reread, table)
    assert store.labels_for("c2").label.tolist() == ["bogus"]
    assert pd.Timestamp(table.time.iloc[0]).tzinfo is not None  # UTC ISO


def test_store_validates(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        LabelStore(tmp_path / "labels.txt")
    store = LabelStore(tmp_path / "labels.csv")
    with pytest.raises(ValueError, match="label must be one of"):
        store.add("c1", "ann", "maybe")
    with pytest.raises(ValueError, match="kind must be"):
        store.add("c1", "ann", "real", kind="unicorn")
    with pytest.raises(ValueError, match="labeller"):
        store.add("c1", " ", "real")
    with pytest.raises(ValueError, match="candidate_id"):
        store.add("", "ann", "real")
    assert store.load().empty


def test_store_files_are_always_complete(tmp_path):
    store = LabelStore(tmp_path / "labels.csv")
    for i in range(5):
        store.add(f"c{i}", "ann", "real", note='comma, "quote"\nnewline')
        assert len(pd.read_csv(store.path)) == i + 1  # the table is never half written
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []
    assert store.load().note.iloc[0] == 'comma, "quote"\nnewline'


def _label_many(path, labeller, n, start=None):
    store = LabelStore(path)
    if start is not None:
        start.wait(30)  # both writers begin together
    for i in range(n):
        store.add(f"cand{i:03d}", labeller, "real" if i % 2 else "bogus")


def test_two_processes_lose_no_label(tmp_path):
    path = tmp_path / "labels.csv"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_label_many, args=(path, name, 50, start)) for name in ("ann", "bob")]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    table = LabelStore(path).load()
    assert len(table) == 100
    assert table.groupby("labeller").size().to_dict() == {"ann": 50, "bob": 50}


def test_threads_lose_no_label(tmp_path):
    path = tmp_path / "labels.parquet"
    threads = [threading.Thread(target=_label_many, args=(path, f"t{k}", 25)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(LabelStore(path).load()) == 100


# ----------------------------------------------------------------------------- agreement


def test_cohen_kappa_hand_case():
    a = ["real"] * 6 + ["bogus"] * 4
    b = ["real"] * 5 + ["bogus"] * 4 + ["real"]
    # p_o = 8/10, p_e = 0.6*0.6 + 0.4*0.4 = 0.52, kappa = 0.28 / 0.48 = 7/12
    assert cohen_kappa(a, b) == pytest.approx(7 / 12, abs=1e-12)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(["real", "bogus"], ["bogus", "real"]) == -1.0
    assert np.isnan(cohen_kappa(["real"] * 3, ["real"] * 3))
    with pytest.raises(ValueError, match="same length"):
        cohen_kappa(["real"], ["real", "bogus"])
    with pytest.raises(ValueError, match="empty"):
        cohen_kappa([], [])


def test_fleiss_kappa_hand_cases():
    # P_i = 1, 1, 0 -> P = 2/3; p_j = 1/2, 1/2 -> P_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1]]) == pytest.approx(1 / 3, abs=1e-12)
    assert fleiss_kappa([[3, 0], [0, 3]]) == 1.0
    wikipedia = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                 [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(wikipedia) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        fleiss_kappa([[3, -1], [1, 1]])


def test_rating_table_and_pairwise_kappa():
    labels = _labels([("c1", "a", "real", ""), ("c1", "b", "real", ""), ("c2", "a", "bogus", ""),
                      ("c2", "b", "real", ""), ("c3", "a", "bogus", "")])
    table = rating_table(labels)
    assert table.loc["c1"].tolist() == [2, 0, 0] and table.loc["c2"].tolist() == [1, 1, 0]
    pairs = pairwise_kappa(labels)
    assert pairs[["labeller_a", "labeller_b", "n_common"]].values.tolist() == [["a", "b", 2.0]]
    assert pairs.kappa.iloc[0] == pytest.approx(0.0)  # b always says real


# ----------------------------------------------------------------------------- consensus


def test_consensus():
    labels = _labels([
        ("c1", "a", "real", "supernova"), ("c1", "b", "real", "variable"), ("c1", "c", "real", "supernova"),
        ("c2", "a", "real", ""), ("c2", "b", "bogus", "cosmic_ray"),
        ("c3", "a", "bogus", "dipole"), ("c3", "b", "bogus", "dipole"), ("c3", "c", "real", "supernova"),
        ("c4", "a", "real", ""),
        ("c5", "a", "real", ""), ("c5", "a", "bogus", ""),  # a changed their mind: latest wins
    ])
    result = consensus(labels).set_index("candidate_id")
    assert list(result.columns) == ["label", "kind", "n_votes", "agreement"]
    assert result.loc["c1"].tolist() == ["real", "supernova", 3, 1.0]
    assert result.loc["c2"].tolist() == ["ambiguous", "cosmic_ray", 2, 0.5]
    assert result.loc["c3", "label"] == "bogus" and result.loc["c3", "kind"] == "dipole"
    assert result.loc["c3", "agreement"] == pytest.approx(2 / 3)
    assert result.loc["c5"].tolist() == ["bogus", "", 1, 1.0]
    assert set(consensus(labels, min_votes=2).candidate_id) == {"c1", "c2", "c3"}
    with pytest.raises(ValueError, match="min_votes"):
        consensus(labels, min_votes=0)


def test_active_learning_queue_order():
    cands = pd.DataFrame({
        "candidate_id": ["sure_real", "coin_flip", "sure_bogus", "uncertain", "disputed", "unscored"],
        "score": [0.99, 0.5, 0.02, 0.9, 0.95, np.nan],
        "uncertainty": [0.0, 0.1, 0.0, 0.8, 0.0, np.nan],
    })
    labels = _labels([("disputed", "a", "real", ""), ("disputed", "b", "bogus", ""),
                      ("sure_real", "a", "real", ""), ("sure_real", "b", "real", "")])
    queue = active_learning_queue(cands, labels=labels)
    # priorities: unscored 2.0, uncertain 0.2+1.0, coin_flip 1+0.125, disputed 0.1+0.5, others ~0
    assert queue.candidate_id.tolist() == ["unscored", "uncertain", "coin_flip", "disputed",
                                           "sure_bogus", "sure_real"]
    assert queue.loc[queue.candidate_id == "disputed", "disagreement"].item() == 0.5
    assert queue.loc[queue.candidate_id == "sure_real", "n_votes"].item() == 2
    mine = active_learning_queue(cands, labels=labels, exclude_labelled_by="a")
    assert "disputed" not in set(mine.candidate_id) and len(mine) == 4
    plain = active_learning_queue(cands.drop(columns="uncertainty"), uncertainty_col=None)
    assert plain.candidate_id.iloc[:2].tolist() == ["coin_flip", "unscored"]
    with pytest.raises(ValueError, match="uncertainty"):
        active_learning_queue(cands.drop(columns="uncertainty"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        active_learning_queue(cands.assign(score=2.0))


# ----------------------------------------------------------------------------- manifests


def _image_manifest(root, n=2, size=32):
    manifest = Manifest(root=root, name="tiny")
    rng = np.random.default_rng(0)
    for i in range(n):
        sample = {"id": f"f{i:04d}_e01", "field": i, "split": ["train", "val"][i % 2]}
        for key in ("science", "reference"):
            rel = f"{sample['id']}_{key}.fits"
            write_fits(root / rel, rng.normal(size=(size, size)).astype(np.float32))
            manifest.add_product(sample, key, rel)
        rel = f"{sample['id']}_truth.csv"
        pd.DataFrame({"instance": [1, 2], "x": [5.0, 20.0], "y": [6.0, 30.0],
                      "kind": ["supernova", "cosmic_ray"]}).to_csv(root / rel, index=False)
        manifest.add_product(sample, "truth", rel)
        manifest.samples.append(sample)
    manifest.save()
    return manifest


def test_consensus_to_manifest_for_image_candidates(tmp_path):
    source = _image_manifest(tmp_path / "src")
    cands = candidates_from_truth(source)
    assert cands.candidate_id.tolist() == ["f0000_e01#1", "f0000_e01#2", "f0001_e01#1", "f0001_e01#2"]
    agreed = pd.DataFrame({"candidate_id": ["f0000_e01#1", "f0000_e01#2", "f0001_e01#1", "nowhere"],
                           "label": ["real", "bogus", "ambiguous", "real"],
                           "kind": ["supernova", "cosmic_ray", "", ""],
                           "n_votes": [2, 2, 2, 1], "agreement": [1.0, 1.0, 0.5, 1.0]})
    out = consensus_to_manifest(agreed, source, tmp_path / "out", candidates=cands)
    loaded = Manifest.load(tmp_path / "out")
    assert loaded.verify() == [] and [s["id"] for s in loaded] == ["f0000_e01"]  # ambiguous dropped
    assert loaded.skipped == [{"candidate_id": "nowhere", "reason": "not in source manifest"}]
    table = pd.read_csv(loaded.file(loaded.samples[0], "human_labels"))
    assert table[["candidate_id", "x", "y", "human_label"]].values.tolist() == [
        ["f0000_e01#1", 5.0, 6.0, "real"], ["f0000_e01#2", 20.0, 30.0, "bogus"]]
    copied, original = loaded.read(loaded.samples[0], "science"), source.read(source.samples[0], "science")
    assert np.array_equal(copied, original)
    assert out.files[loaded.samples[0]["science"]] == source.files[source.samples[0]["science"]]
    both = consensus_to_manifest(agreed, source.path, tmp_path / "out2", candidates=cands,
                                 include_ambiguous=True)
    assert [s["split"] for s in both] == ["train", "val"]  # splits kept from the source
    with pytest.raises(ValueError, match="no consensus label"):
        consensus_to_manifest(agreed.iloc[3:], source, tmp_path / "out3", candidates=cands)
    with pytest.raises(ValueError, match="min_agreement"):
        consensus_to_manifest(agreed, source, tmp_path / "out4", min_agreement=2)


def test_consensus_to_manifest_for_alerts(tmp_path):
    if not (ZTF / "labels.csv").is_file():
        pytest.skip("shared ZTF alert data not found beside the repository")
    from astrid.alerts import alerts_to_manifest

    source = alerts_to_manifest(ZTF / "kowalski/data/ztf_alerts/20231012", tmp_path / "alerts")
    cands = candidates_from_manifest(source)
    assert len(cands) == 12 and (cands.candidate_id == [s["id"] for s in source]).all()
    assert set(cands.loc[cands.kind == "moving", "objectId"]) == {
        s["objectId"] for s in source if s["label_asteroid"]}
    assert cands.score.between(0, 1).all()
    store = LabelStore(tmp_path / "labels.csv")
    first, second = cands.candidate_id.iloc[0], cands.candidate_id.iloc[1]
    store.add(first, "ann", "real", kind="moving")
    store.add(first, "bob", "real")
    store.add(second, "ann", "bogus", kind="dipole")
    out = consensus_to_manifest(consensus(store.load()), source, tmp_path / "train")
    assert out.verify() == [] and len(out) == 2
    labelled = {s["id"]: s for s in out}
    assert labelled[first]["label_real"] == 1 and labelled[first]["human_kind"] == "moving"
    assert labelled[first]["n_votes"] == 2 and labelled[second]["label_real"] == 0
    assert labelled[first]["split"] == source.sample(first)["split"]

"""Reading real ZTF alert packets: values, sign convention, damaged input, manifests."""

import gzip
import io
import json
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import astrid
from astrid.alerts import (
    META_COLUMNS,
    AlertError,
    AlertTriplet,
    Skipped,
    alerts_to_manifest,
    iter_alerts,
    read_alerts,
)
from astrid.manifest import Manifest

ZTF = Path(astrid.__file__).parents[1].parent / "shared" / "data" / "ztf_alerts"

KOWALSKI = "kowalski/data/ztf_alerts"
POSITIVE = f"{KOWALSKI}/20200202/1127561440015015001.avro"  # ZTF20aahgyet, isdiffpos t
NEGATIVE = f"{KOWALSKI}/20231012/2475433850015010009.avro"  # ZTF17aadcvhq, isdiffpos f
ASTEROID = f"{KOWALSKI}/20231012/2475433850415015007.avro"  # ZTF23abjjnhp, ssdistnr 1.0
NO_SCHEMAVSN = "ztf-avro-alert/data/396522680015020000.avro"  # oldest schema: no schemavsn, no drb
SCHEMA_32 = "ztf-avro-alert/data/2019_01_10_739260766315010006.avro"  # no drb
CUT_41 = "ztf-avro-alert/data/396522680015040001.avro"  # 41x63 stamps at a chip edge
WITH_NAN = ("Pitt-Google-Broker/docs/source/working-notes/troyraen/alerts-for-testing/"
            "ZTF18abccouv.1704170984015015001.ztf_20210901_programid1.avro")  # 0.6 % NaN pixels
MULTI = "fink-client/datatest/avro_multi_alerts.avro"  # 11 alerts in several blocks
SN_IA = "Pitt-Google-Broker/docs/source/working-notes/troyraen/SuperNNova/ZTF21abiuvdk"


@pytest.fixture(scope="module")
def ztf():
    if not (ZTF / "labels.csv").is_file():
        pytest.skip("shared ZTF alert data not found beside the repository")
    return ZTF


@pytest.fixture(scope="module")
def labels(ztf):
    return pd.read_csv(ztf / "labels.csv").set_index("candid")


def _raw_alert(path):
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, list(reader)


def _raw_stamp(alert, field):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some real stamps have a non-standard SIMPLE card
        return fits.getdata(io.BytesIO(gzip.decompress(alert[field]["stampData"]))).astype(np.float32)


def _only(path, **options):
    items = list(iter_alerts(path, **options))
    assert len(items) == 1
    return items[0]


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("rel", [POSITIVE, NEGATIVE, ASTEROID, NO_SCHEMAVSN, SCHEMA_32])
def test_metadata_matches_labels_csv(ztf, labels, rel):
    item = _only(ztf / rel)
    assert isinstance(item, AlertTriplet)
    assert item.triplet.shape == (3, 63, 63) and item.triplet.dtype == np.float32
    assert np.isfinite(item.triplet).all()
    assert set(item.meta) == set(META_COLUMNS)
    row = labels.loc[item.candid]
    assert item.object_id == row.objectId
    assert item.meta["isdiffpos"] == row.isdiffpos
    assert item.meta["fid"] == row.fid and item.meta["nbad"] == row.nbad
    for name in ("magpsf", "sigmapsf", "rb", "ssdistnr", "ssmagnr", "fwhm", "jd", "ra", "dec"):
        assert item.meta[name] == pytest.approx(row[name], rel=1e-12), name
    if np.isnan(row.drb):
        assert item.meta["drb"] is None
    else:
        assert item.meta["drb"] == pytest.approx(row.drb, rel=1e-12)
    assert item.meta["diff_sign_flipped"] == (row.isdiffpos == "f")
    assert item.meta["nan_fraction"] == 0.0


def test_known_values_of_one_alert(ztf):
    item = _only(ztf / POSITIVE)
    assert item.candid == 1127561440015015001 and item.object_id == "ZTF20aahgyet"
    assert item.meta["schemavsn"] == "3.3"
    assert item.meta["publisher"] == "ZTF (www.ztf.caltech.edu)"
    assert item.meta["n_prv_candidates"] == 65
    assert item.meta["drb"] == pytest.approx(0.999996, abs=1e-6)
    old = _only(ztf / NO_SCHEMAVSN)
    assert old.meta["schemavsn"] is None and old.meta["publisher"] is None and old.meta["drb"] is None


def test_stamps_equal_a_direct_decode(ztf):
    _, (alert,) = _raw_alert(ztf / POSITIVE)
    item = _only(ztf / POSITIVE)
    assert np.array_equal(item.triplet[0], _raw_stamp(alert, "cutoutScience"))
    assert np.array_equal(item.triplet[1], _raw_stamp(alert, "cutoutTemplate"))
    assert np.array_equal(item.triplet[2], _raw_stamp(alert, "cutoutDifference"))


def test_difference_is_science_minus_reference(ztf):
    _, (alert,) = _raw_alert(ztf / NEGATIVE)
    assert alert["candidate"]["isdiffpos"] == "f"
    stored = _raw_stamp(alert, "cutoutDifference")  # reference minus science: a positive blob
    item = _only(ztf / NEGATIVE)
    assert item.meta["diff_sign_flipped"] is True
    assert np.array_equal(item.triplet[2], -stored)
    centre = (slice(29, 34), slice(29, 34))
    assert stored[centre].sum() > 0 > item.triplet[2][centre].sum()  # faded source: negative
    positive = _only(ztf / POSITIVE)
    assert positive.meta["diff_sign_flipped"] is False and positive.triplet[2][centre].sum() > 0


# ----------------------------------------------------------------------------- damaged input


def test_truncated_files_yield_the_good_records_then_one_skip(ztf, tmp_path):
    full = [i for i in iter_alerts(ztf / MULTI, max_nan_fraction=0.5) if isinstance(i, AlertTriplet)]
    assert len(full) == 11
    data = (ztf / MULTI).read_bytes()
    seen_partial = False
    for cut in (0, 10, 2000, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        path = tmp_path / f"cut{cut}.avro"
        path.write_bytes(data[:cut])
        items = list(iter_alerts(path, max_nan_fraction=0.5))  # never raises
        *good, last = items
        assert isinstance(last, Skipped) and last.reason in {"truncated_file", "unreadable_file"}
        assert all(isinstance(i, AlertTriplet) for i in good)
        for got, want in zip(good, full, strict=False):  # never a silently wrong triplet
            assert got.candid == want.candid and np.array_equal(got.triplet, want.triplet)
        seen_partial |= bool(good) and last.reason == "truncated_file"
    assert seen_partial


def test_garbage_and_empty_files(tmp_path, ztf):
    (tmp_path / "garbage.avro").write_bytes(b"\x00\x01 definitely not avro" * 10)
    (tmp_path / "empty.avro").write_bytes(b"")
    for name in ("garbage.avro", "empty.avro"):
        (item,) = list(iter_alerts(tmp_path / name))
        assert item.reason == "unreadable_file"
    (tmp_path / "good.avro").write_bytes((ztf / POSITIVE).read_bytes())
    table = read_alerts(tmp_path)
    assert len(table) == 1 and table.meta["candid"].tolist() == [1127561440015015001]
    assert table.skipped_counts() == {"unreadable_file": 2}
    with pytest.raises(AlertError, match="unreadable_file"):
        read_alerts(tmp_path, on_error="raise")


def test_cutout_not_63x63_is_skipped(ztf):
    item = _only(ztf / CUT_41)
    assert isinstance(item, Skipped) and item.reason == "bad_shape" and "41x63" in item.detail
    assert item.candid == 396522680015040001


def test_nan_policy(ztf):
    strict = _only(ztf / WITH_NAN)
    assert strict.reason == "too_many_nan"
    kept = _only(ztf / WITH_NAN, max_nan_fraction=0.05)
    assert isinstance(kept, AlertTriplet) and np.isfinite(kept.triplet).all()
    assert 0.0 < kept.meta["nan_fraction"] <= 0.05
    _, (alert,) = _raw_alert(ztf / WITH_NAN)
    raw = _raw_stamp(alert, "cutoutScience")
    bad = np.isnan(raw)
    assert np.array_equal(kept.triplet[0][~bad], raw[~bad])
    assert np.all(kept.triplet[0][bad] == np.median(raw[~bad]))
    with pytest.raises(ValueError, match="max_nan_fraction"):
        iter_alerts(ztf / WITH_NAN, max_nan_fraction=1.0)


def _gz_fits(data):
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(data, dtype=">f4")).writeto(buffer)
    return gzip.compress(buffer.getvalue())


def _write_variants(ztf, tmp_path):
    """Copies of a real packet, each damaged in one way, in one Avro file."""
    schema, (alert,) = _raw_alert(ztf / POSITIVE)
    records = []
    for change in ("all_nan", "corrupt", "missing", "bad_isdiffpos", "wrong_name", "ok"):
        rec = json.loads(json.dumps(alert, default=lambda b: b.hex()))  # deep copy, bytes as hex
        for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            rec[key]["stampData"] = alert[key]["stampData"]
        rec["prv_candidates"] = alert["prv_candidates"]
        rec["candid"] += len(records)
        if change == "all_nan":
            rec["cutoutTemplate"]["stampData"] = _gz_fits(np.full((63, 63), np.nan))
        elif change == "corrupt":
            rec["cutoutScience"]["stampData"] = alert["cutoutScience"]["stampData"][:100]
        elif change == "missing":
            rec["cutoutDifference"] = None
        elif change == "bad_isdiffpos":
            rec["candidate"]["isdiffpos"] = "?"
        elif change == "wrong_name":
            rec["candidate"]["isdiffpos"] = "f"  # but the stamp is named ...scimref...
        records.append(rec)
    path = tmp_path / "variants.avro"
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), records)
    return path


def test_damaged_records_are_skipped_and_reading_goes_on(ztf, tmp_path):
    items = list(iter_alerts(_write_variants(ztf, tmp_path)))
    reasons = [i.reason if isinstance(i, Skipped) else "ok" for i in items]
    assert reasons == ["all_nan", "corrupt_cutout", "missing_cutout", "bad_isdiffpos", "bad_isdiffpos", "ok"]
    assert [i.candid for i in items] == [1127561440015015001 + k for k in range(6)]
    assert np.array_equal(items[-1].triplet, _only(ztf / POSITIVE).triplet)


# ----------------------------------------------------------------------------- parquet


def test_parquet_exports_read_like_avro(ztf, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _, (alert,) = _raw_alert(ztf / NEGATIVE)
    want = _only(ztf / NEGATIVE)
    nested = {k: alert[k] for k in ("objectId", "candid", "schemavsn", "publisher", "candidate",
                                    "cutoutScience", "cutoutTemplate", "cutoutDifference")}
    pq.write_table(pa.Table.from_pylist([nested]), tmp_path / "nested.parquet")
    flat = {"objectId": alert["objectId"], "candid": alert["candid"],
            **{f"candidate.{k}": v for k, v in alert["candidate"].items()},
            **{k: alert[k]["stampData"] for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")}}
    pq.write_table(pa.Table.from_pylist([flat]), tmp_path / "flat.parquet")
    for name in ("nested.parquet", "flat.parquet"):
        got = _only(tmp_path / name)
        assert isinstance(got, AlertTriplet), name
        assert np.array_equal(got.triplet, want.triplet)
        for key in ("candid", "objectId", "magpsf", "isdiffpos", "drb", "diff_sign_flipped"):
            assert got.meta[key] == want.meta[key], (name, key)
    table = read_alerts(tmp_path)
    assert len(table) == 1 and table.skipped_counts() == {"duplicate": 1}


# ----------------------------------------------------------------------------- read_alerts


def test_read_alerts_options(ztf, tmp_path):
    table = read_alerts([ztf / KOWALSKI / "20200202", ztf / POSITIVE], max_nan_fraction=0.0)
    assert len(table) == 12 and table.triplets.shape == (12, 3, 63, 63)
    assert table.skipped_counts() == {"duplicate": 1}
    assert table.triplet(1127561440015015001).shape == (3, 63, 63)
    assert len(read_alerts(ztf / KOWALSKI, max_alerts=5)) == 5
    with pytest.raises(ValueError, match="on_error"):
        read_alerts(ztf / POSITIVE, on_error="ignore")
    with pytest.raises(ValueError, match="max_alerts"):
        read_alerts(ztf / POSITIVE, max_alerts=0)
    with pytest.raises(FileNotFoundError):
        read_alerts(tmp_path / "missing")
    with pytest.raises(ValueError, match="no \\*.avro"):
        read_alerts(tmp_path)


# ----------------------------------------------------------------------------- manifest


def test_alerts_to_manifest(ztf, labels, tmp_path):
    inputs = [ztf / KOWALSKI, ztf / SN_IA, ztf / CUT_41, ztf / WITH_NAN]
    manifest = alerts_to_manifest(inputs, tmp_path / "ds", labels_csv=ztf / "labels.csv", seed=3)
    loaded = Manifest.load(tmp_path / "ds")
    assert loaded.kind == "ztf_alerts" and loaded.verify() == []
    assert len(loaded) == 24 + 34 == manifest.info["n_alerts"]
    assert manifest.info["skipped_counts"] == {"bad_shape": 1, "too_many_nan": 1}
    assert {s["reason"] for s in loaded.skipped} == {"bad_shape", "too_many_nan"}
    assert all(s["source"].startswith("ztf_alerts/") for s in loaded.skipped)
    splits_of = {}
    for sample in loaded.samples:
        splits_of.setdefault(sample["objectId"], set()).add(sample["split"])
        row = labels.loc[sample["candid"]]
        assert sample["source_file"] == f"ztf_alerts/{row.file}"
        assert sample["survey"] == "ztf" and sample["split_group"] == sample["objectId"]
        assert sample["label_asteroid"] == row.label_asteroid
        assert sample["drb_label"] == (None if np.isnan(row.drb_label) else row.drb_label)
        assert sample["label_tns_class"] == (None if pd.isna(row.label_tns_class) else row.label_tns_class)
    assert all(len(s) == 1 for s in splits_of.values())  # no object in two splits
    assert len(splits_of["ZTF21abiuvdk"]) == 1 and len(splits_of["ZTF20aajcdad"]) == 1
    assert {next(iter(s)) for s in splits_of.values()} == {"train", "val", "test"}
    negative = loaded.sample("ZTF17aadcvhq_2475433850015010009")
    assert negative["isdiffpos"] == "f" and negative["diff_sign_flipped"] is True
    stamps = [loaded.read(negative, key) for key in ("science", "reference", "difference")]
    assert np.array_equal(np.stack(stamps), _only(ztf / NEGATIVE).triplet)
    assert negative["mjd"] == pytest.approx(negative["jd"] - 2400000.5)
    with pytest.raises(FileExistsError):
        alerts_to_manifest(inputs[:1], tmp_path / "ds")
    again = alerts_to_manifest(inputs, tmp_path / "ds", labels_csv=ztf / "labels.csv", seed=3, overwrite=True)
    assert again.content_hash() == manifest.content_hash()  # deterministic

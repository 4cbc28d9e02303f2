"""Survey-specific models: a generic U-Net on a mix of surveys, fine-tuned per survey, picked by survey."""

import pytest
import torch
from conftest import KOWALSKI
from toy_data import make_dataset

from astrid import survey_models, tracking
from astrid.differencing import difference_dataset
from astrid.simulate import generate_dataset

TRAIN = {"model_size": "tiny", "tile_size": 32, "batch_size": 8, "tiles_per_epoch": 16,
         "calibration_pixels": 4000}


def _toy(root, survey, seed):
    manifest = make_dataset(root, size=32, seed=seed)
    for sample in manifest.samples:
        sample["survey"] = survey
    manifest.name = f"toy_{survey}"
    manifest.save()
    return manifest


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    return {survey: _toy(tmp_path_factory.mktemp(survey), survey, seed)
            for seed, survey in enumerate(("ztf", "decam"))}


@pytest.fixture(scope="module")
def generic(store, toys, tmp_path_factory):
    return survey_models.train_generic(list(toys.values()), epochs=1, seed=0,
                                       output_dir=tmp_path_factory.mktemp("generic"), **TRAIN)


@pytest.fixture(scope="module")
def ztf_model(generic, toys, tmp_path_factory):
    return survey_models.finetune_for_survey(generic, toys["ztf"], survey="ztf", epochs=1, seed=1,
                                             output_dir=tmp_path_factory.mktemp("ztf"), **TRAIN)


def _version(name, version):
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(name, version)


def test_mix_holds_every_sample_of_every_survey_and_its_files(toys, tmp_path):
    mixed = survey_models.mix_manifests(list(toys.values()), tmp_path / "mix")
    assert len(mixed) == sum(len(m) for m in toys.values())
    assert mixed.verify() == []  # every file reachable from the mix, hashes intact
    assert {s["survey"] for s in mixed.samples} == {"ztf", "decam"}
    assert [s["split"] for s in mixed.samples] == [s["split"] for m in toys.values() for s in m.samples]
    assert len({s["id"] for s in mixed.samples}) == len(mixed)  # same ids in both sources, made unique
    sample = mixed.samples[0]
    assert mixed.file(sample, "labels").resolve() == toys["ztf"].file(toys["ztf"].samples[0], "labels")
    with pytest.raises(ValueError, match="distinct names"):
        survey_models.mix_manifests([toys["ztf"], toys["ztf"]], tmp_path / "twice")


def test_generic_model_is_registered_as_generic(generic):
    assert (generic.name, generic.version) == ("astrid-unet-generic", "1")
    assert generic.model_uri == "models:/astrid-unet-generic/1"
    tags = _version("astrid-unet-generic", "1").tags
    assert tags["specialisation"] == "generic" and tags["surveys"] == "decam,ztf"
    assert generic.result.params["survey"] == "decam+ztf"


def test_finetuned_model_is_registered_under_its_survey_with_its_base(generic, ztf_model):
    assert (ztf_model.name, ztf_model.version) == ("astrid-unet-ztf", "1")
    assert ztf_model.base_model == "astrid-unet-generic:1"
    tags = _version("astrid-unet-ztf", "1").tags
    assert tags["specialisation"] == "survey" and tags["target_survey"] == "ztf"
    assert tags["base_model"] == "astrid-unet-generic:1"
    assert ztf_model.model.config.training["base_model"] == "astrid-unet-generic:1"
    assert ztf_model.model.config.channels == generic.model.config.channels
    tuned, start = ztf_model.model.net.state_dict(), generic.model.net.state_dict()
    assert any(not torch.equal(tuned[k], start[k]) for k in start if start[k].is_floating_point())


def test_model_for_survey_prefers_the_survey_model_then_the_generic(ztf_model, store):
    own = survey_models.model_for_survey("ztf")
    assert (own.name, own.version, own.specific) == ("astrid-unet-ztf", "1", True)
    fallback = survey_models.model_for_survey("decam")
    assert (fallback.name, fallback.specific) == ("astrid-unet-generic", False)
    assert fallback.uri == "models:/astrid-unet-generic/1"
    assert own.load().config.channels == ztf_model.model.config.channels


def test_no_registered_model_names_what_to_train(monkeypatch):
    monkeypatch.setattr(tracking, "latest_model_version", lambda name, tracking_uri=None: None)
    with pytest.raises(ValueError, match="train_generic") as err:
        survey_models.model_for_survey("decam")
    assert "astrid-unet-decam" in str(err.value) and "astrid-unet-generic" in str(err.value)
    with pytest.raises(ValueError, match="unknown survey"):
        survey_models.model_for_survey("lsst")


def test_finetuning_refuses_data_of_another_survey(generic, toys):
    with pytest.raises(ValueError, match="not only 'ztf'"):
        survey_models.finetune_for_survey(generic, toys["decam"], survey="ztf", epochs=1)
    with pytest.raises(ValueError, match="alerts manifest"):
        survey_models.finetune_for_survey(generic, toys["ztf"], survey=survey_models.REAL_ZTF, epochs=1)


def test_comparison_has_generic_and_specific_rows_on_the_survey_test_set(ztf_model, tmp_path):
    test_set = generate_dataset(tmp_path / "ztf", n_fields=3, n_epochs=1, image_size=64, seed=3,
                                n_cosmic_rays=2, n_hot_pixels=2)
    difference_dataset(test_set)
    table = survey_models.compare_generic_specific({"ztf": test_set})
    assert list(table.columns) == list(survey_models.COMPARISON_COLUMNS)
    assert set(table["model"]) == {"generic", "specific"}
    assert set(table.loc[table.model == "specific", "model_name"]) == {"astrid-unet-ztf"}
    assert {"unet", "ensemble", "baseline"} <= set(table["method"])
    rates = table[table.metric.isin(["precision", "recall"])].value.dropna()
    assert rates.between(0, 1).all()
    # The baseline does not depend on the U-Net: both models must see the same test set.
    baseline = table[(table.method == "baseline") & (table.metric == "recall")].set_index("model").value
    assert baseline["generic"] == pytest.approx(baseline["specific"])


def test_survey_study_fine_tunes_every_survey_and_real_ztf_and_compares_them(store, ztf, tmp_path):
    study = survey_models.survey_study(tmp_path / "study", surveys=("ztf", "decam"), alerts=ztf / KOWALSKI,
                                       max_alerts=24, n_fields=6, n_epochs=2, image_size=96, seed=5, **TRAIN)
    assert set(study.datasets) == {"ztf", "decam", survey_models.REAL_ZTF}
    assert study.generic.result.params["survey"] == "decam+ztf"  # one generic model over both presets
    for key, model in study.specific.items():
        assert model.name == f"astrid-unet-{key}"
        assert model.base_model == f"astrid-unet-generic:{study.generic.version}"
        assert study.choices[key].specific and study.choices[key].version == model.version  # the picker
    table = study.comparison
    for key in study.datasets:
        assert set(table.loc[table.survey == key, "model"]) == {"generic", "specific"}
    assert table.loc[table.metric.isin(["precision", "recall"]), "value"].dropna().between(0, 1).all()
    with pytest.raises(ValueError, match="distinct survey presets"):
        survey_models.survey_study(tmp_path / "bad", surveys=(survey_models.REAL_ZTF,))
    with pytest.raises(FileExistsError):
        survey_models.survey_study(tmp_path / "study")

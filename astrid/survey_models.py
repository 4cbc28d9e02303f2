"""Survey-specific models: one generic U-Net for all survey presets, fine-tuned once per survey.

Registered names
----------------
``astrid-unet-generic`` (:data:`GENERIC_MODEL`)
    Trained by :func:`train_generic` on a mix of survey presets
    (:func:`mix_manifests`); its versions are tagged ``specialisation=generic``
    and ``surveys`` (the presets in the mix).
``astrid-unet-<survey>`` (:func:`survey_model_name`)
    Fine-tuned from a generic version by :func:`finetune_for_survey` on one
    survey: a preset (``ztf``, ``decam``) or :data:`REAL_ZTF` (weakly
    labelled real ZTF alerts, through :func:`astrid.realdata.finetune_on_alerts`).
    Its versions are tagged ``specialisation=survey``, ``target_survey`` and
    ``base_model=<generic name>:<version>``.

:func:`model_for_survey` picks the survey's own model when one is
registered, else the generic one, and says what to train when neither is.
:func:`compare_generic_specific` measures both on each survey's test set, and
:func:`survey_study` does the whole round: a dataset per preset, the generic
model, one fine-tune per survey (and real ZTF), the picker and the comparison.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from astrid.manifest import Manifest, atomic_write, prepare_output_dir, provenance
from astrid.surveys import SURVEYS

__all__ = [
    "ALERT_TRAIN_OPTIONS",
    "COMPARISON_COLUMNS",
    "GENERIC_MODEL",
    "REAL_ZTF",
    "SURVEY_KEYS",
    "ModelChoice",
    "SurveyModel",
    "SurveyStudy",
    "compare_generic_specific",
    "finetune_for_survey",
    "mix_manifests",
    "model_for_survey",
    "survey_model_name",
    "survey_study",
    "train_generic",
]

log = logging.getLogger(__name__)

GENERIC_MODEL = "astrid-unet-generic"
"""Registered name of the generic model."""

REAL_ZTF = "ztf-real"
"""Survey key of the model fine-tuned on real ZTF alerts (``astrid-unet-ztf-real``)."""

SURVEY_KEYS: tuple[str, ...] = (*SURVEYS, REAL_ZTF)
"""Surveys that can have a model of their own: the presets and real ZTF."""

COMPARISON_COLUMNS: tuple[str, ...] = (
    "survey", "model", "model_name", "model_version", "method", "metric", "value",
)  # fmt: skip
"""Columns of :func:`compare_generic_specific` (one row per figure)."""

_STUDY_METRICS = ("precision", "recall", "f1", "fp_per_image", "average_precision", "ece", "type_macro_f1")


ALERT_TRAIN_OPTIONS = frozenset({"device", "batch_size", "tiles_per_epoch", "empty_fraction"})
"""Training options :func:`finetune_for_survey` passes on when it fine-tunes on real alerts."""


def _check_survey(survey: str) -> str:
    key = str(survey).lower()
    if key not in SURVEY_KEYS:
        msg = f"unknown survey {survey!r}; known: {', '.join(SURVEY_KEYS)}"
        raise ValueError(msg)
    return key


def survey_model_name(survey: str) -> str:
    """Return the registered name of ``survey``'s own model.

    Raises
    ------
    ValueError
        For a survey that is neither a preset nor :data:`REAL_ZTF`.

    Examples
    --------
    >>> survey_model_name("decam"), survey_model_name("ztf-real")
    ('astrid-unet-decam', 'astrid-unet-ztf-real')
    """
    return f"astrid-unet-{_check_survey(survey)}"


@dataclass(frozen=True)
class SurveyModel:
    """A trained generic or survey model and where it was registered.

    Attributes
    ----------
    survey : str
        ``"generic"``, a preset, or :data:`REAL_ZTF`.
    model : astrid.model.TrainedModel
        The network.
    name : str
        Registered name (also when registration failed or was not asked for).
    version : str
        Registered version, ``""`` when not registered.
    model_uri : str
        ``models:/<name>/<version>``, else the bundle folder.
    base_model : str
        ``<name>:<version>`` of the generic model it was fine-tuned from (``""`` for the generic).
    result : astrid.model.TrainResult
        The training run.
    """

    survey: str
    model: Any
    name: str
    version: str
    model_uri: str
    base_model: str
    result: Any


@dataclass(frozen=True)
class ModelChoice:
    """The registered model :func:`model_for_survey` picked.

    Attributes
    ----------
    survey : str
        The survey asked for.
    name, version : str
        The registered model version.
    specific : bool
        Whether it is the survey's own model (False: the generic fallback).
    tracking_uri : str or None
        The store it is in.
    """

    survey: str
    name: str
    version: str
    specific: bool
    tracking_uri: str | None = None

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    def load(self, *, device: str = "cpu") -> Any:
        """Download and load the model (see :func:`astrid.tracking.load_registered_model`)."""
        from astrid.tracking import load_registered_model

        return load_registered_model(self.name, self.version, tracking_uri=self.tracking_uri, device=device)


def mix_manifests(
    manifests: Sequence[Manifest | str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    name: str = "survey_mix",
    overwrite: bool = False,
) -> Manifest:
    """Write one manifest over the samples of several datasets, for training on all of them at once.

    No pixels are copied: the new manifest (in ``output_dir``) refers to each
    dataset's files by relative paths, so the datasets must stay where they
    are relative to it. Samples keep their split, survey and products; ids
    become ``<dataset name>:<id>``. Every sample of every dataset is used, so
    a survey's share of the training tiles follows its share of the images.

    Parameters
    ----------
    manifests : sequence of Manifest or path-like
        Datasets (with the products training needs), at least one.
    output_dir : path-like
        New or empty folder for ``manifest.json``.
    name : str
        The mix's dataset name.
    overwrite : bool
        Empty a non-empty ``output_dir``.

    Returns
    -------
    Manifest
        ``kind`` of the sources (joined by ``+`` when they differ);
        ``generator.sources`` lists each dataset's name, path, surveys and content hash.

    Raises
    ------
    ValueError
        With no dataset, or two datasets of the same name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from astrid.manifest import Manifest
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> a = Manifest(root / "a", "a", samples=[{"id": "s0", "split": "train", "survey": "ztf"}])
    >>> b = Manifest(root / "b", "b", samples=[{"id": "s0", "split": "val", "survey": "decam"}])
    >>> _ = a.save(), b.save()
    >>> [s["id"] for s in mix_manifests([a, b], root / "mix").samples]
    ['a:s0', 'b:s0']
    """
    sources = [m if isinstance(m, Manifest) else Manifest.load(m) for m in manifests]
    if not sources:
        msg = "manifests is empty: give at least one dataset to mix"
        raise ValueError(msg)
    names = [m.name for m in sources]
    if len(set(names)) != len(names):
        msg = f"datasets to mix need distinct names, got {names}"
        raise ValueError(msg)
    out = prepare_output_dir(output_dir, overwrite=overwrite)
    samples, files, record = [], {}, []
    for source in sources:
        prefix = Path(os.path.relpath(source.root.resolve(), out.resolve()))
        for sample in source.samples:
            entry = {k: (prefix / v).as_posix() if isinstance(v, str) and v in source.files else v
                     for k, v in sample.items()}
            entry["id"] = f"{source.name}:{sample['id']}"
            entry["dataset"] = source.name
            samples.append(entry)
        files.update({(prefix / rel).as_posix(): digest for rel, digest in source.files.items()})
        record.append({"name": source.name, "path": str(source.root), "content_hash": source.content_hash(),
                       "surveys": sorted({str(s.get("survey", "")) for s in source.samples} - {""})})
    kinds = sorted({m.kind for m in sources})
    mixed = Manifest(root=out, name=name, kind="+".join(kinds),
                     generator={"function": "astrid.survey_models.mix_manifests", "sources": record},
                     samples=samples, files=files, info=provenance())
    mixed.save()
    return mixed


def _resolve(model: Any, tracking_uri: str | None) -> tuple[Any, str, str]:
    """Return (model, name, version) of a SurveyModel, ModelChoice, TrainedModel, name, URI or bundle."""
    from astrid.realdata import resolve_model

    if isinstance(model, SurveyModel):
        return model.model, model.name, model.version
    if isinstance(model, ModelChoice):
        return model.load(), model.name, model.version
    return resolve_model(model, tracking_uri=tracking_uri)


def _register(result: Any, *, name: str, survey: str, tags: Mapping[str, str], register: bool,
              tracking_uri: str | None) -> tuple[str, str]:
    """Log the run, register it under ``name`` and tag the version; return (version, model_uri)."""
    if not register:
        return "", str(result.bundle)
    from astrid import tracking

    run = tracking.log_training(result, model_name=name, tracking_uri=tracking_uri, tags=dict(tags))
    if run.model_version is None:
        return "", run.model_uri
    tracking.set_model_version_tags(name, run.model_version, tags, tracking_uri=tracking_uri)
    log.info("registered %s for %s", run.model_uri, survey)
    return str(run.model_version), run.model_uri


def train_generic(
    manifests: Sequence[Manifest | str | os.PathLike],
    *,
    epochs: int,
    output_dir: str | os.PathLike | None = None,
    model_name: str = GENERIC_MODEL,
    register: bool = True,
    tracking_uri: str | None = None,
    seed: int = 0,
    **train_options: Any,
) -> SurveyModel:
    """Train the generic model on a mix of survey presets and register it.

    Parameters
    ----------
    manifests : sequence of Manifest or path-like
        One training dataset per survey preset (mixed by :func:`mix_manifests`).
    epochs : int
        Most epochs.
    output_dir : path-like, optional
        Folder for the mix (``mix/``) and the bundle (``model/``...); default a temporary folder.
    model_name : str
        Registered name.
    register : bool
        Log the run and register the model (MLflow).
    tracking_uri : str, optional
        MLflow store.
    seed : int
        Training seed.
    **train_options
        More :func:`astrid.model.train_unet` options (``model_size``, ``tile_size``...).

    Returns
    -------
    SurveyModel
        ``survey="generic"``.
    """
    from astrid.model import train_unet

    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_generic_"))
    mixed = mix_manifests(manifests, out / "mix", overwrite=True)
    result = train_unet(mixed, epochs=epochs, output_dir=out, seed=seed, progress=False, **train_options)
    surveys = ",".join(sorted({str(s.get("survey", "")) for s in mixed.samples} - {""}))
    version, uri = _register(result, name=model_name, survey="generic", register=register,
                             tags={"specialisation": "generic", "surveys": surveys},
                             tracking_uri=tracking_uri)
    return SurveyModel("generic", result.model, model_name, version, uri, "", result)


def finetune_for_survey(
    generic_model: Any,
    manifest: Manifest | str | os.PathLike,
    *,
    survey: str,
    epochs: int,
    output_dir: str | os.PathLike | None = None,
    lr: float = 1e-3,
    register: bool = True,
    tracking_uri: str | None = None,
    seed: int = 0,
    **train_options: Any,
) -> SurveyModel:
    """Fine-tune the generic model on one survey and register it as ``astrid-unet-<survey>``.

    A preset's dataset is trained on by :func:`astrid.model.train_unet` with
    ``init_model`` (the generic weights, architecture, channels and
    normalisation); real alerts (``survey=REAL_ZTF``) by
    :func:`astrid.realdata.finetune_on_alerts` with real tiles only.

    Parameters
    ----------
    generic_model : SurveyModel, ModelChoice, TrainedModel, str or path-like
        The starting model: what :func:`train_generic` returned, a registered
        ``NAME[:VERSION]``, a ``models:/`` URI or a bundle folder.
    manifest : Manifest or path-like
        The survey's training dataset (``train`` and ``val`` splits), or a
        (weakly labelled) alerts manifest for :data:`REAL_ZTF`.
    survey : str
        A preset name or :data:`REAL_ZTF`; the dataset must be of that survey.
    epochs : int
        Most epochs.
    output_dir : path-like, optional
        Folder for the bundle and records (default: a temporary folder).
    lr : float
        Peak learning rate (lower than from scratch: the weights start trained).
    register : bool
        Log the run and register the model.
    tracking_uri : str, optional
        MLflow store.
    seed : int
        Training seed.
    **train_options
        More options of the training function (``tiles_per_epoch``, ``tile_size``...). On
        alerts only those of :data:`ALERT_TRAIN_OPTIONS` apply (the architecture
        comes from the generic model, tiles are sized to the 63 px stamps); the
        others are logged and left out, so one set of options serves every survey.

    Returns
    -------
    SurveyModel
        With ``base_model`` = ``<name>:<version>`` of the generic model (its
        name or bundle path alone when it is not a registered version).

    Raises
    ------
    ValueError
        For an unknown survey, or a dataset of another survey (alerts for a
        preset, simulated images for :data:`REAL_ZTF`).
    """
    from astrid.model import train_unet
    from astrid.realdata import finetune_on_alerts

    key = _check_survey(survey)
    data = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    alerts = data.kind.startswith("ztf_alerts")
    if alerts != (key == REAL_ZTF):
        what = "real ZTF alerts" if alerts else f"a dataset of kind {data.kind!r}"
        msg = (f"manifest {data.path} holds {what}: fine-tune {REAL_ZTF!r} on an alerts manifest "
               "and a survey preset on its simulated dataset")
        raise ValueError(msg)
    found = sorted({str(s.get("survey", "")) for s in data.samples} - {""})
    if not alerts and found != [key]:
        msg = f"manifest {data.path} holds surveys {found}, not only {key!r}"
        raise ValueError(msg)
    base, base_name, base_version = _resolve(generic_model, tracking_uri)
    base_tag = f"{base_name}:{base_version}" if base_version else base_name
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix=f"astrid_{key}_"))
    if alerts:
        ignored = sorted(set(train_options) - ALERT_TRAIN_OPTIONS)
        if ignored:
            log.info("fine-tuning on alerts: options %s do not apply", ignored)
        result = finetune_on_alerts(base, data, real_fraction=1.0, epochs=epochs, output_dir=out, lr=lr,
                                    seed=seed, **{k: v for k, v in train_options.items()
                                                  if k in ALERT_TRAIN_OPTIONS})
    else:
        result = train_unet(data, init_model=base, epochs=epochs, lr=lr, output_dir=out, seed=seed,
                            progress=False, **train_options)
    result.model.config.training.update(base_model=base_tag, target_survey=key)
    _save_provenance(result, base_tag=base_tag, survey=key)
    name = survey_model_name(key)
    version, uri = _register(result, name=name, survey=key, register=register, tracking_uri=tracking_uri,
                             tags={"specialisation": "survey", "base_model": base_tag, "target_survey": key})
    return SurveyModel(key, result.model, name, version, uri, base_tag, result)


def _save_provenance(result: Any, *, base_tag: str, survey: str) -> None:
    """Record the base model and target survey in the bundle and the run's summary."""
    from astrid.model import save_model

    save_model(result.model, result.bundle, overwrite=True)
    result.params.update(base_model=base_tag, target_survey=survey)
    result.summary["params"] = result.params
    summary = result.paths.get("summary")
    if summary is not None:
        with atomic_write(summary, "w", overwrite=True) as handle:
            json.dump(result.summary, handle, indent=1, default=str)


def model_for_survey(survey: str, *, tracking_uri: str | None = None) -> ModelChoice:
    """Pick the model to use on ``survey``: its own registered model, else the generic one.

    Parameters
    ----------
    survey : str
        A preset name or :data:`REAL_ZTF`.
    tracking_uri : str, optional
        MLflow store (default :func:`astrid.tracking.resolve_tracking_uri`).

    Returns
    -------
    ModelChoice
        The newest version of ``astrid-unet-<survey>`` (``specific=True``),
        else of :data:`GENERIC_MODEL`.

    Raises
    ------
    ValueError
        For an unknown survey, or when neither model is registered (the
        message says what to train).
    ConnectionError
        When the store cannot be used.

    Examples
    --------
    >>> import tempfile
    >>> model_for_survey("decam", tracking_uri=f"sqlite:///{tempfile.mkdtemp()}/m.db")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no model for survey 'decam' ...
    """
    from astrid import tracking

    key = _check_survey(survey)
    own = survey_model_name(key)
    for name, specific in ((own, True), (GENERIC_MODEL, False)):
        version = tracking.latest_model_version(name, tracking_uri=tracking_uri)
        if version is not None:
            return ModelChoice(key, name, version, specific, tracking_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    msg = (f"no model for survey {key!r} in {uri}: neither {own!r} nor {GENERIC_MODEL!r} is registered; "
           "train the generic model with astrid.survey_models.train_generic(...) and, for a model of "
           f"this survey's own, finetune_for_survey(..., survey={key!r})")
    raise ValueError(msg)


def _study_rows(manifest: Any, model: Any, *, max_images: int | None, device: str | None,
                seed: int) -> list[tuple[str, str, float]]:
    from astrid.evaluate import run_study

    result = run_study(manifest, model, max_images=max_images, device=device, seed=seed)
    return [(method, metric, summary.get(metric)) for method, summary in result.metrics["models"].items()
            for metric in _STUDY_METRICS]


def _alert_rows(manifest: Manifest, model: Any, *, device: str | None) -> list[tuple[str, str, float]]:
    from astrid.monitor import scoring_metrics
    from astrid.realdata import load_alerts, score_alerts

    table = load_alerts(manifest, splits=("test",))
    found = scoring_metrics(score_alerts(table, model, device=device or "cpu"), table)
    return [("unet", metric, value) for metric, value in found.items()]


def compare_generic_specific(
    test_sets: Mapping[str, Manifest | str | os.PathLike],
    *,
    generic: Any = None,
    specific: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    max_images: int | None = None,
    device: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Measure the generic model and each survey's own model on that survey's test set.

    A preset's dataset (with ZOGY products and ``train``/``val``/``test``
    splits) goes through :func:`astrid.evaluate.run_study`, which reports every
    method built on the U-Net (``unet``, ``ensemble``) beside the baseline and
    the classifier; an alerts manifest (:data:`REAL_ZTF`) has its ``test``
    alerts scored and measured by :func:`astrid.monitor.scoring_metrics`
    (method ``unet``).

    Parameters
    ----------
    test_sets : mapping of str to Manifest or path-like
        Survey key -> its dataset.
    generic : optional
        The generic model (anything :func:`finetune_for_survey` takes);
        default the newest registered :data:`GENERIC_MODEL`.
    specific : mapping of str to model, optional
        Survey -> its own model; surveys left out use their newest registered
        ``astrid-unet-<survey>``, and are compared with the generic model alone
        when none is registered.
    tracking_uri : str, optional
        MLflow store.
    max_images : int, optional
        Cap on validation and test images of each study.
    device : str, optional
        Inference device.
    seed : int
        Seed of the study's classifier.

    Returns
    -------
    pandas.DataFrame
        Tidy: one row per figure, columns :data:`COMPARISON_COLUMNS` (``model``
        is ``generic`` or ``specific``; ``value`` NaN where a figure is undefined).

    Raises
    ------
    ValueError
        For an unknown survey, or no generic model.
    """
    from astrid import tracking

    gen_model, gen_name, gen_version = _resolve(generic if generic is not None else GENERIC_MODEL,
                                                tracking_uri)
    rows = []
    for survey, manifest in test_sets.items():
        key = _check_survey(survey)
        data = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
        candidates = [("generic", gen_model, gen_name, gen_version)]
        own = (specific or {}).get(key)
        if own is None and tracking.latest_model_version(survey_model_name(key), tracking_uri=tracking_uri):
            own = survey_model_name(key)
        if own is not None:
            candidates.append(("specific", *_resolve(own, tracking_uri)))
        else:
            log.info("no model of %s's own: generic model only", key)
        for label, model, name, version in candidates:
            found = (_alert_rows(data, model, device=device) if key == REAL_ZTF else
                     _study_rows(data, model, max_images=max_images, device=device, seed=seed))
            rows += [{"survey": key, "model": label, "model_name": name, "model_version": version,
                      "method": method, "metric": metric, "value": value} for method, metric, value in found]
    frame = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


@dataclass(frozen=True)
class SurveyStudy:
    """What :func:`survey_study` made and measured.

    Attributes
    ----------
    datasets : dict of str to Manifest
        Survey key -> its dataset (with ZOGY products; the alerts manifest for :data:`REAL_ZTF`).
    generic : SurveyModel
        The generic model trained on every preset's dataset.
    specific : dict of str to SurveyModel
        Survey key -> its fine-tuned model.
    choices : dict of str to ModelChoice
        What :func:`model_for_survey` picks for each survey afterwards (``None``
        values when nothing was registered).
    comparison : pandas.DataFrame
        :func:`compare_generic_specific` on every survey's test set.
    """

    datasets: dict[str, Manifest]
    generic: SurveyModel
    specific: dict[str, SurveyModel]
    choices: dict[str, ModelChoice | None]
    comparison: pd.DataFrame


def survey_study(
    output_dir: str | os.PathLike,
    *,
    surveys: Sequence[str] = ("ztf", "decam"),
    alerts: str | os.PathLike | None = None,
    n_fields: int = 6,
    n_epochs: int = 2,
    image_size: int = 96,
    generic_epochs: int = 1,
    finetune_epochs: int = 1,
    max_alerts: int | None = None,
    max_images: int | None = None,
    register: bool = True,
    tracking_uri: str | None = None,
    device: str | None = None,
    scheduler: Any = None,
    seed: int = 0,
    **train_options: Any,
) -> SurveyStudy:
    """Compare generic and survey-specific models end to end, on fresh data of each survey preset.

    Each preset gets a simulated dataset (``seed + i`` for the i-th survey;
    the object mix of the ``quick`` recipe) differenced with ZOGY;
    :func:`train_generic` trains the generic model on all of them,
    :func:`finetune_for_survey` fine-tunes one model per preset from it (and
    one on real ZTF alerts when ``alerts`` is given), and
    :func:`compare_generic_specific` measures the generic and each survey's own
    model on that survey's test split.

    Parameters
    ----------
    output_dir : path-like
        New or empty folder: ``data/<survey>/``, ``alerts/``, ``generic/``, ``<survey>/`` (bundles).
    surveys : sequence of str
        Survey presets (at least one; :data:`astrid.surveys.SURVEYS`).
    alerts : path-like, optional
        ZTF alert files or folder: adds :data:`REAL_ZTF` (its own model,
        measured on the alerts' test split).
    n_fields, n_epochs, image_size : int
        Size of each preset's dataset (:func:`astrid.simulate.generate_dataset`);
        images need room for the ZOGY kernels' edge frame (at least 96 px
        with DECam's small pixels).
    generic_epochs, finetune_epochs : int
        Most training epochs of the generic model and of each fine-tune.
    max_alerts : int, optional
        Read at most this many alerts.
    max_images : int, optional
        Cap on validation and test images of each study.
    register : bool
        Log the runs and register the models (MLflow); the picker needs them.
    tracking_uri : str, optional
        MLflow store.
    device : str, optional
        Training and inference device.
    scheduler : optional
        Where simulation and differencing run (:func:`astrid.cluster.resolve_scheduler`).
    seed : int
        Seeds data, training and the studies' classifiers.
    **train_options
        More :func:`astrid.model.train_unet` options (``model_size``, ``tile_size``...).

    Returns
    -------
    SurveyStudy

    Raises
    ------
    ValueError
        For no or unknown surveys, or a real ZTF key among ``surveys`` (pass ``alerts``).
    FileExistsError
        When ``output_dir`` holds files.
    """
    from astrid.alerts import alerts_to_manifest
    from astrid.differencing import difference_dataset
    from astrid.simulate import DATASETS, generate_dataset

    keys = [_check_survey(s) for s in surveys]
    if not keys or REAL_ZTF in keys or len(set(keys)) != len(keys):
        msg = f"surveys must name distinct survey presets ({', '.join(SURVEYS)}), got {list(surveys)!r}"
        raise ValueError(msg)
    out = prepare_output_dir(output_dir)
    datasets: dict[str, Manifest] = {}
    size = ("n_fields", "n_epochs", "image_size")
    mix = {k: v for k, v in DATASETS["quick"]["params"].items() if k not in size}
    for i, key in enumerate(keys):
        made = generate_dataset(out / "data" / key, survey=key, seed=seed + i, name=key, n_fields=n_fields,
                                n_epochs=n_epochs, image_size=image_size, scheduler=scheduler, **mix)
        datasets[key] = difference_dataset(made, scheduler=scheduler)
    common = {"register": register, "tracking_uri": tracking_uri, "seed": seed, **train_options,
              **({"device": device} if device is not None else {})}
    generic = train_generic(list(datasets.values()), epochs=generic_epochs, output_dir=out / "generic",
                            **common)
    specific = {key: finetune_for_survey(generic, datasets[key], survey=key, epochs=finetune_epochs,
                                         output_dir=out / key, **common) for key in keys}
    if alerts is not None:
        datasets[REAL_ZTF] = alerts_to_manifest(alerts, out / "alerts", max_alerts=max_alerts,
                                                max_nan_fraction=0.05, seed=seed)
        specific[REAL_ZTF] = finetune_for_survey(generic, datasets[REAL_ZTF], survey=REAL_ZTF,
                                                 epochs=finetune_epochs, output_dir=out / REAL_ZTF, **common)
    choices = {key: model_for_survey(key, tracking_uri=tracking_uri) if register else None
               for key in datasets}
    comparison = compare_generic_specific(datasets, generic=generic, specific=specific,
                                          tracking_uri=tracking_uri, max_images=max_images, device=device,
                                          seed=seed)
    return SurveyStudy(datasets, generic, specific, choices, comparison)

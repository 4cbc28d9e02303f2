"""The one place that talks to MLflow: training runs, registered models, the model list.

Where runs go
-------------
Default store
    SQLite inside the workspace, ``sqlite:///<repo root>/mlruns/mlflow.db``, with
    artifacts under ``<repo root>/mlruns/artifacts/<experiment>`` (folders are
    created; ``mlruns/`` is git-ignored).
``MLFLOW_TRACKING_URI``
    Any MLflow tracking URI instead (another SQLite file, an ``http(s)://``
    server...). ``MLFLOW_REGISTRY_URI`` optionally names a separate registry.
``ASTRID_MLFLOW_ARTIFACT_ROOT``
    Artifact location of the experiments AstrID creates, for example
    ``s3://astrid-mlflow/artifacts`` (each experiment gets a sub-folder).
    Without it, a SQLite store keeps artifacts in ``artifacts/`` beside its
    database file and a server decides for itself.

S3-compatible artifact stores (Cloudflare R2, MinIO...) are configured the
standard MLflow/boto3 way, in the environment, and need ``boto3``::

    MLFLOW_S3_ENDPOINT_URL=https://<account id>.r2.cloudflarestorage.com
    AWS_ACCESS_KEY_ID=...            # an R2 API token's key id
    AWS_SECRET_ACCESS_KEY=...
    ASTRID_MLFLOW_ARTIFACT_ROOT=s3://<bucket>/astrid

With an ``mlflow server --artifacts-destination s3://...`` the server talks to
the bucket and the client needs none of these. ``docs/mlflow_remote.md`` walks
through both set-ups.

Remote stores
    While AstrID talks to MLflow it fills in, for that time only and never
    over a user's own setting (environment or AWS config file), the defaults
    of :func:`remote_defaults`: with an ``MLFLOW_S3_ENDPOINT_URL``, region
    ``auto`` and request/response checksums ``when_required`` (recent boto3
    sends CRC32 checksums that R2 and older S3 stand-ins reject); for HTTP
    servers, a few quick retries and a 60 s timeout instead of MLflow's
    minutes of back-off.
Unreachable stores
    The tracking server and an S3 endpoint are probed with a TCP connection
    (5 s) first. Logging functions then warn once (:class:`TrackingWarning`),
    write everything they would have logged to a local JSON record (figures
    as PNG beside it) and return; training and the study carry on. Loading a
    registered model raises :class:`ConnectionError` instead.

Credentials stay in the environment: they are never logged. Params and tags
whose names look secret (key, token, password, secret, credential...) are
dropped, values holding the value of a secret-looking environment variable are
masked, and passwords inside URIs are masked; error messages and local records
are masked the same way.

A training run logs its parameters (dataset content hash, synthetic:real
ratio, channels, architecture, loss, epochs, learning rate...), per-epoch
metrics, the model bundle, the dataset manifest, its records and figures, and
registers a model version (default name ``astrid-unet-<survey>``) tagged with
survey, dataset and headline validation metrics. When the store cannot be
reached, :func:`log_training` warns once (:class:`TrackingWarning`), writes the
same record to ``tracking/run.json`` in the run folder and carries on.
:func:`log_evaluation` adds a study's test metrics and figures to the
training run of the evaluated model (or to a run of its own).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astrid.manifest import atomic_write, provenance

__all__ = [
    "DEFAULT_EXPERIMENT",
    "EVALUATION_EXPERIMENT",
    "MODEL_COLUMNS",
    "TrackedEvaluation",
    "TrackedRun",
    "TrackingWarning",
    "artifact_location",
    "list_models",
    "load_model_uri",
    "log_evaluation",
    "load_registered_model",
    "log_training",
    "redact",
    "remote_defaults",
    "resolve_tracking_uri",
]

WORKSPACE = Path(__file__).resolve().parent.parent
DEFAULT_EXPERIMENT = "astrid-unet"
EVALUATION_EXPERIMENT = "astrid-evaluation"
MODEL_COLUMNS = (
    "name", "version", "survey", "dataset", "dataset_hash", "val_macro_dice", "val_loss",
    "val_nll", "temperature", "created", "run_id",
)
"""Columns of :func:`list_models`."""

_SECRET_NAME = re.compile(
    r"secret|passw|passwd|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|"
    r"session[_-]?key|signature",
    re.IGNORECASE,
)
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]+:)[^@/\s]+@")
_MASK = "***"


class TrackingWarning(UserWarning):
    """The MLflow store could not be used; the run was recorded locally instead."""


@dataclass(frozen=True)
class TrackedRun:
    """Where a training run was recorded.

    Attributes
    ----------
    tracked : bool
        Whether MLflow received it (False: local record only).
    run_id : str or None
        MLflow run id.
    model_name, model_version : str or None
        Registered model name and version.
    model_uri : str
        ``models:/<name>/<version>`` when registered, else the local bundle path.
    bundle : str
        The local bundle folder.
    tracking_uri : str
        The store used (passwords masked).
    local_record : str or None
        ``tracking/run.json`` written when MLflow was unavailable.
    """

    tracked: bool
    run_id: str | None
    model_name: str | None
    model_version: str | None
    model_uri: str
    bundle: str
    tracking_uri: str
    local_record: str | None = None


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Return the tracking URI to use: ``uri``, else ``MLFLOW_TRACKING_URI``, else the workspace store.

    Examples
    --------
    >>> resolve_tracking_uri("sqlite:////tmp/x/mlflow.db")
    'sqlite:////tmp/x/mlflow.db'
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if chosen:
        return chosen
    return f"sqlite:///{(WORKSPACE / 'mlruns' / 'mlflow.db').as_posix()}"


def _registry_uri(tracking: str) -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI", "").strip() or tracking


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifact location for a new experiment in store ``uri`` (``None``: the store decides).

    Examples
    --------
    >>> artifact_location("sqlite:////tmp/s/mlflow.db", "exp")
    'file:///tmp/s/artifacts/exp'
    """
    root = os.environ.get("ASTRID_MLFLOW_ARTIFACT_ROOT", "").strip()
    if root:
        return f"{root.rstrip('/')}/{experiment}"
    db = _sqlite_path(uri)
    if db is not None:
        return (db.parent / "artifacts" / experiment).as_uri()
    return None


def _mask_passwords(text: str) -> str:
    return _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{_MASK}@", text)


def _mask_uri(text: str) -> str:
    """Mask passwords inside URIs and the values of secret-looking environment variables."""
    for secret in _secret_values(os.environ):
        text = text.replace(secret, _MASK)
    return _mask_passwords(text)


def _secret_values(environ: Mapping[str, str]) -> list[str]:
    return sorted({v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= 6},
                  key=len, reverse=True)


def redact(values: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Drop secret-looking keys and mask secrets in values, for params and tags.

    Parameters
    ----------
    values : mapping
        Names to values.
    environ : mapping, optional
        Environment whose secret-looking variables' values are masked
        wherever they appear (default ``os.environ``).

    Examples
    --------
    >>> redact({"lr": 0.1, "aws_secret_access_key": "x", "uri": "https://u:pw@host/x"}, environ={})
    {'lr': 0.1, 'uri': 'https://u:***@host/x'}
    """
    secrets = _secret_values(os.environ if environ is None else environ)
    out = {}
    for key, value in values.items():
        if _SECRET_NAME.search(str(key)):
            continue
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, _MASK)
            value = _mask_passwords(value)
        out[str(key)] = value
    return out


def _reachable(url: str, *, timeout: float = 5.0) -> str | None:
    """Why nothing answers at ``url``'s host and port (TCP connect), or ``None`` when something does.

    Skipped (``None``) when an HTTP(S) proxy is configured for the host: only
    the proxy would know.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return f"no host in {_mask_uri(url)}"
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as err:
        return f"no answer from {_mask_uri(url)}: {err}"
    return None


def _probe(uri: str) -> str | None:
    """Why the store at ``uri`` cannot be used, or ``None`` when it looks usable (quickly)."""
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"cannot create {db.parent}: {err}"
        if not os.access(db.parent, os.W_OK):
            return f"{db.parent} is not writable"
        return None
    if uri.startswith(("http://", "https://")):
        return _reachable(uri)
    return None


def _artifact_problem(artifact_uri: str) -> str | None:
    """Why the S3-compatible endpoint of an ``s3://`` ``artifact_uri`` cannot be reached, if it cannot."""
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "").strip()
    if endpoint and str(artifact_uri).startswith("s3://"):
        problem = _reachable(endpoint)
        return f"artifact store: {problem}" if problem else None
    return None


_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
_S3_DEFAULTS = {
    # name in the environment, name in the AWS config file, default
    "AWS_REQUEST_CHECKSUM_CALCULATION": ("request_checksum_calculation", "when_required"),
    "AWS_RESPONSE_CHECKSUM_VALIDATION": ("response_checksum_validation", "when_required"),
    "AWS_DEFAULT_REGION": ("region", "auto"),
}


def _aws_config() -> dict[str, str]:
    """Return the active profile of the user's AWS config file (empty when there is none)."""
    try:
        import botocore.session

        return dict(botocore.session.Session().get_scoped_config())
    except Exception:  # no botocore, a missing profile, an unreadable file: no user settings
        return {}


def remote_defaults(
    environ: Mapping[str, str] | None = None, *, aws_config: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment defaults AstrID applies while it talks to MLflow (only names the user left unset).

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).
    aws_config : mapping, optional
        The active AWS config-file profile (default: read with botocore).

    Returns
    -------
    dict of str to str
        Quick HTTP retries (``MLFLOW_HTTP_REQUEST_*``); with an
        ``MLFLOW_S3_ENDPOINT_URL`` (R2 and other S3 stand-ins) also
        ``AWS_DEFAULT_REGION=auto`` and checksums ``when_required``.

    Examples
    --------
    >>> env = {"MLFLOW_S3_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com",
    ...        "AWS_REGION": "weur", "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    >>> added = remote_defaults(env, aws_config={"response_checksum_validation": "when_supported"})
    >>> added["AWS_REQUEST_CHECKSUM_CALCULATION"], "AWS_DEFAULT_REGION" in added
    ('when_required', False)
    >>> added["MLFLOW_HTTP_REQUEST_MAX_RETRIES"], "MLFLOW_HTTP_REQUEST_TIMEOUT" in added
    ('3', False)
    """
    env = os.environ if environ is None else environ
    out = {k: v for k, v in _HTTP_DEFAULTS.items() if not env.get(k)}
    if env.get("MLFLOW_S3_ENDPOINT_URL", "").strip():
        config = _aws_config() if aws_config is None else aws_config
        for name, (key, value) in _S3_DEFAULTS.items():
            user_region = name == "AWS_DEFAULT_REGION" and env.get("AWS_REGION")
            if not (env.get(name) or config.get(key) or user_region):
                out[name] = value
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Talk to MLflow: :func:`remote_defaults` set meanwhile, deprecation chatter silenced (not ours)."""
    added = remote_defaults()
    os.environ.update(added)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        for name, value in added.items():
            if os.environ.get(name) == value:
                del os.environ[name]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=_registry_uri(uri))


def _experiment_id(client, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_location(uri, name)
    if location and location.startswith("file:"):
        Path(location[len("file://"):]).mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _headline(result) -> dict[str, float]:
    """Headline validation metrics of a :class:`~astrid.model.TrainResult`."""
    from astrid.metrics import expected_calibration_error

    best = result.history[result.best_epoch] if result.history else {}
    out = {
        "val_macro_dice": result.best_metric,
        "val_loss": best.get("valid_loss"),
        "best_epoch": result.best_epoch,
        "temperature": result.temperature,
        "train_seconds": result.seconds,
    }
    cal = result.calibration
    if cal is not None:
        out.update(val_nll_before=cal.fit.nll_before, val_nll=cal.fit.nll_after)
        if len(cal.correct):
            out["val_ece_before"] = expected_calibration_error(cal.confidence_before, cal.correct)
            out["val_ece"] = expected_calibration_error(cal.confidence_after, cal.correct)
    return {k: v for k, v in ((k, _finite(v)) for k, v in out.items()) if v is not None}


def _epoch_metrics(history: list[dict[str, float]]) -> list[tuple[str, float, int]]:
    names = {"train_loss": "train_loss", "valid_loss": "val_loss", "macro_dice": "val_macro_dice",
             "seconds": "epoch_seconds"}
    rows = []
    for row in history:
        for key, name in names.items():
            value = _finite(row.get(key))
            if value is not None:
                rows.append((name, value, int(row["epoch"])))
    return rows


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _mark_failed(client: Any, run_id: str | None) -> None:
    """Mark a run FAILED when there is one, as a best effort on a store that already failed."""
    if client is None or run_id is None:
        return
    try:
        with _quiet():
            client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: S110 - best effort on a store that already failed
        pass


def log_training(
    result: Any,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    model_name: str | None = None,
    register: bool = True,
    figures: Mapping[str, Any] | None = None,
    extra_params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
) -> TrackedRun:
    """Record a training run in MLflow and register its model; fall back to a local record.

    Parameters
    ----------
    result : astrid.model.TrainResult
        What :func:`astrid.model.train_unet` returned.
    experiment : str
        MLflow experiment (created when missing).
    model_name : str, optional
        Registered model name; default ``astrid-unet-<survey>``.
    register : bool
        Register a model version.
    figures : mapping of str to matplotlib Figure or path, optional
        Logged under ``figures/<name>.png`` (paths keep their own name).
    extra_params : mapping, optional
        More parameters (notebook parameters, say).
    tags : mapping, optional
        More run tags.
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.

    Returns
    -------
    TrackedRun
        With ``tracked=False`` and a ``local_record`` when the store was unusable
        (a single :class:`TrackingWarning` says why).
    """
    uri = resolve_tracking_uri(tracking_uri)
    survey = str(result.params.get("survey", "unknown"))
    name = model_name or f"astrid-unet-{survey}"
    params = redact({**result.params, **(extra_params or {})})
    headline = _headline(result)
    dataset = str(result.params.get("dataset_name", ""))
    origin = provenance()
    run_tags = redact({
        "survey": survey,
        "dataset": dataset,
        "dataset_hash": str(result.params.get("dataset_hash", "")),
        "model_size": str(result.params.get("model_size", "")),
        "astrid_version": origin["astrid_version"],
        "git_commit": origin["git_commit"],
        "mlflow.runName": f"unet-{result.params.get('model_size', '')}-{dataset}",
        **(tags or {}),
    })
    bundle = Path(result.bundle)
    run_id = None
    client = None
    try:
        problem = _probe(uri)
        if problem:
            raise ConnectionError(problem)
        with _quiet():
            from mlflow.entities import Metric, Param, RunTag

            client = _client(uri)
            experiment_id = _experiment_id(client, uri, experiment)
            problem = _artifact_problem(client.get_experiment(experiment_id).artifact_location)
            if problem:
                raise ConnectionError(problem)
            run = client.create_run(experiment_id, tags=run_tags)
            run_id = run.info.run_id
            now = int(datetime.now(UTC).timestamp() * 1000)
            plist = [Param(k, str(v)[:500]) for k, v in params.items()]
            metrics = [Metric(k, v, now, step) for k, v, step in _epoch_metrics(result.history)]
            metrics += [Metric(k, v, now, 0) for k, v in headline.items()]
            for chunk in _batched(plist, 100):
                client.log_batch(run_id, params=chunk)
            for chunk in _batched(metrics, 1000):
                client.log_batch(run_id, metrics=chunk)
            client.log_batch(run_id, tags=[RunTag("astrid.bundle", str(bundle))])
            client.log_artifacts(run_id, str(bundle), "model")
            client.log_artifact(run_id, str(result.manifest.path), "dataset")
            for key in ("history", "summary"):
                path = result.paths.get(key)
                if path is not None and Path(path).is_file():
                    client.log_artifact(run_id, str(path), "records")
            for label, fig in (figures or {}).items():
                if isinstance(fig, str | os.PathLike):
                    client.log_artifact(run_id, str(fig), "figures")
                else:
                    client.log_figure(run_id, fig, f"figures/{label}.png")
            client.set_terminated(run_id, "FINISHED")
            version = None
            if register:
                version = _register(client, name, run, survey=survey, dataset=dataset,
                                    params=params, headline=headline)
        model_uri = f"models:/{name}/{version}" if version else f"runs:/{run_id}/model"
        return TrackedRun(True, run_id, name if version else None, version, model_uri,
                          str(bundle), _mask_uri(uri))
    except Exception as err:  # the store must never break a training run
        _mark_failed(client, run_id)
        record = _write_local(bundle.parent / "tracking" / "run.json", result=result,
                              params=params, tags=run_tags, headline=headline, figures=figures,
                              reason=f"{type(err).__name__}: {_mask_uri(str(err))}")
        warnings.warn(
            f"MLflow store {_mask_uri(uri)} unavailable ({type(err).__name__}: "
            f"{_mask_uri(str(err))[:300]}); run recorded locally in {record}",
            TrackingWarning, stacklevel=2,
        )
        return TrackedRun(False, None, None, None, str(bundle), str(bundle), _mask_uri(uri),
                          str(record))


def _register(client, name: str, run, *, survey: str, dataset: str, params: Mapping[str, Any],
              headline: Mapping[str, float]) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"survey": survey},
                                       description="AstrID U-Net: per-pixel transient classes")
    except MlflowException as err:
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise
    version_tags = redact({
        "survey": survey,
        "dataset": dataset,
        "dataset_hash": str(params.get("dataset_hash", "")),
        "model_size": str(params.get("model_size", "")),
        "channels": str(params.get("channels", "")),
        **{k: f"{v:.6g}" for k, v in headline.items()},
    })
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                     run_id=run.info.run_id, tags=version_tags)
    return str(mv.version)


def _save_figures(figures: Mapping[str, Any] | None, folder: Path) -> dict[str, str]:
    """Write matplotlib figures as ``folder/<label>.png``; return every figure's file (paths stay)."""
    files = {}
    for label, fig in (figures or {}).items():
        if isinstance(fig, str | os.PathLike):
            files[label] = str(fig)
            continue
        path = folder / (re.sub(r"[^\w\-.]", "_", str(label)) + ".png")
        with atomic_write(path, "wb", overwrite=True) as handle:
            fig.savefig(handle, format="png")
        files[label] = str(path)
    return files


def _write_local(path: Path, *, result: Any, params: Mapping[str, Any], tags: Mapping[str, str],
                 headline: Mapping[str, float], figures: Mapping[str, Any] | None, reason: str) -> Path:
    record = {
        "reason": reason,
        "recorded_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": dict(params),
        "tags": dict(tags),
        "metrics": headline,
        "history": result.history,
        "bundle": str(result.bundle),
        "manifest": str(result.manifest.path),
        "records": {k: str(result.paths[k]) for k in ("history", "summary") if k in result.paths},
        "figures": _save_figures(figures, path.parent / "figures"),
    }
    with atomic_write(path, "w", overwrite=True) as handle:
        json.dump(record, handle, indent=1, default=str)
    return path


@dataclass(frozen=True)
class TrackedEvaluation:
    """Where an evaluation was recorded.

    Attributes
    ----------
    tracked : bool
        Whether MLflow received it.
    run_id : str or None
        The run holding the metrics: the model's training run when the model
        URI names one, else a new run of :data:`EVALUATION_EXPERIMENT`.
    tracking_uri : str
        The store used (passwords masked).
    local_record : str or None
        JSON record written when MLflow was unavailable.
    """

    tracked: bool
    run_id: str | None
    tracking_uri: str
    local_record: str | None = None


_METRIC_NAME = re.compile(r"[^\w\-. /]")


def _numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Return the finite numbers of a nested mapping with ``/``-joined, MLflow-safe names."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = _METRIC_NAME.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(_numbers(value, f"{name}/"))
        elif not isinstance(value, str):
            number = _finite(value)
            if number is not None:
                out[name] = number
    return out


def _run_of(client, model_uri: str | None) -> str | None:
    """Return the training run behind ``models:/<name>/<version|latest>`` or ``runs:/<id>/``."""
    if not model_uri:
        return None
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/")[0]
    if model_uri.startswith("models:/"):
        name, _, version = model_uri[len("models:/"):].strip("/").partition("/")
        versions = _versions(client, name)
        if not versions:
            msg = f"no registered model {name!r}"
            raise ValueError(msg)
        if version in ("", "latest"):
            return versions[-1].run_id
        chosen = next((v for v in versions if str(v.version) == version), None)
        if chosen is None:
            msg = f"model {name!r} has no version {version}"
            raise ValueError(msg)
        return chosen.run_id
    return None


def log_evaluation(
    metrics: Mapping[str, Any],
    *,
    model_uri: str | None = None,
    figures: Mapping[str, Any] | None = None,
    experiment: str = EVALUATION_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> TrackedEvaluation:
    """Record an evaluation (``metrics.json`` content) with the model's training run.

    Numbers are logged as metrics under ``test/`` (nested keys joined by
    ``/``), the whole dict as ``evaluation/metrics.json`` and the figures under
    ``evaluation/figures/``. With a ``models:/`` or ``runs:/`` URI they go to the
    model's training run (and the model version gets ``test/...`` headline
    tags); otherwise to a new run of ``experiment``.

    Parameters
    ----------
    metrics : mapping
        The evaluation's metrics (nested; non-numbers are kept in the JSON only).
    model_uri : str, optional
        ``models:/<name>/<version>`` (as :func:`log_training` returns) or ``runs:/<id>/model``.
    figures : mapping of str to matplotlib Figure or path, optional
        Figures to log.
    experiment : str
        Experiment of the new run when ``model_uri`` names none.
    tags : mapping, optional
        More run tags.
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.
    output_dir : path-like, optional
        Where to write the local record (``evaluation_run.json``, with the
        figures under ``figures/``) if MLflow is unavailable (default: a
        temporary folder).

    Returns
    -------
    TrackedEvaluation
        ``tracked=False`` with a single :class:`TrackingWarning` when the
        store could not be used.
    """
    uri = resolve_tracking_uri(tracking_uri)
    numbers = {f"test/{k}": v for k, v in _numbers(metrics).items()}
    run_tags = redact({"evaluation": "true", **(tags or {})})
    if model_uri:
        run_tags["evaluated_model"] = _mask_uri(str(model_uri))
    run_id = None
    client = None
    own_run = False
    try:
        problem = _probe(uri)
        if problem:
            raise ConnectionError(problem)
        with _quiet():
            from mlflow.entities import Metric, RunTag

            client = _client(uri)
            run_id = _run_of(client, model_uri)
            if run_id is None:
                experiment_id = _experiment_id(client, uri, experiment)
                location = client.get_experiment(experiment_id).artifact_location
            else:
                location = client.get_run(run_id).info.artifact_uri
            problem = _artifact_problem(location)
            if problem:
                raise ConnectionError(problem)
            if run_id is None:
                run_id = client.create_run(experiment_id, tags=run_tags).info.run_id
                own_run = True
            else:
                client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
            now = int(datetime.now(UTC).timestamp() * 1000)
            items = [Metric(k, v, now, 0) for k, v in numbers.items()]
            for chunk in _batched(items, 1000):
                client.log_batch(run_id, metrics=chunk)
            client.log_dict(run_id, json.loads(json.dumps(metrics, default=_plain)),
                            "evaluation/metrics.json")
            for label, fig in (figures or {}).items():
                if isinstance(fig, str | os.PathLike):
                    client.log_artifact(run_id, str(fig), "evaluation/figures")
                else:
                    client.log_figure(run_id, fig, f"evaluation/figures/{label}.png")
            if own_run:
                client.set_terminated(run_id, "FINISHED")
            elif str(model_uri).startswith("models:/"):
                name = str(model_uri)[len("models:/"):].strip("/").split("/")[0]
                for version in _versions(client, name):
                    if version.run_id == run_id:
                        for key, value in _headline_tags(numbers).items():
                            client.set_model_version_tag(name, version.version, key, value)
        return TrackedEvaluation(True, run_id, _mask_uri(uri))
    except Exception as err:  # evaluation results are on disk already: never fail here
        if own_run:
            _mark_failed(client, run_id)
        folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_eval_"))
        record = folder / "evaluation_run.json"
        local = {"reason": f"{type(err).__name__}: {_mask_uri(str(err))}",
                 "recorded_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                 "model_uri": _mask_uri(str(model_uri or "")), "metrics": numbers, "tags": run_tags,
                 "evaluation": json.loads(json.dumps(metrics, default=_plain)),
                 "figures": _save_figures(figures, folder / "figures")}
        with atomic_write(record, "w", overwrite=True) as handle:
            json.dump(local, handle, indent=1)
        warnings.warn(
            f"MLflow store {_mask_uri(uri)} unavailable for the evaluation ({type(err).__name__}: "
            f"{_mask_uri(str(err))[:300]}); recorded locally in {record}",
            TrackingWarning, stacklevel=2,
        )
        return TrackedEvaluation(False, None, _mask_uri(uri), str(record))


def _headline_tags(numbers: Mapping[str, float], *, limit: int = 40) -> dict[str, str]:
    """Return the headline test figures of each method as model-version tags."""
    keys = ("precision", "recall", "f1", "fp_per_image", "average_precision", "ece")
    out = {}
    for name, value in numbers.items():
        parts = name.split("/")
        if len(parts) == 4 and parts[1] == "models" and parts[3] in keys:
            out[f"test_{parts[2]}_{parts[3]}"] = f"{value:.6g}"
    return dict(list(out.items())[:limit])


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def load_registered_model(
    name: str, version: int | str | None = None, *, tracking_uri: str | None = None,
    device: str = "cpu", dst: str | os.PathLike | None = None,
):
    """Download a registered model version and load it.

    Parameters
    ----------
    name : str
        Registered model name.
    version : int, str or None
        Version number, or ``None`` / ``"latest"`` for the newest.
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.
    device : str
        Where to put the network.
    dst : path-like, optional
        Download folder (default: a new temporary folder).

    Returns
    -------
    astrid.model.TrainedModel

    Raises
    ------
    ValueError
        When the model or version does not exist.
    ConnectionError
        When the store (or its S3 endpoint) does not answer (within seconds).
    """
    import mlflow.artifacts

    from astrid.model import load_model

    uri = resolve_tracking_uri(tracking_uri)
    with _quiet():
        client = _usable_client(uri)
        versions = _versions(client, name)
        if not versions:
            msg = f"no registered model {name!r} in {_mask_uri(uri)}"
            raise ValueError(msg)
        if version is None or str(version).lower() == "latest":
            chosen = versions[-1]
        else:
            chosen = next((v for v in versions if str(v.version) == str(version)), None)
            if chosen is None:
                known = ", ".join(str(v.version) for v in versions)
                msg = f"model {name!r} has no version {version!r} (versions: {known})"
                raise ValueError(msg)
        problem = _artifact_problem(chosen.source)
        if problem:
            msg = f"model {name!r} version {chosen.version} cannot be downloaded: {problem}"
            raise ConnectionError(msg)
        target = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="astrid_model_"))
        path = mlflow.artifacts.download_artifacts(artifact_uri=chosen.source, dst_path=str(target),
                                                   tracking_uri=uri)
    return load_model(path, device=device)


def load_model_uri(uri: str | os.PathLike, *, tracking_uri: str | None = None, device: str = "cpu"):
    """Load a model from ``models:/<name>/<version|latest>``, ``runs:/<id>/<path>`` or a bundle path.

    Examples
    --------
    >>> import tempfile
    >>> from astrid.model import ModelConfig, TrainedModel, UNetSpec, build_unet, save_model
    >>> spec = UNetSpec.named("tiny", n_channels=1)
    >>> path = save_model(TrainedModel(build_unet(1, spec=spec), ModelConfig(spec, ["score"])),
    ...                   tempfile.mkdtemp())
    >>> load_model_uri(path).config.spec.widths
    (8, 16, 32)
    """
    text = str(uri)
    if text.startswith("models:/"):
        parts = text[len("models:/"):].strip("/").split("/")
        return load_registered_model(parts[0], parts[1] if len(parts) > 1 else None,
                                     tracking_uri=tracking_uri, device=device)
    from astrid.model import load_model

    if text.startswith("runs:/"):
        import mlflow.artifacts

        with _quiet():
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=text, dst_path=tempfile.mkdtemp(prefix="astrid_model_"),
                tracking_uri=resolve_tracking_uri(tracking_uri))
        return load_model(path, device=device)
    return load_model(text, device=device)


def list_models(tracking_uri: str | None = None):
    """Return the registered model versions as a table, newest first within each name.

    Parameters
    ----------
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`MODEL_COLUMNS`. Empty (with a :class:`TrackingWarning`)
        when the store cannot be reached.
    """
    import pandas as pd

    uri = resolve_tracking_uri(tracking_uri)
    rows = []
    try:
        problem = _probe(uri)
        if problem:
            raise ConnectionError(problem)
        with _quiet():
            client = _client(uri)
            for registered in client.search_registered_models():
                for v in reversed(_versions(client, registered.name)):
                    tags = v.tags or {}
                    rows.append({
                        "name": v.name,
                        "version": int(v.version),
                        "survey": tags.get("survey", ""),
                        "dataset": tags.get("dataset", ""),
                        "dataset_hash": tags.get("dataset_hash", ""),
                        "val_macro_dice": _finite(tags.get("val_macro_dice")),
                        "val_loss": _finite(tags.get("val_loss")),
                        "val_nll": _finite(tags.get("val_nll")),
                        "temperature": _finite(tags.get("temperature")),
                        "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
                        "run_id": v.run_id,
                    })
    except Exception as err:  # a listing must not crash the CLI either
        warnings.warn(f"cannot list models in {_mask_uri(uri)}: {type(err).__name__}: "
                      f"{_mask_uri(str(err))[:300]}", TrackingWarning, stacklevel=2)
        rows = []
    frame = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    if len(frame):
        frame = frame.sort_values(["name", "version"], ascending=[True, False], ignore_index=True)
    return frame



# --------------------------------------------------------------------------- registry queries

__all__ += ["latest_model_version", "set_model_version_tags"]


def _usable_client(uri: str):
    """Return a client of store ``uri``; raise ConnectionError naming why it cannot be used."""
    problem = _probe(uri)
    if problem:
        msg = f"MLflow store {_mask_uri(uri)} unavailable: {problem}"
        raise ConnectionError(msg)
    return _client(uri)


def latest_model_version(name: str, *, tracking_uri: str | None = None) -> str | None:
    """Return the newest version of registered model ``name``, or ``None`` when it is not registered.

    Parameters
    ----------
    name : str
        Registered model name.
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.

    Returns
    -------
    str or None

    Raises
    ------
    ConnectionError
        When the store cannot be used (an unreachable store is never read as "not registered").

    Examples
    --------
    >>> import tempfile
    >>> latest_model_version("astrid-unet-none", tracking_uri=f"sqlite:///{tempfile.mkdtemp()}/m.db") is None
    True
    """
    uri = resolve_tracking_uri(tracking_uri)
    with _quiet():
        versions = _versions(_usable_client(uri), name)
    return str(versions[-1].version) if versions else None


def set_model_version_tags(
    name: str, version: int | str, tags: Mapping[str, Any], *, tracking_uri: str | None = None,
) -> None:
    """Set tags on a registered model version (secret-looking names dropped, as everywhere here).

    Parameters
    ----------
    name : str
        Registered model name.
    version : int or str
        Its version.
    tags : mapping
        Tag names to values (stored as strings).
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.

    Raises
    ------
    ConnectionError
        When the store cannot be used.
    """
    uri = resolve_tracking_uri(tracking_uri)
    with _quiet():
        client = _usable_client(uri)
        for key, value in redact(tags).items():
            client.set_model_version_tag(name, str(version), key, str(value))


# --------------------------------------------------------------------------- monitoring

MONITORING_EXPERIMENT = "astrid-monitoring"
"""Experiment of the scoring runs :func:`log_scoring_run` records."""

HISTORY_COLUMNS = (
    "mjd", "mjd_start", "mjd_end", "date_start", "date_end", "model_name", "model_version",
    "source", "tracked", "run_id",
)
"""Leading columns of :func:`performance_history` (the logged metrics follow, sorted by name)."""

__all__ += ["HISTORY_COLUMNS", "MONITORING_EXPERIMENT", "log_scoring_run", "performance_history"]

_MJD_UNIX_EPOCH = 40587.0  # MJD of 1970-01-01T00:00:00 UTC
_LOCAL_SCORING = "scoring_*.json"


def _mjd_ms(mjd: float) -> int:
    """Unix time in milliseconds of an MJD (UTC)."""
    return int(round((float(mjd) - _MJD_UNIX_EPOCH) * 86_400_000))


def _mjd_iso(mjd: float) -> str:
    return datetime.fromtimestamp((float(mjd) - _MJD_UNIX_EPOCH) * 86_400, UTC).isoformat(timespec="seconds")


def log_scoring_run(
    metrics: Mapping[str, Any],
    *,
    mjd_start: float,
    mjd_end: float,
    model_name: str,
    model_version: str = "",
    statistics: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
    features: Any = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    experiment: str = MONITORING_EXPERIMENT,
    tracking_uri: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> TrackedEvaluation:
    """Record one scoring run over new data, placed in time by the data's observation dates.

    So that a model's performance can be followed as data arrive, the run is
    dated by the *observations*, not by when it was scored: its ``start_time``
    and ``end_time`` are the first and last observation, every metric's
    timestamp is the middle of that range and its ``step`` the MJD of that
    middle (rounded to a whole day: MLflow steps are integers). Tags hold the
    exact range (``observation_start``/``observation_end`` in ISO UTC,
    ``observation_mjd_start``/``observation_mjd_end``), the model
    (``model_name``, ``model_version``) and when the scoring ran
    (``scored_utc``). Numbers of ``metrics`` are logged as they are named,
    ``statistics`` under ``input/`` and ``drift`` under ``drift/`` (nested
    keys joined by ``/``); ``features`` (a table) becomes
    ``monitoring/features.csv``.

    Parameters
    ----------
    metrics : mapping
        The run's performance figures (e.g. :func:`astrid.monitor.scoring_metrics`).
    mjd_start, mjd_end : float
        Observation date range of the data scored (MJD, UTC).
    model_name, model_version : str
        The model that scored.
    statistics : mapping, optional
        Input statistics (:attr:`astrid.monitor.BatchStatistics.summary`).
    drift : mapping, optional
        Drift figures (:meth:`astrid.monitor.DriftReport.metrics`).
    features : pandas.DataFrame, optional
        Per-item input features, kept as an artifact for later drift analyses.
    params : mapping, optional
        Settings of the run (thresholds, batch size...).
    tags : mapping, optional
        More run tags (``source``...).
    experiment : str
        MLflow experiment (created when missing).
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.
    output_dir : path-like, optional
        Folder of the local record written when the store is unusable
        (``scoring_<mjd>_<id>.json``; default a temporary folder);
        :func:`performance_history` reads such records back with ``local_records``.

    Returns
    -------
    TrackedEvaluation
        ``tracked=False`` with a ``local_record`` and a single
        :class:`TrackingWarning` when the store could not be used.

    Raises
    ------
    ValueError
        When the observation range is not finite or ``mjd_start > mjd_end``.
    """
    start, end = float(mjd_start), float(mjd_end)
    if not (math.isfinite(start) and math.isfinite(end) and start <= end):
        msg = f"observation range must be finite MJDs with mjd_start <= mjd_end, got {mjd_start}, {mjd_end}"
        raise ValueError(msg)
    uri = resolve_tracking_uri(tracking_uri)
    middle = 0.5 * (start + end)
    numbers = {**_numbers(metrics), **_numbers(statistics or {}, "input/"),
               **_numbers(drift or {}, "drift/")}
    origin = provenance()
    run_tags = redact({
        "model_name": str(model_name),
        "model_version": str(model_version),
        "observation_start": _mjd_iso(start),
        "observation_end": _mjd_iso(end),
        "observation_mjd_start": f"{start:.6f}",
        "observation_mjd_end": f"{end:.6f}",
        "scored_utc": origin["created_utc"],
        "astrid_version": origin["astrid_version"],
        "git_commit": origin["git_commit"],
        "mlflow.runName": f"score-{model_name}-{_mjd_iso(start)[:10]}",
        **(tags or {}),
    })
    run_params = redact(dict(params or {}))
    run_id = None
    client = None
    try:
        with _quiet():
            from mlflow.entities import Metric, Param

            client = _usable_client(uri)
            run_id = client.create_run(_experiment_id(client, uri, experiment), start_time=_mjd_ms(start),
                                       tags=run_tags).info.run_id
            when, step = _mjd_ms(middle), int(round(middle))
            for chunk in _batched([Param(k, str(v)[:500]) for k, v in run_params.items()], 100):
                client.log_batch(run_id, params=chunk)
            for chunk in _batched([Metric(k, v, when, step) for k, v in numbers.items()], 1000):
                client.log_batch(run_id, metrics=chunk)
            if features is not None:
                client.log_text(run_id, features.to_csv(index=False), "monitoring/features.csv")
            client.set_terminated(run_id, "FINISHED", end_time=_mjd_ms(end))
        return TrackedEvaluation(True, run_id, _mask_uri(uri))
    except Exception as err:  # scores are on disk already: monitoring must never fail a scoring run
        _mark_failed(client, run_id)
        folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="astrid_scoring_"))
        stem = f"scoring_{start:.5f}_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
        record = folder / f"{stem}.json"
        with atomic_write(record, "w", overwrite=True) as handle:
            json.dump({"reason": f"{type(err).__name__}: {_mask_uri(str(err))}", "mjd_start": start,
                       "mjd_end": end, "metrics": numbers, "params": run_params, "tags": run_tags},
                      handle, indent=1, default=str)
        if features is not None:
            with atomic_write(folder / f"{stem}_features.csv", "w", overwrite=True) as handle:
                features.to_csv(handle, index=False)
        warnings.warn(
            f"MLflow store {_mask_uri(uri)} unavailable for the scoring run ({type(err).__name__}: "
            f"{_mask_uri(str(err))[:300]}); recorded locally in {record}",
            TrackingWarning, stacklevel=2,
        )
        return TrackedEvaluation(False, None, _mask_uri(uri), str(record))


def _history_row(tags: Mapping[str, str], metrics: Mapping[str, float], *, run_id: str | None,
                 tracked: bool) -> dict[str, Any]:
    start = float(tags.get("observation_mjd_start", "nan"))
    end = float(tags.get("observation_mjd_end", "nan"))
    return {"mjd": 0.5 * (start + end), "mjd_start": start, "mjd_end": end,
            "date_start": tags.get("observation_start", ""), "date_end": tags.get("observation_end", ""),
            "model_name": tags.get("model_name", ""), "model_version": tags.get("model_version", ""),
            "source": tags.get("source", ""), "tracked": tracked, "run_id": run_id, **metrics}


def performance_history(
    model_name: str | None = None,
    *,
    experiment: str = MONITORING_EXPERIMENT,
    tracking_uri: str | None = None,
    local_records: str | os.PathLike | None = None,
):
    """Return the scoring runs of a model as a table ordered by observation date.

    Parameters
    ----------
    model_name : str, optional
        Keep the runs of this model only (default: every model).
    experiment : str
        Experiment :func:`log_scoring_run` wrote to.
    tracking_uri : str, optional
        Store; default :func:`resolve_tracking_uri`.
    local_records : path-like, optional
        A folder of local records (``scoring_*.json``, written when the store
        was unusable) to include, marked ``tracked=False``.

    Returns
    -------
    pandas.DataFrame
        One row per run: :data:`HISTORY_COLUMNS` (``mjd`` is the middle of the
        observation range), then every logged metric by name; sorted by
        ``mjd_start``, ``mjd_end``. Rows from the store alone are missing
        (with a :class:`TrackingWarning`) when it cannot be reached.
    """
    import pandas as pd

    uri = resolve_tracking_uri(tracking_uri)
    rows: list[dict[str, Any]] = []
    try:
        with _quiet():
            client = _usable_client(uri)
            found = client.get_experiment_by_name(experiment)
            wanted = "attributes.status = 'FINISHED'" + (
                f" and tags.model_name = '{model_name}'" if model_name else "")
            token = None
            while found is not None:
                page = client.search_runs([found.experiment_id], filter_string=wanted, max_results=1000,
                                          page_token=token)
                rows += [_history_row(r.data.tags, r.data.metrics, run_id=r.info.run_id, tracked=True)
                         for r in page]
                token = page.token
                if not token:
                    break
    except Exception as err:  # a history must not crash a notebook: say why it is short
        warnings.warn(f"cannot read scoring runs from {_mask_uri(uri)}: {type(err).__name__}: "
                      f"{_mask_uri(str(err))[:300]}", TrackingWarning, stacklevel=2)
    if local_records is not None:
        for path in sorted(Path(local_records).glob(_LOCAL_SCORING)):
            record = json.loads(path.read_text())
            tags = record.get("tags", {})
            if model_name and tags.get("model_name") != model_name:
                continue
            rows.append(_history_row(tags, record.get("metrics", {}), run_id=None, tracked=False))
    frame = pd.DataFrame(rows)
    metric_columns = sorted(set(frame.columns) - set(HISTORY_COLUMNS))
    frame = frame.reindex(columns=[*HISTORY_COLUMNS, *metric_columns])
    return frame.sort_values(["mjd_start", "mjd_end"], ignore_index=True, kind="stable")

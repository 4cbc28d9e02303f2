"""Dask for the batch phases: where clients are made and work is mapped over samples.

Synthetic generation, differencing, candidate extraction and parameter grids
take a ``scheduler`` argument that this module turns into a place to run:

``"serial"``
    No Dask: a plain loop in this process (debugging, tiny data, doctests).
``"local"``
    A :class:`distributed.LocalCluster` sized to this machine: one worker process
    per CPU core, each with one thread and BLAS/OpenMP/torch limited to one thread.
``"tcp://HOST:PORT"`` (any ``scheme://``) or a ``scheduler.json`` path
    Connect to a running cluster (``dask scheduler``, dask-jobqueue,
    dask-kubernetes); the workers must see the dataset folder at the same path.
a :class:`distributed.Client`
    Use it as it is, so that several phases share one cluster.
``None``
    The value of the environment variable ``ASTRID_DASK_SCHEDULER`` when it is set
    (any of the forms above), else ``"serial"``.

:func:`map_items` runs a function over items on any of these and returns the
results in input order; the serial and distributed paths call the same function,
so they produce the same bytes. Tasks whose worker dies are rescheduled by Dask;
exceptions are retried ``retries`` times. This is the one module that imports
``dask.distributed`` (lazily: importing it costs nothing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

__all__ = [
    "ENV_SCHEDULER",
    "SchedulerError",
    "local_cluster",
    "map_items",
    "open_client",
    "resolve_scheduler",
    "worker_threads",
]

log = logging.getLogger(__name__)

ENV_SCHEDULER = "ASTRID_DASK_SCHEDULER"
"""Environment variable naming the scheduler used when a phase gets ``scheduler=None``."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


class SchedulerError(ConnectionError):
    """The Dask scheduler named by ``scheduler`` or ``ASTRID_DASK_SCHEDULER`` cannot be reached."""


def resolve_scheduler(scheduler: str | os.PathLike | Client | None = None) -> str | Client:
    """Return what ``scheduler`` means: ``"serial"``, ``"local"``, an address or a client.

    Parameters
    ----------
    scheduler : str, path-like, Client or None
        ``"serial"``, ``"local"``, ``"tcp://HOST:PORT"`` (any ``scheme://``), a
        ``scheduler.json`` file, a :class:`distributed.Client`, or None for
        ``$ASTRID_DASK_SCHEDULER`` (``"serial"`` when unset or empty).

    Returns
    -------
    str or Client
        ``"serial"``, ``"local"``, the address, the scheduler file path, or the client.

    Raises
    ------
    ValueError
        For anything else, naming where the value came from.

    Examples
    --------
    >>> resolve_scheduler("serial"), resolve_scheduler("tcp://10.0.0.5:8786")
    ('serial', 'tcp://10.0.0.5:8786')
    """
    source = "scheduler"
    if scheduler is None:
        source = ENV_SCHEDULER
        scheduler = os.environ.get(ENV_SCHEDULER, "").strip() or "serial"
    if not isinstance(scheduler, str | os.PathLike):
        distributed = sys.modules.get("distributed")  # a Client exists only once it is imported
        if distributed is not None and isinstance(scheduler, distributed.Client):
            return scheduler
        msg = f"{source} must be a string, path or distributed.Client, got {type(scheduler).__name__}"
        raise ValueError(msg)
    text = os.fspath(scheduler).strip()
    if text in {"serial", "local"} or "://" in text:
        return text
    if text.endswith(".json"):
        return str(Path(text).expanduser())
    msg = (f"{source}={text!r} is not 'serial', 'local', a scheduler address such as "
           "'tcp://HOST:8786' or a scheduler.json file")
    raise ValueError(msg)


def local_cluster(n_workers: int | None = None, *, threads_per_worker: int = 1,
                  dashboard_address: str | None = ":8787") -> LocalCluster:
    """Start a :class:`distributed.LocalCluster` of worker processes on this machine.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: the CPU cores this process may use).
    threads_per_worker : int
        Threads per worker; BLAS, OpenMP and torch in each worker get as many
        (unless this process's environment sets ``OMP_NUM_THREADS`` and the like).
    dashboard_address : str or None
        Where the dashboard listens (another free port is taken when this one is
        busy); None for no dashboard.

    Returns
    -------
    LocalCluster
        Started; close it (or use it as a context manager) when done.

    Raises
    ------
    ValueError
        For fewer than one worker or thread.
    """
    import dask
    from distributed import LocalCluster

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_workers = cores if n_workers is None else n_workers
    if int(n_workers) < 1 or int(threads_per_worker) < 1:
        msg = f"need n_workers >= 1 and threads_per_worker >= 1, got {n_workers}, {threads_per_worker}"
        raise ValueError(msg)
    # Set before each worker process starts (NumPy reads them on import). Dask's default
    # MALLOC_TRIM_THRESHOLD_ is left out: it makes every large temporary array a fresh
    # mmap, which costs the image phases 10-20 %.
    environ = dict.fromkeys(_THREAD_VARIABLES, str(int(threads_per_worker)))
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker),
                            processes=True, dashboard_address=dashboard_address)


def _announce(client: Client, progress: bool) -> None:
    link = client.dashboard_link
    workers = len(client.scheduler_info().get("workers", {}))
    line = f"Dask: {workers} workers, dashboard {link}"
    if progress:
        print(line, flush=True)
    log.info(line)


@contextmanager
def open_client(scheduler: str | os.PathLike | Client | None = None, *,
                progress: bool = False) -> Iterator[Client | None]:
    """Yield a Dask client for ``scheduler`` (None when it resolves to ``"serial"``).

    A client or cluster made here is closed on exit; a client passed in is left open.

    Parameters
    ----------
    scheduler : str, path-like, Client or None
        See :func:`resolve_scheduler`.
    progress : bool
        Print the worker count and dashboard link (they are always logged).

    Yields
    ------
    Client or None

    Raises
    ------
    SchedulerError
        When a named scheduler cannot be reached.

    Examples
    --------
    >>> with open_client("serial") as client:
    ...     client is None
    True
    """
    target = resolve_scheduler(scheduler)
    if target == "serial":
        yield None
        return
    if not isinstance(target, str):
        _announce(target, progress)
        yield target
        return
    from distributed import Client

    cluster = None
    try:
        if target == "local":
            cluster = local_cluster()
            client = Client(cluster)
        elif target.endswith(".json") and "://" not in target:
            client = Client(scheduler_file=target)
        else:
            client = Client(target)
    except (OSError, TimeoutError) as err:
        if cluster is not None:
            cluster.close()
        named = f" (from {ENV_SCHEDULER})" if scheduler is None else ""
        msg = f"cannot reach the Dask scheduler {target}{named}: {err}"
        raise SchedulerError(msg) from err
    try:
        _announce(client, progress)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_threads() -> int | None:
    """Return the thread count of the Dask worker running the caller (None outside a worker).

    Examples
    --------
    >>> worker_threads() is None
    True
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return int(get_worker().state.nthreads)
    except ValueError:
        return None


def _progress_bar(client: Client, futures: list) -> Any:
    """Start Dask's progress bar without blocking: a widget in Jupyter, text in a terminal."""
    from distributed import progress
    from distributed.diagnostics.progressbar import TextProgressBar
    from distributed.utils import is_kernel

    if is_kernel():
        progress(futures, notebook=True)
        return None
    bar = TextProgressBar(futures, scheduler=client.scheduler.address, start=False)
    return asyncio.run_coroutine_threadsafe(bar.listen(), client.loop.asyncio_loop)


def map_items(
    func: Callable[..., Any],
    items: Iterable[Any],
    *,
    scheduler: str | os.PathLike | Client | None = None,
    shared: dict[str, Any] | None = None,
    retries: int = 2,
    progress: bool = False,
    desc: str | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
    checkpoint_seconds: float = 10.0,
) -> list[Any]:
    """Call ``func(item, **shared)`` for every item, serially or on a Dask cluster.

    Parameters
    ----------
    func : callable
        A module-level function (workers import it by name).
    items : iterable
        One argument per call (picklable).
    scheduler : str, path-like, Client or None
        See :func:`resolve_scheduler`.
    shared : dict, optional
        Keyword arguments common to every call; on a cluster each is sent once to
        the scheduler and from worker to worker as needed (not with every task).
    retries : int
        Extra attempts of a call that raised (a call whose worker died is
        rescheduled by Dask anyway, up to ``distributed.scheduler.allowed-failures``).
    progress : bool
        Show a progress bar (tqdm when serial; Dask's bar, and its dashboard link,
        on a cluster).
    desc : str, optional
        Label of the bar and of the Dask tasks (default: the function's name).
    on_result : callable, optional
        ``on_result(index, result)`` on this process as each call finishes (in
        completion order).
    checkpoint : callable, optional
        Called on this process after results arrived, at most every
        ``checkpoint_seconds``, and once at the end, also when the map fails,
        so that finished work is recorded before an error propagates.
    checkpoint_seconds : float
        Least seconds between two checkpoints.

    Returns
    -------
    list
        ``func``'s results in the order of ``items``.

    Raises
    ------
    Exception
        The first exception of a call that failed on every attempt (the other
        calls are cancelled), or ``distributed.KilledWorker`` when a call's
        workers died too often.

    Examples
    --------
    >>> map_items(abs, [-2, 3], scheduler="serial")
    [2, 3]
    """
    items = list(items)
    shared = dict(shared or {})
    name = desc or func.__name__.strip("_")
    results: list[Any] = [None] * len(items)
    state = {"last": time.monotonic(), "unsaved": False}

    def finished(index: int, result: Any) -> None:
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        state["unsaved"] = True
        if checkpoint is not None and time.monotonic() - state["last"] >= checkpoint_seconds:
            checkpoint()
            state.update(last=time.monotonic(), unsaved=False)

    if not items:
        return results
    try:
        with open_client(scheduler, progress=progress) as client:
            if client is None:
                _map_serial(func, items, shared, finished, progress=progress, name=name)
            else:
                _map_dask(client, func, items, shared, finished, retries=retries,
                          progress=progress, name=name)
    finally:
        if checkpoint is not None and state["unsaved"]:
            checkpoint()
    return results


def _map_serial(func: Callable[..., Any], items: Sequence[Any], shared: dict[str, Any],
                finished: Callable[[int, Any], None], *, progress: bool, name: str) -> None:
    from tqdm.auto import tqdm

    for index, item in enumerate(tqdm(items, desc=name, disable=not progress)):
        finished(index, func(item, **shared))


def _shared_value(value: Any) -> Any:
    """Return ``value`` (a task that holds a value every task of a map needs)."""
    return value


def _map_dask(client: Client, func: Callable[..., Any], items: Sequence[Any],
              shared: dict[str, Any], finished: Callable[[int, Any], None], *, retries: int,
              progress: bool, name: str) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    # Shared values become tasks of their own (not scattered data): a worker holding one
    # passes it to the others on demand, and if every copy dies Dask recomputes it.
    handles = {key: client.submit(_shared_value, value, key=f"{name}-{key}-{token}")
               for key, value in shared.items()}
    futures = client.map(func, items, key=[f"{name}-{token}-{i}" for i in range(len(items))],
                         retries=int(retries), **handles)
    position = {future.key: i for i, future in enumerate(futures)}
    bar = _progress_bar(client, futures) if progress else None
    try:
        for future in as_completed(futures):
            finished(position[future.key], future.result())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            with suppress(Exception):
                bar.result(timeout=2.0)

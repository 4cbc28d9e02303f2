"""Data-parallel training over several processes: gloo on CPUs, NCCL on GPUs, through fastai.

Two ways in, one training loop (:func:`~astrid.model.train_unet`):

``train_unet(..., processes=N)``
    Spawns ``N`` processes on this machine (one per GPU, or CPU processes
    talking over gloo on loopback), trains, and returns in the calling
    process a :class:`~astrid.model.TrainResult` read back from rank 0's
    bundle and records. Works from a notebook, a test or a script (a script
    needs the usual ``if __name__ == "__main__":`` guard of ``spawn``).
``torchrun`` / ``accelerate launch --multi_gpu``
    When ``WORLD_SIZE`` > 1 in the environment, every launched process that
    calls ``train_unet(..., output_dir=SHARED)`` trains its shard; only rank 0
    writes files (``TrainResult.rank`` says which process you are in). For
    CPU processes use ``torchrun --nproc_per_node N``: ``accelerate launch
    --cpu --num_processes N`` starts a single process unless run under
    ``mpirun`` (huggingface/accelerate#2741).

In both, fastai's :class:`~fastai.distributed.DistributedTrainer` (the
callback behind ``Learner.distrib_ctx``) wraps the network in
``DistributedDataParallel`` through ``accelerate`` and shards the training
batches; fastai saves checkpoints on rank 0 only and every rank reloads the
best epoch behind a barrier. Two things differ from ``distrib_ctx``, with reasons:

* fastai's ``DistributedDL`` broadcasts the batch order through CUDA tensors
  ("nccl only works with cuda tensors"), which fails on gloo; the sharded
  loader here broadcasts on the CPU when the backend is gloo.
* Validation is not sharded: every process validates on the whole
  validation set. The macro Dice metric accumulates a confusion matrix from
  each process's own predictions, so sharded validation would give every
  rank a different score, and early stopping and the best-epoch choice could
  disagree (a hang). Replicated validation gives every rank the exact
  single-process metrics.

``batch_size`` is per process: an epoch still draws ``tiles_per_epoch`` tiles
in total, each process a different share (its tile stream is seeded from
``seed`` and its rank), so there are ``processes`` times fewer steps of
``processes`` times larger global batches. BatchNorm statistics are those of
each process's batches (DDP broadcasts rank 0's running statistics), as in
plain DDP; ``SyncBatchNorm`` is not used because it runs on GPUs only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from astrid.model._torch import Learner  # first: it imports fastai under its warning filters

# isort: split
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import distrib_barrier, rank_distrib

__all__ = ["DistributedEnv", "data_parallel", "distrib_barrier", "distributed_env", "rank_seed",
           "spawn_training"]


@dataclass(frozen=True)
class DistributedEnv:
    """Where the current process stands in a data-parallel launch.

    Attributes
    ----------
    rank : int
        Global rank (0 writes files and logs).
    local_rank : int
        Rank on this machine (picks the GPU).
    world_size : int
        Number of processes (1: not distributed).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1


def distributed_env(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` as set by ``accelerate launch`` or ``torchrun``.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read (default ``os.environ``).

    Examples
    --------
    >>> distributed_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    DistributedEnv(rank=1, local_rank=1, world_size=2)
    >>> distributed_env({}).distributed
    False
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", 0) or 0)
    rank = int(env.get("RANK", 0) or 0)
    return DistributedEnv(rank=rank, local_rank=int(env.get("LOCAL_RANK", rank) or 0),
                          world_size=max(world, 1))


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s tile stream: ``seed`` itself on rank 0, an independent stream elsewhere.

    Examples
    --------
    >>> rank_seed(7, 0)
    7
    >>> rank_seed(7, 1) != rank_seed(7, 0) and rank_seed(7, 1) == rank_seed(7, 1)
    True
    """
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence((int(seed), int(rank))).generate_state(1)[0])


class _ShardedDL(DistributedDL):
    """fastai's ``DistributedDL``, broadcasting the batch order on the CPU when the backend is gloo."""

    def _broadcast(self, t: list[int], rank: int) -> list[int]:
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        order = torch.tensor(t, dtype=torch.long, device=device)
        dist.broadcast(order, rank)
        return order.cpu().tolist()


class _DataParallel(DistributedTrainer):
    """fastai's ``DistributedTrainer`` sharding the training batches only (validation is replicated)."""

    def before_fit(self) -> None:
        self.learn.model = self.accelerator.prepare(self.model)
        self.old_dls = list(self.dls)
        self.learn.dls.loaders = [self._wrap_dl(self.dls.train), *self.old_dls[1:]]
        if rank_distrib():
            self.learn.logger = lambda *args, **kwargs: None

    def _wrap_dl(self, dl: Any) -> Any:
        return dl if isinstance(dl, _ShardedDL) else _ShardedDL(dl, device=self.dls.device)

    def before_validate(self) -> None:
        """Keep the whole validation set on every rank."""


@contextmanager
def data_parallel(learn: Learner, *, cpu: bool) -> Iterator[Learner]:
    """Train ``learn`` data-parallel inside the block (the process group starts on entry).

    Parameters
    ----------
    learn : fastai.learner.Learner
        The learner, built the same way on every rank.
    cpu : bool
        Use CPU processes (gloo) even where GPUs exist.

    Yields
    ------
    fastai.learner.Learner
        ``learn`` with the data-parallel callback attached (removed on exit).
    """
    trainer = _DataParallel(sync_bn=False, cpu=cpu)
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world: int, port: int, threads: int, manifest: Any, options: dict[str, Any],
            results: Any) -> None:
    """Body of each spawned process: join the group, train, send a record (and rank 0's result) home."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS=str(threads))
    torch.set_num_threads(threads)
    from astrid.model.bundle import _state_bytes
    from astrid.model.train import train_unet

    try:
        result = train_unet(manifest, **options)
        record = {"rank": rank, "train_batches": int(result.learner.train_iter),
                  "weights_sha256": hashlib.sha256(_state_bytes(result.model.net)).hexdigest()}
        payload = None
        if rank == 0:
            payload = {key: getattr(result, key) for key in (
                "history", "calibration", "bundle", "paths", "params", "best_epoch", "best_metric",
                "summary")}
        results.put((record, payload))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn_training(manifest: Any, *, processes: int, options: dict[str, Any]) -> Any:
    """Run :func:`~astrid.model.train_unet` in ``processes`` spawned processes; return rank 0's result.

    Parameters
    ----------
    manifest : Manifest or path-like
        Training dataset (passed to every process).
    processes : int
        Number of processes (at most the number of GPUs when training on GPUs).
    options : dict
        The other ``train_unet`` keyword arguments; ``output_dir`` must be set.

    Returns
    -------
    TrainResult
        Read back from rank 0 (``learner`` is ``None``: it lived in the worker);
        ``model`` is loaded from the saved bundle. ``summary["ranks"]`` (also
        in ``train_summary.json``) lists each process's ``train_batches`` and
        the sha256 of its final weights, which all ranks share.

    Raises
    ------
    ValueError
        Without ``output_dir``, or with more GPU processes than GPUs.
    RuntimeError
        When the processes ended with different weights (lost synchronisation).
    torch.multiprocessing.ProcessRaisedException
        When a worker failed (its traceback is in the message).
    """
    from astrid.manifest import atomic_write
    from astrid.model._torch import resolve_torch_device
    from astrid.model.bundle import load_model
    from astrid.model.data import as_manifest
    from astrid.model.train import TrainResult

    start = time.perf_counter()
    if not options.get("output_dir"):
        msg = "spawn_training needs options['output_dir'] (a folder every process shares)"
        raise ValueError(msg)
    device = resolve_torch_device(options.get("device", "auto"))
    if device.type == "cuda" and processes > torch.cuda.device_count():
        msg = f"processes={processes} exceeds the {torch.cuda.device_count()} visible GPUs; use device='cpu'"
        raise ValueError(msg)
    threads = max(1, torch.get_num_threads() // processes)
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    workers = torch.multiprocessing.start_processes(
        _worker, args=(processes, _free_port(), threads, manifest, {**options, "processes": 1}, results),
        nprocs=processes, join=False, start_method="spawn",
    )
    messages = []
    try:
        while not workers.join(timeout=0.2):  # read while rank 0 may still be writing into the pipe
            while not results.empty():
                messages.append(results.get())
    except BaseException:
        for process in workers.processes:
            if process.is_alive():
                process.terminate()
        raise
    while len(messages) < processes:
        messages.append(results.get())
    ranks = sorted((record for record, _ in messages), key=lambda r: r["rank"])
    if len({r["weights_sha256"] for r in ranks}) != 1:
        msg = f"the {processes} training processes ended with different weights: {ranks}"
        raise RuntimeError(msg)
    payload = next(p for _, p in messages if p is not None)
    payload["summary"] = {**payload["summary"], "ranks": ranks}
    with atomic_write(payload["paths"]["summary"], "w", overwrite=True) as handle:
        json.dump(payload["summary"], handle, indent=1, default=str)
    model = load_model(Path(payload["bundle"]), device=str(device))
    return TrainResult(model=model, learner=None, manifest=as_manifest(manifest),
                       seconds=time.perf_counter() - start, **payload)

"""One training run on several processes with torch DistributedDataParallel (DDP).

:func:`setup` joins the process group that ``torchrun`` (or :func:`launch`, behind ``noisysam train --nproc``)
describes in the environment and returns a :class:`Distributed` context that :func:`noisysam.run.loop.train` asks:
the device of this process, the rank's shard of each batch, the model to train through, and whether this rank
writes the run directory (rank 0 alone). Without such an environment it is the single-process context.

SAM under data parallelism (Foret et al., arXiv 2010.01412: the paragraph on parallelising SAM across
accelerators, p. 5, and Section 4.1, m-sharpness): DDP all-reduces the gradient of every synced backward pass,
so where the first (ascent) pass reduces decides what sharpness is minimised (davda54/sam issues 18, 38, 78).

- ``sam_sync="none"``: the first pass, forward included (DDP decides in forward whether to reduce), runs under
  ``no_sync()``: each rank climbs with its own gradient, so m = the rank's shard of the batch (B / world_size);
  the perturbed pass is synced, and the reduction weights each rank's SAM gradient by its share of the batch,
  i.e. :func:`noisysam.optim.sam.sam_step` on the global batch with the shards as its chunks.
- ``sam_sync="grad"``: both passes synced: the ascent direction is the global batch's gradient, plain SAM on B.
- ``m`` given: the shards are runs of whole m-chunks of the global batch, and each rank cuts its shard into
  those chunks; every pass runs under ``no_sync()`` except the last chunk's perturbed pass, which accumulates
  onto the earlier chunks' SAM gradients, so its one all-reduce sums their whole weighted sum: exactly
  sam_step(m) on the global batch, whatever the number of ranks.

Every rank draws the same global batch (order and augmentation from (seed, epoch)) and keeps its contiguous
slice (:meth:`Distributed.bounds`). A batch need not split evenly: rank r's n_r of the batch's N rows may differ
from the others' by a row (by an m-chunk with m), and the all-reduce (:func:`_share_weighted_sum`, a DDP
communication hook) weights its gradient of its mean loss by n_r / N instead of DDP's 1 / world_size, so the
sum is the gradient of the global batch's mean loss, as in one process. Each rank needs 2 rows of every batch
(:meth:`Distributed.check`). BatchNorm normalises with per-rank batch statistics (as one process does per
m-chunk), the perturbed pass leaves the running statistics alone, and the ranks' running statistics are
averaged after each epoch (before evaluation and the checkpoint); ``sync_bn`` converts to torch's
SyncBatchNorm (global batch statistics; CUDA only; even shards only, as its backward couples the ranks'
gradients, which a per-rank weight cannot reweight).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

#: How SAM's first (ascent) pass is reduced across ranks (module docstring).
SAM_SYNC = ("none", "grad")


def env_world_size() -> int:
    """The number of processes the launcher (torchrun, ``--nproc``) started for this run; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank under a launcher; 0 without one."""
    return int(os.environ.get("RANK", "0"))


def writer_process() -> bool:
    """Whether this process writes the run directory: rank 0 of an initialised process group, or of the
    launcher's environment, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_rank() == 0


_DDP_PARAMETERS = inspect.signature(DistributedDataParallel.__init__).parameters


class _SAMDataParallel(DistributedDataParallel):
    """DDP that tells :func:`noisysam.optim.sam.sam_step` which of SAM's passes all-reduce (module docstring)."""

    def __init__(self, module: nn.Module, sam_sync: str, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self.sam_sync = sam_sync

    def sam_pass(self, first: bool, last: bool) -> AbstractContextManager[None]:
        synced = self.sam_sync == "grad" if first else last
        return nullcontext() if synced else self.no_sync()


@dataclasses.dataclass
class _Shard:
    """The rows of the current global batch (``batch``, N) this rank trains on (``rows``, n_r); set by
    :meth:`Distributed.shard`, read by the all-reduce hook and :attr:`Distributed.weight`."""

    rows: int = 1
    batch: int = 1


def _share_weighted_sum(shard: _Shard, bucket):
    """DDP communication hook: the sum over ranks of each rank's gradient times its share n_r / N of the batch,
    i.e. the gradient of the global batch's mean loss (DDP's own hook divides by the world size instead, which
    is the same for even shards). Not annotated: DDP compares a hook's annotations with dist.GradBucket and
    Future[Tensor] themselves, and this module's annotations are strings (``from __future__ import annotations``)."""
    tensor = bucket.buffer().mul_(shard.rows / shard.batch)
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])


@dataclasses.dataclass(frozen=True)
class Distributed:
    """The data-parallel layout of one run: this process's ``rank`` of ``world_size``, its ``device``, how SAM's
    first pass is reduced (``sam_sync``) and whether BatchNorm layers become SyncBatchNorm (``sync_bn``).
    ``world_size`` 1: a single process, every method below is the identity."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    sam_sync: str = "none"
    sync_bn: bool = False
    _shard: _Shard = dataclasses.field(default_factory=_Shard, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._shard.batch = self.world_size  # an even share (1 row of world_size) until the first shard()

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes the run directory and reports progress."""
        return self.rank == 0

    @property
    def weight(self) -> float:
        """This rank's weight n_r * world_size / N in a mean over the ranks of their shards' mean losses of the
        last :meth:`shard`-ed batch, so that the mean is the global batch's mean loss (1 for even shards)."""
        return self._shard.rows * self.world_size / self._shard.batch

    def bounds(self, n: int, m: Optional[int] = None) -> list[int]:
        """Row boundaries [0, ..., n] of the ranks' shards of a batch of ``n`` rows: rank r takes rows
        [bounds[r], bounds[r + 1]). The batch is cut into chunks of ``m`` rows (of one row without m; the last
        chunk shorter) and each rank takes a run of whole chunks, the first ranks one more where they do not
        divide: the shards differ by at most one chunk, and the m-sharpness chunks are one process's."""
        w, size = self.world_size, m or 1
        each, extra = divmod(-(-n // size), w)
        return [min(n, size * (r * each + min(r, extra))) for r in range(w + 1)]

    def check(self, batch_size: int, rows: int, m: Optional[int]) -> None:
        """Refuse (ValueError) a layout that leaves a rank fewer than 2 rows of a batch of ``batch_size`` over
        ``rows`` training rows (cut along m-sharpness chunks of ``m``): BatchNorm in training mode cannot
        normalise one row (a single process has the same limit when its last batch has one row). With
        ``sync_bn``, refuse uneven shards too, and any device but CUDA."""
        w = self.world_size
        if w == 1:
            return
        last = rows % batch_size
        batches = [(f"batch_size {batch_size}", batch_size)] if rows >= batch_size else []
        if last:
            batches.append((f"the epoch's last batch ({last} of {rows} training rows at batch_size {batch_size})",
                            last))
        chunks = f" in chunks of m={m}" if m is not None else ""
        for name, n in batches:
            bounds = self.bounds(n, m)
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
            if min(sizes) < 2:
                raise ValueError(f"{name} splits over {w} processes{chunks} into shards of {sizes} rows: each "
                                 f"process needs at least 2 rows of every batch (BatchNorm in training mode "
                                 f"normalises over them); choose another batch size")
            if self.sync_bn and len(set(sizes)) > 1:
                raise ValueError(f"{name} splits over {w} processes{chunks} into shards of {sizes} rows: sync_bn "
                                 f"needs even shards (SyncBatchNorm's backward couples the processes' gradients "
                                 f"beyond a per-process weight); choose another batch size or leave sync_bn off")
        if self.sync_bn and self.device.type != "cuda":
            raise ValueError(f"sync_bn needs CUDA devices (torch's SyncBatchNorm does not run on "
                             f"{self.device.type}); leave it off")

    def wrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(the model to evaluate and checkpoint, the module to train through): the same plain model in one
        process; under DDP, the model (SyncBatchNorm with ``sync_bn``) and its DDP wrapper, whose all-reduce
        weights each rank's gradient by its share of the batch."""
        if self.world_size == 1:
            return model, model
        if self.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Running statistics stay per rank during an epoch and are averaged after it (end_epoch), not
        # overwritten by rank 0's at every forward (newer torch names that flag forward_sync_buffers).
        no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_PARAMETERS
                          else {"broadcast_buffers": False})
        net = _SAMDataParallel(model, self.sam_sync, device_ids=ids, **no_buffer_sync)
        net.register_comm_hook(self._shard, _share_weighted_sum)
        return model, net

    def shard(self, *batch: Tensor, m: Optional[int] = None) -> tuple[Tensor, ...]:
        """This rank's contiguous slice (:meth:`bounds`, cut along m-sharpness chunks of ``m``) of each tensor of
        a global batch; its share of the batch weights this rank's gradient until the next call."""
        if self.world_size == 1:
            return batch
        n = batch[0].shape[0]
        bounds = self.bounds(n, m)
        start, stop = bounds[self.rank], bounds[self.rank + 1]
        self._shard.rows, self._shard.batch = stop - start, n
        return tuple(t[start:stop] for t in batch)

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over the ranks (per-rank mean losses times :attr:`weight` become the global
        batch's)."""
        if self.world_size == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def end_epoch(self, model: nn.Module) -> None:
        """Average the BatchNorm running statistics over the ranks, so that every rank evaluates and rank 0
        checkpoints the same model (the weights are equal already: DDP reduces their gradients)."""
        if self.world_size == 1:
            return
        for layer in model.modules():
            if isinstance(layer, _BatchNorm) and layer.track_running_stats:
                for stats in (layer.running_mean, layer.running_var):
                    if stats is not None:
                        stats.copy_(self.mean(stats))


def device_for(device: torch.device, world_size: int, local_rank: int) -> torch.device:
    """The device of local rank ``local_rank``: one GPU per process on CUDA, the CPU otherwise."""
    if world_size == 1 or device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {device} cannot run {world_size} processes: use cpu (gloo) or cuda (nccl)")
    if device.index is not None:
        raise ValueError(f"device {device} names one GPU, but {world_size} processes take one GPU each (local "
                         f"rank i uses cuda:i): pass device cuda or auto")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"{world_size} processes on this machine need {world_size} GPUs, "
                         f"{torch.cuda.device_count()} visible")
    return torch.device("cuda", local_rank)


@contextmanager
def setup(device: torch.device, sam_sync: str = "none", sync_bn: bool = False) -> Iterator[Distributed]:
    """The context of this process: a single process, or (under torchrun / ``--nproc``, or inside a process group
    the caller initialised) its rank, with backend gloo on CPU and nccl on CUDA. A process group this call
    starts is destroyed on exit."""
    if sam_sync not in SAM_SYNC:
        raise ValueError(f"sam_sync must be one of {list(SAM_SYNC)}, got {sam_sync!r}")
    started = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = env_rank(), env_world_size()
    device = device_for(device, world, int(os.environ.get("LOCAL_RANK", rank)))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        started = True
    if world > 1:
        dist.barrier()  # every rank has checked the run directory before rank 0 writes to it
    try:
        yield Distributed(rank, world, device, sam_sync, sync_bn)
    finally:
        if started:
            dist.destroy_process_group()


def check_resume(saved_world_size: int, world_size: int, out: str) -> None:
    """Refuse (ValueError) to resume with ``world_size`` processes a run directory ``out`` trained by
    ``saved_world_size``: the per-rank batch (SAM's m) and the order of the reductions would change midway."""
    if saved_world_size != world_size:
        raise ValueError(f"cannot resume {out!r}: it was trained by {saved_world_size} process(es) and this run "
                         f"has {world_size}; resume it with --nproc {saved_world_size} (or torchrun "
                         f"--nproc_per_node {saved_world_size})")


def launch(nproc: int, entrypoint: Callable[..., Any], *args: Any) -> Any:
    """Run ``entrypoint(*args)`` in ``nproc`` local processes under torch's elastic launcher (the agent behind
    torchrun, ``torch.distributed.launcher.api.elastic_launch``, standalone c10d rendezvous on a free port, no
    restarts); returns rank 0's return value. ``entrypoint`` must be importable (processes are spawned). CPU
    threads per process: ``OMP_NUM_THREADS`` where set, else cores // nproc. A failed process stops the others
    and raises torch's ChildFailedError."""
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an integer >= 1, got {nproc!r}")
    if env_world_size() > 1:
        raise ValueError("nproc: this process already runs under a launcher (torchrun); leave --nproc out")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    return elastic_launch(config, entrypoint)(*args)[0]

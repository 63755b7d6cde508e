"""Where computation runs: the device choice and the one seam to ``torch.distributed``.

The algorithms are written against :class:`Runtime` and never ask whether they run in one process or
in many. A run asks :func:`current` for its runtime and uses five things:

* ``rank`` / ``world_size`` and :meth:`Runtime.shard`: which contiguous block of classes this process owns;
* :meth:`Runtime.all_reduce`: sum a tensor over the processes (the per-(class, group) feature sums and counts);
* :meth:`Runtime.broadcast`: rank 0's copy of a tensor everywhere;
* :meth:`Runtime.all_gather`: every process's tensor, in rank order (first dimensions may differ);
* :meth:`Runtime.barrier`.

:class:`SingleProcess` implements them as no-ops (a sum over one process is the tensor itself).
:class:`Distributed` implements them with ``torch.distributed`` (gloo on CPU, nccl on CUDA), set up
from the environment that ``torchrun`` gives every process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Nothing else in fairdistill imports ``torch.distributed``.

:func:`session` is what a command wraps itself in: inside ``torchrun`` with more than one process it
starts the process group (and ends it afterwards), otherwise it gives the single-process runtime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator

import torch
from torch import Tensor

from .errors import FairDistillError

log = logging.getLogger("fairdistill")


#: cuBLAS needs this workspace setting for bit-reproducible results; it is read when cuBLAS starts, so it
#: is set (unless the user set it) when fairdistill is imported, before any CUDA work of a command
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
#: ``FAIRDISTILL_CUDA_DETERMINISTIC=0`` trades reproducibility on CUDA for speed
DETERMINISTIC_ENV = "FAIRDISTILL_CUDA_DETERMINISTIC"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU. Asking for CUDA without a GPU is an error.

    A CUDA device switches torch to its deterministic kernels (:func:`deterministic_cuda`).
    """
    if isinstance(device, torch.device):
        dev = device
    elif device in (None, "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        name = str(device)
        if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
            raise FairDistillError(f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise FairDistillError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        dev = torch.device(name)
    if dev.type == "cuda":
        deterministic_cuda()
    return dev


def deterministic_cuda() -> bool:
    """Make CUDA runs repeatable: deterministic cuDNN convolutions, deterministic ``index_add_`` and friends.

    Without it the same seed gives other synthetic sets on a GPU: atomic float additions (the
    per-(class, group) sums, convolution gradients) land in another order each run, and the image
    updates amplify the differences. Ops that have no deterministic CUDA kernel warn instead of
    failing (DSA's ``grid_sample`` backward, which runs in float64, so its float32 result is
    practically unaffected). Off with ``FAIRDISTILL_CUDA_DETERMINISTIC=0``. Returns whether it is on.
    """
    if os.environ.get(DETERMINISTIC_ENV, "1").lower() in ("0", "false", "off", "no"):
        return False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return True


def shard_range(n: int, rank: int, world_size: int) -> range:
    """The ``rank``-th of ``world_size`` contiguous blocks of ``range(n)``, sizes differing by at most one."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class Runtime:
    """One process's view of the run: its rank among ``world_size`` processes and their collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints results."""
        return self.rank == 0

    def device(self, requested: str | torch.device | None = None) -> torch.device:
        """The device this process computes on (``requested`` as in :func:`resolve_device`)."""
        return resolve_device(requested)

    def shard(self, n: int) -> range:
        """This process's contiguous block of ``range(n)`` (all of it in a single process)."""
        return shard_range(n, self.rank, self.world_size)

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the processes, in place; returns it."""
        raise NotImplementedError

    def broadcast(self, tensor: Tensor, src: int = 0) -> Tensor:
        """Overwrite ``tensor`` with rank ``src``'s, in place; returns it."""
        raise NotImplementedError

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every process's ``tensor``, in rank order; the first dimension may differ between processes."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """The processes' tensors concatenated along dimension 0 in rank order (a class-sharded set made whole)."""
        parts = self.all_gather(tensor)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def gather_rows_keeping_grad(self, tensor: Tensor) -> Tensor:
        """:meth:`gather_rows`, with this process's rows still on the autograd graph (the others are constants).

        For a loss that couples every class (CAFE's discrimination term): each process differentiates
        it with respect to its own rows only, and gets exactly the gradient the whole loss gives them.
        """
        parts = self.all_gather(tensor.detach())
        parts[self.rank] = tensor
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class SingleProcess(Runtime):
    """The runtime of a plain run: every collective is the identity."""

    def all_reduce(self, tensor: Tensor) -> Tensor:
        return tensor

    def broadcast(self, tensor: Tensor, src: int = 0) -> Tensor:
        return tensor

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        return [tensor]

    def barrier(self) -> None:
        return None


class Distributed(Runtime):
    """``torch.distributed`` started from torchrun's environment: gloo for CPU runs, nccl for CUDA runs."""

    def __init__(self, device: str | torch.device | None = None, *, timeout_s: float | None = None) -> None:
        import datetime

        import torch.distributed as dist

        self._dist = dist
        env = os.environ
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in env]
        if missing:
            raise FairDistillError(
                f"a distributed run needs torchrun's environment; {', '.join(missing)} not set "
                "(launch with: torchrun --nproc_per_node N -m fairdistill distill ...)"
            )
        self.rank, self.world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self._device = self._local_device(device)
        backend = "nccl" if self._device.type == "cuda" else "gloo"
        kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method="env://", **kwargs)
            self._owns_group = True
        else:
            self._owns_group = False
        self.backend = backend
        log.info("rank %d of %d on %s (%s)", self.rank, self.world_size, self._device, backend)

    def _local_device(self, requested: str | torch.device | None) -> torch.device:
        dev = resolve_device(requested)
        if dev.type != "cuda":
            return dev
        if dev.index is None:  # one GPU per process on each node: LOCAL_RANK picks it
            count = torch.cuda.device_count()
            if self.local_rank >= count:
                raise FairDistillError(
                    f"local rank {self.local_rank} has no GPU of its own ({count} visible); "
                    "use --nproc_per_node <= the GPUs per node"
                )
            dev = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(dev)
        return dev

    def device(self, requested: str | torch.device | None = None) -> torch.device:
        return self._device

    def _on_comm_device(self, tensor: Tensor) -> Tensor:
        return tensor if tensor.device.type == self._device.type else tensor.to(self._device)

    def all_reduce(self, tensor: Tensor) -> Tensor:
        buf = self._on_comm_device(tensor)
        self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def broadcast(self, tensor: Tensor, src: int = 0) -> Tensor:
        buf = self._on_comm_device(tensor)
        self._dist.broadcast(buf, src=src)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        buf = self._on_comm_device(tensor.contiguous())
        # collectives need equal shapes: share the first dimensions, pad to the largest, trim afterwards
        sizes = torch.zeros(self.world_size, dtype=torch.long, device=buf.device)
        sizes[self.rank] = buf.shape[0] if buf.ndim else 1
        self._dist.all_reduce(sizes, op=self._dist.ReduceOp.SUM)
        largest = int(sizes.max())
        if buf.ndim and buf.shape[0] < largest:
            buf = torch.cat([buf, buf.new_zeros(largest - buf.shape[0], *buf.shape[1:])])
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._dist.all_gather(parts, buf)
        if buf.ndim:
            parts = [p[: int(n)] for p, n in zip(parts, sizes.tolist(), strict=True)]
        return [p.to(tensor.device) for p in parts]

    def barrier(self) -> None:
        if self._device.type == "cuda":
            self._dist.barrier(device_ids=[self._device.index])
        else:
            self._dist.barrier()

    def close(self) -> None:
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()


_current: Runtime = SingleProcess()


def current() -> Runtime:
    """The runtime of the running command (single-process unless inside :func:`session` under torchrun)."""
    return _current


def launched_world_size() -> int:
    """How many processes torchrun started (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as err:
        raise FairDistillError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from err


@contextlib.contextmanager
def session(device: str | torch.device | None = None) -> Iterator[Runtime]:
    """The runtime for one command: distributed under a multi-process torchrun, single-process otherwise."""
    global _current
    if launched_world_size() <= 1:
        yield _current
        return
    previous = _current
    rt = Distributed(device)
    _current = rt
    try:
        yield rt
        # leave together: a process tearing its gloo connections down while rank 0 still writes the
        # results was seen to abort ("terminate called without an active exception")
        rt.barrier()
    finally:
        _current = previous
        rt.close()

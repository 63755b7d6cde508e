"""Where independent tasks run: in this process, in local worker processes, or on a Ray cluster.

An :class:`Executor` runs tasks ``fn(shared, *args)``. ``shared`` (e.g. the real test set every
evaluation model is tested on) goes to each worker once, when the executor is made; the per-task
``args`` should be small and must pickle. Results come back as :class:`concurrent.futures.Future`
objects, so callers can take them in submission order or as they finish.

* ``sequential``: runs each task in this process when it is submitted (what ``workers=1`` means);
* ``local``: a :class:`~concurrent.futures.ProcessPoolExecutor` on the ``spawn`` context (a fork of a
  process whose torch thread pools are running can deadlock), each worker limited to
  ``threads`` torch / OpenMP / MKL threads so that ``workers`` of them share the cores instead of
  oversubscribing them;
* ``ray``: Ray tasks, one CPU-share each (``pip install 'fairdistill[ray]'``; imported only when used).

CPU numbers depend on the thread count: a convolution's weight gradient and a matrix product sum
over the batch in per-thread chunks, so 1 and 2 threads round differently (last bits: after one
backward, conv weight gradients differ by about 2e-7; many epochs of SGD carry that into a few
different test predictions). A task run in a worker with ``threads`` threads therefore gives exactly what it gives in
this process with ``torch.set_num_threads(threads)``, not necessarily what it gives with more.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from .errors import FairDistillError
from .registry import Registry

#: the environment variables that size a child process's thread pools (read when it starts)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Executor(ABC):
    """Runs tasks ``fn(shared, *args)`` somewhere; ``with`` shuts it down (cancelling what is left after an error)."""

    kind: str = ""

    def __init__(self, workers: int, *, shared: Any = None, threads: int | None = None) -> None:
        self.workers = check_workers(workers)
        self.threads = threads if threads is not None else worker_threads(workers)
        self.shared = shared

    @classmethod
    def check_available(cls) -> None:
        """Raise a :class:`FairDistillError` if this kind cannot run here (e.g. a missing package)."""
        return None

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Schedule ``fn(shared, *args)``; ``fn`` must be a module-level function (it is pickled by name)."""

    @abstractmethod
    def shutdown(self, *, cancel: bool = False) -> None:
        """Free the workers; ``cancel``: drop the tasks not started and stop the running ones."""

    def map(self, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[Any]:
        """Results of ``fn(shared, *task)`` for every task, in the order of ``tasks``."""
        futures = [self.submit(fn, *task) for task in tasks]
        for f in futures:
            yield f.result()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.shutdown(cancel=exc_type is not None)


def check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FairDistillError(f"eval_workers must be an integer >= 1 (1: evaluate in this process), got {workers!r}")
    return workers


def worker_threads(workers: int, total: int | None = None) -> int:
    """Each worker's share of ``total`` threads (default: torch's current thread count), at least one."""
    if total is None:
        import torch

        total = torch.get_num_threads()
    return max(1, total // workers)


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("sequential", "every task in this process, when it is submitted")
class SequentialExecutor(Executor):
    kind = "sequential"

    def __init__(self, workers: int = 1, *, shared: Any = None, threads: int | None = None) -> None:
        super().__init__(1, shared=shared, threads=threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(self.shared, *args))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            future.set_exception(err)
        return future

    def shutdown(self, *, cancel: bool = False) -> None:
        pass


# ---- local worker processes ------------------------------------------------------------------------
_SHARED: Any = None  # in a worker process: the executor's ``shared`` object


def _init_worker(threads: int, shared: Any) -> None:
    global _SHARED
    for key in THREAD_ENV:  # for anything the task starts; this process's pools were sized at its start
        os.environ[key] = str(threads)
    import torch

    torch.set_num_threads(threads)
    _SHARED = shared


def _call_in_worker(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(_SHARED, *args)


_ENV_LOCK = threading.Lock()


@contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """The thread-count variables set while worker processes are started (a spawned child copies them)."""
    with _ENV_LOCK:
        old = {key: os.environ.get(key) for key in THREAD_ENV}
        os.environ.update({key: str(threads) for key in THREAD_ENV})
        try:
            yield
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@EXECUTORS.register("local", "worker processes on this machine (spawned), each with its share of the threads")
class LocalExecutor(Executor):
    kind = "local"

    def __init__(self, workers: int, *, shared: Any = None, threads: int | None = None) -> None:
        import multiprocessing

        super().__init__(workers, shared=shared, threads=threads)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads, shared),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        with _thread_env(self.threads):  # the pool starts its processes inside submit
            return self._pool.submit(_call_in_worker, fn, args)

    def shutdown(self, *, cancel: bool = False) -> None:
        if not cancel:
            self._pool.shutdown(wait=True)
            return
        # stop now: tasks still queued are dropped, running ones killed (a pool would finish them first)
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=10)


# ---- ray ---------------------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FairDistillError(
            "the ray executor needs the ray package (pip install ray, or fairdistill's extra: '.[ray]'); "
            "or use the local executor (--eval-executor local)"
        ) from None
    return ray


def _call_in_ray(threads: int, shared: Any, fn: Callable[..., Any], args: tuple) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(shared, *args)


@EXECUTORS.register("ray", "Ray tasks (needs ray; joins a running cluster, else starts a local one for the run)")
class RayExecutor(Executor):
    kind = "ray"

    @classmethod
    def check_available(cls) -> None:
        _import_ray()

    def __init__(self, workers: int, *, shared: Any = None, threads: int | None = None) -> None:
        ray = _import_ray()
        super().__init__(workers, shared=shared, threads=threads)
        # ray.init() joins the cluster named by RAY_ADDRESS or the one `ray start` made on this
        # machine, else starts a local one, which shutdown() then stops again
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init()
        self._ray = ray
        self._shared_ref = ray.put(shared)  # stored once, read by every task
        self._remote = ray.remote(num_cpus=self.threads)(_call_in_ray)
        self._refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        ref = self._remote.remote(self.threads, self._shared_ref, fn, args)
        self._refs.append(ref)
        return ref.future()

    def shutdown(self, *, cancel: bool = False) -> None:
        if cancel:
            for ref in self._refs:
                self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()


def create_executor(kind: str, workers: int, *, shared: Any = None, threads: int | None = None) -> Executor:
    """An executor of ``kind`` (``sequential``, ``local``, ``ray``) with ``workers`` workers.

    ``threads`` per worker defaults to :func:`worker_threads`: this process's torch thread count
    divided among the workers.
    """
    check_workers(workers)
    return EXECUTORS.get(kind)(workers, shared=shared, threads=threads)


def list_executors(pattern: str = "*") -> list[str]:
    return EXECUTORS.list(pattern)

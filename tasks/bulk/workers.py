"""The decode/encode worker pool of the bulk engine, and how a dead worker stops a run.

A worker process that dies (killed for memory, a crash in an image library) takes the pool with it:
the run stops with one line and the next run redoes what was not recorded. concurrent.futures
notices a dead worker by itself, except when the worker died halfway through sending a result: the
pool's manager thread then waits for the rest of that message forever (CPython 3.11-3.13, the
worker is killed while holding the result pipe's lock), and every future stays pending. So the
engine waits through `wait_any`, which looks at the workers too and, when one died, breaks the
pool itself (`_break`) before it raises: every pending future is failed by the pool's own code
before the engine cancels anything (the pool fails them with set_exception, which raises in its
thread on a future already cancelled).
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from stylepipe.children import leave_with
from stylepipe.errors import StageError

log = logging.getLogger("stylepipe.stylize")

WORKER_DIED = ("a decode/encode worker process died (out of memory, or a crash in an image library); "
               "outputs so far are recorded, run again to resume")
WORKER_NICENESS = 0  # raising it (10, 19) changed nothing beyond this machine's noise (session 15)
CHECK_WORKERS_S = 0.5  # how often a wait looks at the workers
# Pipe buffer of the pool's two queues (pixels in both directions). At Linux's default 64 KiB a
# decoded 512-px image (768 KiB) crossed in 12 rounds of write, wake up, read: 2.2 ms of CPU for the
# two processes; in a 1 MiB pipe 0.55 ms (benchmarks/bench_pipes.py). Capped by fs/pipe-max-size.
PIPE_BYTES = 1 << 20


def _worker_init(engine_pid: int) -> None:
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    leave_with(engine_pid)  # (its parent is the forkserver, which waits for the workers to go first)


def _why_no_processes() -> str:
    if multiprocessing.current_process().daemon:
        return "running in a daemonic process (a Dask worker?), which may not start children"
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is None and main_file and not os.path.isfile(main_file):
        return f"__main__ ({main_file}) cannot be re-imported by worker processes"
    return ""


class InlineExecutor(Executor):
    """workers: 0 - decode and encode in the calling thread (debugging, tiny jobs)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(e)
        return future


def make_pool(workers: int) -> Executor:
    if workers == 0:
        return InlineExecutor()
    reason = _why_no_processes()
    if reason:
        # Pillow releases the GIL while it decodes, resizes and encodes, and zlib and numpy while
        # they write a PNG (png.py): threads still overlap.
        log.info("%s: decode/encode in %d threads instead of processes", reason, workers)
        return ThreadPoolExecutor(workers, thread_name_prefix="stylize-io")
    # forkserver, not fork: this process runs torch's thread pools and maybe Prefect's event loop;
    # its children should inherit neither. They import codec and __main__, nothing more
    # (tasks.infer and stylepipe.cli keep torch out of their imports for this reason).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tasks.bulk.codec"])
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))
    widen_pipes(pool)
    return pool


def widen_pipes(pool: ProcessPoolExecutor) -> None:
    """Grow the pipes under the pool's job and result queues to PIPE_BYTES (a pipe's size belongs
    to the pipe: the workers' ends share it). Best effort: where Linux says no, the default stays."""
    try:
        import fcntl

        size = min(PIPE_BYTES, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
        readers = [pool._call_queue._reader, pool._result_queue._reader]  # (no public accessor)
    except (ImportError, AttributeError, OSError, ValueError):
        return
    for reader in readers:
        try:
            fcntl.fcntl(reader.fileno(), fcntl.F_SETPIPE_SZ, size)
        except (AttributeError, OSError):  # not Linux, or over the user's pipe allowance
            pass


def _processes(pool: Executor) -> list:
    if not isinstance(pool, ProcessPoolExecutor):
        return []
    return list((pool._processes or {}).values())  # (no public accessor; stable since 3.8)


def worker_died(pool: Executor) -> bool:
    """A worker of a process pool has exited (its sentinel is readable: the same test as the pool's
    own, and it consumes nothing, so it cannot race the pool's manager thread)."""
    sentinels = [p.sentinel for p in _processes(pool)]
    return bool(sentinels) and bool(multiprocessing.connection.wait(sentinels, timeout=0))


def submit(pool: Executor, fn, job) -> Future:
    try:
        return pool.submit(fn, job)
    except BrokenProcessPool:
        raise StageError(WORKER_DIED) from None


def wait_any(futures: Iterable[Future], pool: Executor, timeout: float | None = None) -> set[Future]:
    """concurrent.futures.wait(FIRST_COMPLETED) that raises StageError(WORKER_DIED) when a worker
    process has died, even if the pool never fails the futures."""
    futures = set(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = CHECK_WORKERS_S if deadline is None else max(0.0, min(CHECK_WORKERS_S, deadline - time.monotonic()))
        done, _ = wait(futures, timeout=left, return_when=FIRST_COMPLETED)
        if done:
            return done
        if worker_died(pool):
            _break(pool)
            raise StageError(WORKER_DIED)
        if deadline is not None and time.monotonic() >= deadline:
            return set()


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor]:
    """make_pool's pool, shut down on the way out; after a worker died, without hanging."""
    pool = make_pool(workers)
    try:
        yield pool
    finally:
        if worker_died(pool):
            _break(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _break(pool: ProcessPoolExecutor, wait_s: float = 30.0) -> None:
    """Have the pool's manager thread see the end of the result pipe instead of waiting for the
    rest of a dead worker's message: kill the other workers and close this process's copy of the
    pipe's write end (the forkserver keeps none). Its read fails, it fails every pending future
    and ends; this waits for that. (If it was not stuck, it is doing the same already.)"""
    for process in _processes(pool):
        process.kill()
    pool._result_queue._writer.close()
    manager = pool._executor_manager_thread
    if manager is not None:
        manager.join(wait_s)

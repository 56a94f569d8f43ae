"""A worker process that dies halfway through sending its result: CPython's pool then never fails the
futures (its manager thread waits for the rest of the message); the engine's wait notices anyway,
and the pool shuts down instead of hanging the run."""
from __future__ import annotations

import gc
import multiprocessing.queues
import os
import struct
import threading
from concurrent.futures import Future, wait
from concurrent.futures.process import BrokenProcessPool

import pytest

from stylepipe.errors import StageError
from tasks.bulk.workers import WORKER_DIED, wait_any, worker_died, worker_pool


def die_sending_a_result(_: int) -> None:
    """In a pool worker: the moment a worker is killed while sending a large result (the pipe's
    lock held, a message header and part of its body written)."""
    results = next(o for o in gc.get_objects() if type(o) is multiprocessing.queues.SimpleQueue)
    results._wlock.acquire()
    results._writer._send(struct.pack("!i", 1 << 20) + b"part of a result")
    os._exit(1)


def square(x: int) -> int:
    return x * x


def shut_down_within(seconds: float, pool_context) -> bool:
    """Leave the pool's context in a thread; False if that did not finish in time."""
    finished = threading.Event()

    def leave():
        pool_context.__exit__(None, None, None)
        finished.set()
    threading.Thread(target=leave, daemon=True).start()
    return finished.wait(seconds)


def test_the_pool_alone_never_fails_the_futures():
    """The bug worked around: without the engine's check, the future stays pending."""
    context = worker_pool(2)
    pool = context.__enter__()
    future = pool.submit(die_sending_a_result, 0)
    done, _ = wait([future], timeout=3)
    assert done == set() and worker_died(pool)
    assert shut_down_within(20, context)  # (the engine's way out unsticks it)


def test_wait_any_raises_and_the_pool_shuts_down():
    context = worker_pool(2)
    pool = context.__enter__()
    assert pool.submit(square, 3).result(timeout=30) == 9
    assert not worker_died(pool)
    dying, waiting = pool.submit(die_sending_a_result, 0), pool.submit(square, 5)
    with pytest.raises(StageError, match="worker process died") as raised:
        wait_any([dying], pool, timeout=30)
    assert str(raised.value) == WORKER_DIED
    # the pool itself failed every future before wait_any raised: nothing left for the engine to cancel
    for future in (dying, waiting):
        assert future.done() and not future.cancelled()
        assert future.exception() is None or isinstance(future.exception(), BrokenProcessPool)
    assert shut_down_within(20, context)


def test_wait_any_returns_what_finished_and_honours_its_timeout():
    with worker_pool(2) as pool:
        assert wait_any([pool.submit(square, 4)], pool, timeout=30).pop().result() == 16
        assert wait_any([Future()], pool, timeout=0.2) == set()  # (a future nobody will finish)


def test_the_pools_pipes_hold_a_decoded_image_in_one_write():
    """Pixels cross the pool's queues both ways; widen_pipes grows their pipes past a 512-px image
    (768 KiB) wherever this user may grow a pipe (Linux, up to fs/pipe-max-size)."""
    import fcntl
    from pathlib import Path

    from tasks.bulk.workers import PIPE_BYTES

    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("pipes cannot be resized here (not Linux)")
    size = min(PIPE_BYTES, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
    probe = os.pipe()
    try:
        fcntl.fcntl(probe[0], fcntl.F_SETPIPE_SZ, size)
    except OSError as e:
        pytest.skip(f"this user may not grow a pipe to {size} bytes: {e}")
    finally:
        for end in probe:
            os.close(end)
    assert size >= 512 * 512 * 3, "fs/pipe-max-size is below one decoded image"
    with worker_pool(1) as pool:
        assert pool.submit(square, 3).result() == 9  # the pipes are the workers' too
        for reader in (pool._call_queue._reader, pool._result_queue._reader):
            assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) >= size

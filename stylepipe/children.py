"""Worker processes that leave when the process they work for does.

A pool worker waits on a pipe it holds both ends of, so it never sees that process die. Polling it
with os.kill(pid, 0) is not enough: a killed process that nobody has reaped yet (a zombie, e.g.
while subprocess.run(capture_output=True) still reads its pipes) passes that check, and the caller
deadlocked on the pipes the workers kept open. Nor is watching getppid(): stylize's workers are
children of the forkserver, which holds on until they are gone. So a worker watches the process by
a pidfd, which becomes readable the moment it exits, reaped or not; where there are no pidfds
(before Linux 5.3, other systems) it polls, counting a zombie as gone."""
from __future__ import annotations

import os
import select
import signal
import threading
import time

POLL_S = 0.5


def leave_with(pid: int | None = None, ignore_sigint: bool = True) -> None:
    """Pool initializer: exit at once (no cleanup: nobody is left to use it) when process `pid`
    (default: the parent) exits. With ignore_sigint, a terminal's Ctrl-C, which reaches the whole
    process group, is left to that process: it stops the work and says so in one line, where each
    worker would print a traceback."""
    pid = os.getppid() if pid is None else pid
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        pidfd = None
    threading.Thread(target=_watch, args=(pid, pidfd), daemon=True, name="watch-owner").start()


def _watch(pid: int, pidfd: int | None) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])
    else:
        while _alive(pid):
            time.sleep(POLL_S)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True

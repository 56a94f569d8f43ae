"""kill -9 at several moments of `stylepipe stylize`, then run again: every input is done exactly
once, every output decodes, no temporary file is left, and the ledger accounts for every file."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tasks.bulk.plan import default_ledger
from tests.hostile import corpus
from tests.tasks.bulk.test_support import (all_files, decodes, ledger_rows, make_photos, output_files,  # noqa: F401
                                        tiny_model)

# Enough that four kills land mid-run: on a fast 2-core machine the ledger's first rows (the third
# kill point) come after about 100 images, and 120 images were sometimes all done by the fourth.
IMAGES = [f"{'sub/' if i % 2 else ''}{i:03d}.jpg" for i in range(240)]


def start(src: Path, out: Path, model: Path) -> subprocess.Popen:
    """The run, started as from a terminal: with Ctrl-C's default handling even where this test
    process inherited SIGINT ignored (a launcher's background job, `nohup cmd &`), which the run
    would inherit in turn (an ignored signal stays ignored across exec; a handler does not)."""
    cmd = [sys.executable, "-m", "stylepipe.cli", "stylize", str(src), "--model", str(model),
           "--out", str(out), "--quiet", "--batch-size", "2", "--workers", "2", "--max-failed-fraction", "0.1"]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def done_rows(out: Path) -> int:
    ledger = default_ledger(out)
    if not ledger.is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM items WHERE status = 'done'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> bool:
    """SIGKILL the stylize process (not its workers) once ready() holds; False if it finished first.

    The process runs only while this loop is looking: it is stopped (SIGSTOP) before each check and
    continued after, so a busy machine that delays this loop cannot let the run get past the kill
    point (workers finish only what they hold, a few images)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        if ready():
            children = psutil.Process(proc.pid).children(recursive=True)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            # Orphaned decode/encode workers notice their parent is gone and exit by themselves.
            _, alive = psutil.wait_procs(children, timeout=20)
            assert alive == [], f"worker processes outlived the kill: {alive}"
            return True
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    proc.communicate(timeout=timeout)
    return False


def test_kill_9_at_several_points_then_resume(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, IMAGES, size=(224, 160))
    (src / "broken.jpg").write_bytes(corpus.bad_images()["truncated.jpg"][0])

    # Each kill point sees the run's start time, outputs and done rows, so it counts that run's own
    # progress (earlier runs left outputs behind).
    kill_points = [
        lambda t0, outputs, rows: time.monotonic() - t0 >= 0.5,            # importing, listing, loading
        lambda t0, outputs, rows: len(output_files(out)) >= outputs + 1,   # the first outputs
        lambda t0, outputs, rows: done_rows(out) >= rows + 6,              # while ledger rows are written
        lambda t0, outputs, rows: len(output_files(out)) >= outputs + 10,  # well into the run
    ]
    killed = 0
    for point in kill_points:
        baseline = (time.monotonic(), len(output_files(out)), done_rows(out))
        killed += kill_when(start(src, out, tiny_model), lambda: point(*baseline))
        # Whatever a kill leaves, a file under its final name is a complete image.
        assert all(decodes(out / p) for p in output_files(out))
    assert killed >= 3, "the runs finished before most kill points; make the work bigger"
    assert 0 < len(output_files(out)) < len(IMAGES)

    settled_before_final = len(ledger_rows(default_ledger(out)))
    final = start(src, out, tiny_model)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr

    rows = ledger_rows(default_ledger(out))
    by_status = {s: sorted(r["relpath"] for r in rows if r["status"] == s) for s in ("done", "failed")}
    assert by_status == {"done": sorted(IMAGES), "failed": ["broken.jpg"]}
    assert len(rows) == len(IMAGES) + 1                       # one row per input: done exactly once
    assert output_files(out) == sorted(IMAGES)                 # one output per input, nothing else
    assert all(decodes(out / p) for p in output_files(out))
    assert all_files(out / ".stylepipe") == ["ledger.sqlite"]  # no temporary files, no segments
    # the final run redid only what no earlier run had recorded
    assert f"stylized {len(IMAGES) + 1 - settled_before_final} inputs" in stdout, stdout


def started(src: Path, out: Path, model: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A run that has written its first output, and its descendants (forkserver, workers, tracker).

    The run is returned stopped (SIGSTOP; the caller sends SIGCONT after its own signal): a fast
    run (an ONNX job never imports torch) could otherwise finish between this check and the
    caller's signal, on a busy machine that delays the test process."""
    proc = start(src, out, model)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        if output_files(out):
            return proc, psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the run ended (or took 120 s) before its first output")


def test_workers_leave_a_killed_parent_that_nobody_reaps(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, IMAGES, size=(224, 160))
    proc, children = started(src, out, tiny_model)
    assert len(children) >= 3
    os.kill(proc.pid, signal.SIGKILL)  # (a stopped process dies too)
    # not reaped: as under subprocess.run(capture_output=True) reading the output first
    time.sleep(0.5)
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    _, alive = psutil.wait_procs(children, timeout=20)
    for p in alive:
        p.kill()
    proc.wait()
    assert alive == [], f"processes outlived their zombie parent: {alive}"


def test_a_dead_worker_ends_the_run_with_one_line(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, IMAGES, size=(224, 160))
    proc, children = started(src, out, tiny_model)
    forkserver = next(p for p in children if "forkserver" in " ".join(p.cmdline()))
    os.kill(proc.pid, signal.SIGCONT)  # (most of the run is still ahead: it cannot finish first)
    forkserver.children()[0].kill()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "worker process died" in stderr and "run again to resume" in stderr


def test_ctrl_c_ends_the_run_with_one_line(tmp_path, tiny_model):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, IMAGES, size=(224, 160))
    proc, children = started(src, out, tiny_model)
    proc.send_signal(signal.SIGINT)
    for child in children:  # a terminal's Ctrl-C reaches the whole foreground group
        try:
            child.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:
            pass
    os.kill(proc.pid, signal.SIGCONT)  # the SIGINT is pending: it lands before any more work
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "interrupted" in stderr
    _, alive = psutil.wait_procs(children, timeout=20)
    assert alive == []

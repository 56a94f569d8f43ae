"""preprocess stage: turn the downloaded content files into train/ and val/ images.

    python -m tasks.preprocess

Every file under data/raw/content/files/ is a candidate. Each one is decoded by the rule in
tasks/images.py (upright, RGB, alpha over white, first frame, bombs and truncated files refused),
exact duplicates (same sha256) are dropped, and the rest are split deterministically:
the candidates are ordered by sha256("<seed>:<file sha256>") and the first round(n * val_fraction)
go to val. A file's key never depends on the other files, so adding files moves few others.
When at least two images decode, at least one lands in each split.

  data/processed/train/<sha256[:16]>.png   short side resized to train_size, centre square crop
  data/processed/val/<sha256[:16]>.png     original size
  data/processed/manifest.parquet          one row per candidate (COLUMNS)

A bad file never stops the stage: it gets a rejected row with its reason. The stage fails only when
no image is usable or the rejected fraction is over max_reject_fraction. Decoding runs in
`workers` processes with a bounded queue, so memory stays flat in the number of files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from stylepipe.config import PreprocessParams, load_params
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import run_main
from tasks.images import Rejected, decode, resize_short_side_and_crop

log = logging.getLogger("stylepipe.preprocess")

RAW_CONTENT = Path("data/raw/content")
PROCESSED = Path("data/processed")
PARTIAL = ".partial"

# manifest.parquet. relpath: relative to data/raw/content (as in its manifest.json), or for a
# member refused by download, its name inside the source. width/height: the upright original
# (null when it did not decode). mode: the original Pillow mode ('' when it did not decode).
# output: relative to data/processed ('' when rejected).
SCHEMA = pa.schema([
    ("source", pa.string()),
    ("relpath", pa.string()),
    ("sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),
    ("status", pa.string()),   # ok | rejected
    ("reason", pa.string()),   # '' when ok, else "<code>: <detail>" (REASONS)
    ("split", pa.string()),    # train | val | ''
    ("output", pa.string()),
])
REASONS = {
    "empty": "zero-byte file",
    "not-an-image": "Pillow does not recognise the format (text, HTML error page, ...)",
    "truncated": "the file ends before the image data does",
    "too-large": "width * height over preprocess.max_pixels (decompression bomb guard)",
    "decode-error": "any other decoding failure",
    "unsupported-mode": "a Pillow mode with no conversion to RGB",
    "crashed": "the decoding process died on it (a decoder crash, out of memory)",
    "unreadable": "the file could not be read",
    "changed": "its bytes no longer match data/raw/content/manifest.json",
    "download": "refused by the download stage (unsafe archive member, link out of the tree, ...)",
    "duplicate": "same bytes as another candidate (not counted against max_reject_fraction)",
    "hidden": "a dotfile or __MACOSX entry (not counted against max_reject_fraction)",
}
NOT_COUNTED = {"duplicate", "hidden"}


@dataclass(frozen=True)
class Candidate:
    relpath: str
    source: str
    sha256: str  # from download's manifest, or computed here for a file it does not list
    key: str     # split order: sha256("<seed>:<sha256>")


@dataclass(frozen=True)
class Job:
    """What a worker process needs to turn one candidate into one output image."""

    path: str
    relpath: str
    source: str
    sha256: str
    split: str
    out_dir: str
    train_size: int
    max_pixels: int


def preprocess(params: PreprocessParams, raw: Path = RAW_CONTENT, out: Path = PROCESSED) -> dict[str, int]:
    files_dir = raw / "files"
    if not files_dir.is_dir():
        raise StageError(f"{files_dir} not found: run the download stage first (python -m tasks.download)")
    reset_outputs(out)
    rows: list[dict] = [rejected_row(r.get("source", ""), r.get("path", ""), "download", r.get("reason", ""))
                        for r in _read_json(raw / "rejected.json")]
    candidates = []
    first_of_sha: dict[str, str] = {}
    for relpath, source, sha, hidden in list_candidates(raw, _read_json(raw / "manifest.json")):
        if hidden:
            rows.append(rejected_row(source, relpath, "hidden", "not an image candidate", sha))
        elif sha is None:
            rows.append(rejected_row(source, relpath, "unreadable", "cannot read the file"))
        elif sha in first_of_sha:
            rows.append(rejected_row(source, relpath, "duplicate", f"same bytes as {first_of_sha[sha]}", sha))
        else:
            first_of_sha[sha] = relpath
            key = hashlib.sha256(f"{params.seed}:{sha}".encode()).hexdigest()
            candidates.append(Candidate(relpath, source, sha, key))

    splits = assign_splits(candidates, params.val_fraction)
    jobs = (make_job(c, splits[c.relpath], raw, out, params) for c in candidates)
    results = []
    with tqdm(total=len(candidates), desc="preprocess", unit="img", file=sys.stderr, disable=None) as bar:
        for row in parallel_map(process_one, jobs, params.workers, on_crash=crashed_row):
            results.append(row)
            bar.update()
    results = ensure_both_splits(results, candidates, raw, out, params)
    rows += results
    rows.sort(key=lambda r: (r["relpath"], r["source"]))
    write_manifest(rows, out / "manifest.parquet", out / PARTIAL)
    _remove_if_empty(out / PARTIAL)
    return summarise(rows, params.max_reject_fraction)


def reset_outputs(out: Path) -> None:
    """The stage owns data/processed: start from empty train/ and val/ (DVC removes them before
    `dvc repro`; this covers running the module by hand)."""
    for name in ("train", "val", PARTIAL):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "manifest.parquet").unlink(missing_ok=True)
    for name in ("train", "val", PARTIAL):
        (out / name).mkdir(parents=True)


def list_candidates(raw: Path, manifest: list[dict]) -> Iterator[tuple[str, str, str | None, bool]]:
    """(relpath, source, sha256, hidden) for every file under raw/files, in sorted order. The sha256
    comes from download's manifest when it lists the file with this size, else it is computed."""
    listed = {e["path"]: e for e in manifest if isinstance(e, dict) and "path" in e}
    for dirpath, dirnames, filenames in os.walk(raw / "files"):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            relpath = path.relative_to(raw).as_posix()
            entry = listed.get(relpath, {})
            source = entry.get("source", "")
            hidden = any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(raw).parts)
            if not path.is_file():  # (a symlink is fine: DVC may link data/raw to its cache)
                yield relpath, source, None, False
                continue
            size = path.stat().st_size
            sha = entry.get("sha256") if entry.get("size") == size else None
            if sha is None:
                try:
                    sha = sha256_file(path)
                except OSError:
                    sha = None
            yield relpath, source, sha, hidden


def assign_splits(candidates: list[Candidate], val_fraction: float) -> dict[str, str]:
    ordered = sorted(candidates, key=lambda c: c.key)
    n = len(ordered)
    n_val = round(n * val_fraction)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return {c.relpath: ("val" if i < n_val else "train") for i, c in enumerate(ordered)}


def make_job(c: Candidate, split: str, raw: Path, out: Path, params: PreprocessParams) -> Job:
    return Job(str(raw / c.relpath), c.relpath, c.source, c.sha256, split, str(out),
               params.train_size, params.max_pixels)


def process_one(job: Job) -> dict:
    """Decode one candidate and write its output image (atomically). Never raises for a bad file."""
    try:
        data = Path(job.path).read_bytes()
    except OSError as e:
        return rejected_row(job.source, job.relpath, "unreadable", e.strerror or str(e), job.sha256)
    if hashlib.sha256(data).hexdigest() != job.sha256:
        return rejected_row(job.source, job.relpath, "changed", "edit data/raw only through download", job.sha256)
    try:
        decoded = decode(data, job.max_pixels, min_side=job.train_size if job.split == "train" else None,
                         setting="preprocess.max_pixels")
    except Rejected as e:
        return rejected_row(job.source, job.relpath, e.reason, e.detail, job.sha256)
    del data
    image = decoded.image
    if job.split == "train":
        image = resize_short_side_and_crop(image, job.train_size)
    output = f"{job.split}/{job.sha256[:16]}.png"
    tmp = Path(job.out_dir, PARTIAL, f"{job.sha256[:16]}.{os.getpid()}.png")
    image.save(tmp, format="PNG", compress_level=3)
    os.replace(tmp, Path(job.out_dir, output))
    return {"source": job.source, "relpath": job.relpath, "sha256": job.sha256, "width": decoded.width,
            "height": decoded.height, "mode": decoded.mode, "status": "ok", "reason": "",
            "split": job.split, "output": output}


def ensure_both_splits(results: list[dict], candidates: list[Candidate], raw: Path, out: Path,
                       params: PreprocessParams) -> list[dict]:
    """Rejections can empty a split: then move the usable image nearest the split boundary over."""
    ok = [r for r in results if r["status"] == "ok"]
    if len(ok) < 2:
        return results
    keys = {c.relpath: c for c in candidates}
    for empty, full in (("val", "train"), ("train", "val")):
        if any(r["split"] == empty for r in ok):
            continue
        # val takes the smallest keys, so the boundary image is the smallest train / largest val key
        pick = (min if empty == "val" else max)((r for r in ok if r["split"] == full),
                                                key=lambda r: keys[r["relpath"]].key)
        moved = process_one(make_job(keys[pick["relpath"]], empty, raw, out, params))
        if moved["status"] == "ok":
            (out / pick["output"]).unlink()
            results = [moved if r is pick else r for r in results]
            ok = [moved if r is pick else r for r in ok]
    return results


def parallel_map(fn: Callable[[Job], dict], jobs: Iterable[Job], workers: int,
                 on_crash: Callable[[Job], dict]) -> Iterator[dict]:
    """fn over jobs in `workers` processes, results in job order, at most 4 jobs per worker queued.
    A job whose worker process dies (a decoder crash, the OOM killer) gives on_crash(job)."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    jobs = iter(jobs)
    pending: deque[tuple[Job, Future]] = deque()
    pool = _process_pool(workers)
    crashes_in_a_row = 0
    try:
        while True:
            while len(pending) < 4 * workers and (job := next(jobs, None)) is not None:
                pending.append((job, pool.submit(fn, job)))
            if not pending:
                return
            job, future = pending.popleft()
            try:
                yield future.result()
            except BrokenProcessPool:
                # Which job killed the worker is unknown: run this one alone to find out, then
                # give the others a new pool.
                pool.shutdown(cancel_futures=True)
                with _process_pool(1) as alone:
                    try:
                        result = alone.submit(fn, job).result()
                        crashes_in_a_row = 0
                    except BrokenProcessPool:
                        result = on_crash(job)
                        crashes_in_a_row += 1
                if crashes_in_a_row >= 3:  # it is not the files: worker processes cannot run here
                    raise StageError("worker processes die on every file; run with preprocess.workers=1 "
                                     "to see the error")
                yield result
                pool = _process_pool(workers)
                pending = deque((j, pool.submit(fn, j)) for j, _ in pending)
    finally:
        pool.shutdown(cancel_futures=True)


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: the stage may run inside a threaded host (a Prefect worker), where fork can hang.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def crashed_row(job: Job) -> dict:
    return rejected_row(job.source, job.relpath, "crashed", "the decoder process died on this file", job.sha256)


def rejected_row(source: str, relpath: str, reason: str, detail: str, sha256: str = "") -> dict:
    return {"source": source, "relpath": relpath, "sha256": sha256 or "", "width": None, "height": None,
            "mode": "", "status": "rejected", "reason": f"{reason}: {detail}" if detail else reason,
            "split": "", "output": ""}


def write_manifest(rows: list[dict], path: Path, tmp_dir: Path) -> None:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"manifest.{os.getpid()}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    os.replace(tmp, path)


def summarise(rows: list[dict], max_reject_fraction: float) -> dict[str, int]:
    """Log 'N ok, M rejected (by reason)'; raise StageError when the result is unusable."""
    ok = [r for r in rows if r["status"] == "ok"]
    by_reason = Counter(r["reason"].split(":", 1)[0] for r in rows if r["status"] == "rejected")
    counted = sum(n for reason, n in by_reason.items() if reason not in NOT_COUNTED)
    splits = Counter(r["split"] for r in ok)
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none"
    log.info("preprocess: %d ok (%d train, %d val), %d rejected (%s)", len(ok), splits["train"],
             splits["val"], sum(by_reason.values()), reasons)
    if not ok:
        raise StageError(f"no usable content image ({reasons}); see data/processed/manifest.parquet")
    if counted / (len(ok) + counted) > max_reject_fraction:
        raise StageError(f"{counted} of {len(ok) + counted} candidates rejected ({reasons}), over "
                         f"preprocess.max_reject_fraction={max_reject_fraction}; "
                         "see data/processed/manifest.parquet")
    return {"ok": len(ok), "train": splits["train"], "val": splits["val"], **by_reason}


def _read_json(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    run_main("preprocess", lambda: preprocess(load_params().preprocess))


if __name__ == "__main__":
    main()

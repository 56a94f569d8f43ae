"""The ledger: one SQLite row per (input, model) saying what became of it, with its lineage.

Identity. A row is keyed by the input's path inside the source (`relpath`) and the model's label.
It counts as finished for a new run only if its `input_stamp` (size + mtime; size + CRC-32 for zip
members), `model_hash` (sha256 of the weights) and `options_hash` (everything that changes the
output's pixels or bytes) all match, and, for a done row, the output file is still there. The
stamp, not a content hash, is the identity because it is known from the listing alone: resuming a
2-million-image bucket then costs one listing, not a second read of every byte. The content's
sha256 is still recorded (lineage), computed from the bytes the run decoded anyway.

Writers. A process writes rows in small transactions after the outputs they describe have been
renamed into place, so a kill -9 loses at most the rows of outputs in flight; those inputs are
redone (the rename makes the redo idempotent). Outputs packed into tars (tasks/bulk/tar_output.py)
are the exception: a tar's rows are committed before the tar is moved into place. Parallel shards each write their own segment file
(SQLite is not safe for concurrent writers on network filesystems), and the driver merges segments
into the main ledger; a segment left by a killed process is merged by the next run.
"""
from __future__ import annotations

import csv
import json
import operator
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TextIO

from tasks.data.reasons import code_of

STATUSES = ("done", "failed", "ignored")


@dataclass
class Row:
    relpath: str
    model: str
    status: str                  # done | failed | ignored
    reason: str = ""             # `code: detail` (tasks/data/reasons.py)
    source: str = ""
    input_size: int = 0
    input_stamp: str = ""
    input_sha256: str = ""
    output: str = ""             # relative to the output folder ('' unless done)
    output_bytes: int = 0
    width: int = 0               # of the output image
    height: int = 0
    model_hash: str = ""
    options_hash: str = ""
    options: str = ""            # JSON
    code_version: str = ""
    device: str = ""
    seconds: float = 0.0         # decode + model + encode time spent on this output
    finished_at: float = 0.0     # unix time
    run_id: str = ""


COLUMNS = [f.name for f in fields(Row)]
ROW_VALUES = operator.attrgetter(*COLUMNS)  # dataclasses.astuple: 23 us a row, this 0.9 (a row per output)
SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL"}  # Row's annotations, as strings
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items ("
    + ", ".join(f"{f.name} {SQL_TYPES[f.type]} NOT NULL" for f in fields(Row))
    + ", PRIMARY KEY (relpath, model)) WITHOUT ROWID"
)
UPSERT = (
    f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    f"ON CONFLICT(relpath, model) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
    + " WHERE excluded.finished_at >= items.finished_at"
)


@dataclass(frozen=True)
class Finished:
    status: str
    reason: str
    input_stamp: str
    model_hash: str
    options_hash: str
    output: str
    options: str = "{}"    # the options it was made with, as JSON (plan.without_tile_layout)


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        # The rollback journal (not WAL) works on network filesystems too; either way a commit is
        # atomic and a kill -9 never leaves a half-written row.
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.execute(SCHEMA)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def write(self, rows: Iterable[Row]) -> None:
        rows = [ROW_VALUES(r) for r in rows]
        if rows:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(UPSERT, rows)

    def finished(self, relpath: str) -> dict[str, Finished]:
        """model label -> what the ledger holds for this input."""
        cur = self.db.execute(
            "SELECT model, status, reason, input_stamp, model_hash, options_hash, output, options "
            "FROM items WHERE relpath = ?",
            (relpath,))
        return {model: Finished(*rest) for model, *rest in cur}

    def outputs(self) -> dict[tuple[str, str], str]:
        """(relpath, model) -> the output file of every done row."""
        cur = self.db.execute("SELECT relpath, model, output FROM items WHERE status = 'done' AND output != ''")
        return {(relpath, model): output for relpath, model, output in cur}

    def rows(self, where: str = "", params: tuple = ()) -> list[Row]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM items {where}", params)
        return [Row(*r) for r in cur]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())

    def merge(self, segment: Path) -> int:
        """Fold a segment's rows in (newer rows win) and delete the segment; returns rows merged."""
        self.db.execute("ATTACH DATABASE ? AS seg", (str(segment),))
        try:
            has_items = self.db.execute(
                "SELECT 1 FROM seg.sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
            merged = 0
            if has_items:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(f"INSERT INTO items ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
                                f"FROM seg.items WHERE true " + UPSERT[UPSERT.index("ON CONFLICT"):])
                merged = self.db.execute("SELECT changes()").fetchone()[0]
                self.db.execute("COMMIT")
        finally:
            self.db.execute("DETACH DATABASE seg")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{segment}{suffix}").unlink(missing_ok=True)
        return merged


def segments_dir(ledger_path: Path) -> Path:
    return Path(ledger_path).with_name(Path(ledger_path).stem + ".segments")


def segment_path(ledger_path: Path, run_id: str, shard: int) -> Path:
    return segments_dir(ledger_path) / f"{run_id}-{shard:05d}.sqlite"


def merge_segments(ledger_path: Path, segments: list[Path] | None = None) -> int:
    """Fold segments (default: all there are, which is only safe when no shard is running) into the
    main ledger, deleting them; returns the rows merged."""
    folder = segments_dir(ledger_path)
    every = segments is None
    if every:
        segments = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    segments = [s for s in segments if s.is_file()]
    merged = 0
    if segments:
        with Ledger(ledger_path) as ledger:
            merged = sum(ledger.merge(s) for s in segments)
    if every and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return merged


def options_json(options: dict) -> str:
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


# --- reading it: `stylepipe ledger` -------------------------------------------------------------

REPORT_COLUMNS = ["relpath", "model", "status", "code", "reason", "output", "input_sha256", "finished_at", "run_id"]


def read_rows(path: Path, *, failed_only: bool = False) -> list[Row]:
    """Every row (or the failed ones), by input and model; read-only, so a running job is not disturbed."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        where = "WHERE status = 'failed' " if failed_only else ""
        cur = db.execute(f"SELECT {', '.join(COLUMNS)} FROM items {where}ORDER BY relpath, model")
        return [Row(*r) for r in cur]
    finally:
        db.close()


def report_lines(rows: list[Row]) -> Iterator[str]:
    """What a job did: counts by status and by reason code, then one line per row."""
    by_status = Counter(r.status for r in rows)
    yield ", ".join(f"{by_status[s]} {s}" for s in STATUSES) + f" ({len(rows)} rows)"
    for status in ("failed", "ignored"):
        codes = Counter(code_of(r.reason) for r in rows if r.status == status)
        if codes:
            yield f"{status} by reason: " + ", ".join(f"{code} {n}" for code, n in codes.most_common())
    for r in rows:
        what = f"-> {r.output}" if r.status == "done" else r.reason
        yield f"{r.status:<7} {r.model}  {r.relpath}  {what}"


def report_csv(rows: list[Row], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for r in rows:
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.finished_at)) if r.finished_at else ""
        writer.writerow([r.relpath, r.model, r.status, code_of(r.reason), r.reason, r.output, r.input_sha256,
                         finished, r.run_id])

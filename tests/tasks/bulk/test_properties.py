"""Property-based tests of issue 13's promise: whatever the file names (any bytes), image sizes
(1 px up), modes and archive layouts, a job ends; every input gets exactly one ledger row per
model, with a reason code from the one vocabulary when it failed; outputs never collide, always
decode, and their names round-trip to the input's bytes. Also through preprocess.

Kept fast: a few examples each (SETTINGS), tiny images, the tiny seeded network, no processes."""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylepipe.errors import StageError
from stylepipe.names import unescape_name
from tasks.bulk.engine import stylize
from tasks.data.reasons import REASONS, code_of
from tests.tasks.bulk.test_support import decodes, ledger_rows, make_job, output_files, tiny_model  # noqa: F401

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODES = ["RGB", "L", "RGBA", "LA", "P", "1", "I;16", "CMYK"]
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".tif": "TIFF", ".webp": "WEBP", ".bmp": "BMP"}

# a name part: any bytes but '/' and NUL (high bytes, '%', spaces, dots and control characters too)
# ('\\' is a folder separator in every source, as in zips made on Windows: left out here)
name_bytes = st.binary(min_size=1, max_size=12).map(
    lambda b: b.replace(b"/", b"_").replace(b"\\", b"_").replace(b"\x00", b"0"))
suffixes = st.sampled_from([".png", ".jpg", ".JPG", ".gif", ".tif", ".webp", ".bmp", ".txt"])
sizes = st.tuples(st.integers(1, 90), st.integers(1, 90)) | st.sampled_from([(1, 1), (200, 3), (3, 200)])


@st.composite
def inputs(draw) -> list[tuple[bytes, bytes]]:
    """[(relative path as bytes, file content)], paths distinct, some in subfolders."""
    files, seen = [], set()
    for _ in range(draw(st.integers(1, 5))):
        folder = draw(st.sampled_from([b"", b"sub/", b"\xe9t\xe9/"]))
        stem, suffix = draw(name_bytes), draw(suffixes).encode()
        path = folder + stem + suffix
        if path.lower() in seen or path.split(b"/")[-1] in (b".", b".."):
            continue
        seen.add(path.lower())
        files.append((path, draw(image_bytes(suffix.decode().lower()))))
    return files


@st.composite
def image_bytes(draw, suffix: str) -> bytes:
    choice = draw(st.sampled_from(["image", "image", "image", "garbage", "empty", "truncated"]))
    if choice == "empty":
        return b""
    if choice == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    w, h = draw(sizes)
    mode = draw(st.sampled_from(MODES))
    fmt = FORMATS.get(suffix, "PNG")
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold: TIFF holds them all
        buf = io.BytesIO()
        img.save(buf, "TIFF")
    data = buf.getvalue()
    return data[: len(data) // 2] if choice == "truncated" else data


def write_source(root: Path, files: list[tuple[bytes, bytes]], layout: str) -> Path:
    if layout == "folder":
        for path, data in files:
            full = os.path.join(os.fsencode(root / "src"), path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        return root / "src"
    if layout == "zip":
        archive = root / "src.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for path, data in files:  # zip names are text: stored as their Latin-1 reading
                zf.writestr(path.decode("latin-1"), data)
        return archive
    archive = root / f"src.{layout}"
    with tarfile.open(archive, "w:gz" if layout == "tar.gz" else "w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tf:
        for path, data in files:
            info = tarfile.TarInfo(os.fsdecode(path))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


@SETTINGS
@given(files=inputs(), layout=st.sampled_from(["folder", "zip", "tar", "tar.gz"]),
       max_size=st.sampled_from([None, 32, 64]), fmt=st.sampled_from(["jpg", "png"]))
def test_bulk_stylize_accounts_for_every_input_once(tiny_model, files, layout, max_size, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source, out = write_source(root, files, layout), root / "out"
        job = make_job(source, out, tiny_model, max_size=max_size, format=fmt, tile_above=64, tile_size=64,
                       tile_overlap=16)
        summary = stylize(job, progress=False)
        again = stylize(job, progress=False)  # nothing left to do, nothing changes
        rows = ledger_rows(out / ".stylepipe/ledger.sqlite")

        assert len(rows) == len({r["relpath"] for r in rows}) == len(files)
        assert summary.pending == 0 and again.run.processed == 0
        done = [r for r in rows if r["status"] == "done"]
        for r in rows:
            r["relpath"].encode("utf-8")  # every name stored is valid text
            if r["status"] == "failed":
                assert code_of(r["reason"]) in REASONS, r["reason"]
        if layout in ("folder", "tar", "tar.gz"):  # names that round-trip to the input's own bytes
            assert sorted(unescape_name(r["relpath"]) for r in rows) == sorted(p for p, _ in files)
        outputs = [r["output"] for r in done]
        assert len(set(outputs)) == len(outputs)
        assert sorted(outputs) == output_files(out)
        assert all(decodes(out / o) for o in outputs)
        good = [p for p, data in files if not p.endswith(b".txt") and _decodes(data)]
        assert len(done) == len(good), [(r["relpath"], r["reason"]) for r in rows]


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001
        return False


@SETTINGS
@given(files=inputs())
def test_preprocess_accounts_for_every_file_once(files):
    from stylepipe.config import PreprocessParams
    from tasks.preprocess import preprocess_photos

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = root / "raw"
        write_source(raw / "files", files, "folder")
        params = PreprocessParams(workers=1, train_size=32, val_fraction=0.3, max_reject_fraction=1.0)
        try:
            preprocess_photos(params, raw=raw, out=root / "processed")
        except StageError as e:  # only "nothing usable" may stop it, with one line
            assert "no usable image" in str(e) and "\n" not in str(e)
            return
        import pandas as pd

        m = pd.read_parquet(root / "processed/manifest.parquet")
        assert len(m) == len(files)
        assert sorted(unescape_name(r.removeprefix("files/src/")) for r in m["relpath"]) == sorted(p for p, _ in files)
        for row in m.itertuples():
            if row.status == "ok":
                assert decodes(root / "processed" / row.output)
            else:
                assert code_of(row.reason) in REASONS, row.reason

"""Bulk outputs in object storage (`--out s3://bucket/prefix`, or any fsspec URL).

An object is never written in pieces: the worker encodes into a local temporary file, then uploads
it under its final key (S3's PUT, multipart included, makes an object visible only once complete).
Each object carries its ledger identity in its metadata (`stylepipe-identity`: input path, input
stamp, model hash, options hash), so a run killed between an upload and its ledger row does not
write the object again when resumed: planning finds the object, reads its identity, and records it.

The ledger and the temporary files stay on the local disk (SQLite and rename need a filesystem):
`$XDG_CACHE_HOME/stylepipe/bulk/<bucket-and-prefix>-<hash>/` (default `~/.cache/...`), or
`--ledger PATH` for the ledger.

Torch-free: worker processes import this.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

IDENTITY_KEY = "stylepipe-identity"


def is_remote(out: str | Path) -> bool:
    text = str(out)
    return "://" in text and not text.startswith("file://")


def state_dir(url: str) -> Path:
    """The local folder that holds the ledger and temporary files of the output URL `url`."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylepipe" / "bulk"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[-1]).strip("-")[:80]
    return base / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def identity(relpath: str, stamp: str, model_hash: str, options_hash: str) -> str:
    return hashlib.sha256("\0".join((relpath, stamp, model_hash, options_hash)).encode()).hexdigest()[:32]


def _fs(url: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def key(url: str, relpath: str) -> str:
    return f"{url.rstrip('/')}/{relpath}"


def upload(local: Path, url: str, relpath: str, ident: str) -> None:
    """Put `local` at url/relpath in one request (the object appears complete or not at all)."""
    fs, root = _fs(url)
    extra = {"Metadata": {IDENTITY_KEY: ident}} if fs.protocol[0] in ("s3", "s3a") else {}
    fs.put_file(str(local), f"{root}/{relpath}", **extra)


def existing(url: str) -> set[str]:
    """Relative paths of every object under url (one listing)."""
    fs, root = _fs(url)
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return set()
    return {p[len(root) + 1:] for p in found if p.startswith(root + "/")}


def stored_identity(url: str, relpath: str) -> str | None:
    fs, root = _fs(url)
    if fs.protocol[0] not in ("s3", "s3a"):
        return None
    try:
        meta = fs.metadata(f"{root}/{relpath}")
    except (FileNotFoundError, OSError):
        return None
    return {k.lower(): v for k, v in meta.items()}.get(IDENTITY_KEY)

"""File names that are not UTF-8, as text: one reversible escaping used everywhere a name is stored
(the bulk ledger, download's manifest.json and rejected.json, preprocess's manifest.parquet) and
for the output files named after it.

Linux names are bytes; Python hands undecodable bytes over as lone surrogates (PEP 383), which
SQLite, JSON and Parquet cannot store. `escape_name` writes each such byte as `%XX` (upper-case
hex, XX >= 80), and a literal `%` that is followed by `25` or by two hex digits from 80 to FF as
`%25`, so the reverse is unambiguous. Every other name, `%20` included, stays as it is: valid
names, and the outputs and ledger rows of earlier runs, keep their names.

    b"caf\\xe9.jpg" -> "caf%E9.jpg"      b"caf%E9.jpg" -> "caf%25E9.jpg"      b"a%20b.jpg" -> "a%20b.jpg"
"""
from __future__ import annotations

import os
import re

# what escape_name writes: %25 for '%', %80-%FF for a byte that is not UTF-8
_ESCAPE = re.compile(r"%(25|[89A-Fa-f][0-9A-Fa-f])")


def escape_name(name: str | bytes) -> str:
    """A name (bytes, or str with surrogate escapes) as valid UTF-8 text; unescape_name reverses it."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    text = raw.decode("utf-8", "surrogateescape")
    text = _ESCAPE.sub(lambda m: "%25" + m[1], text)
    return "".join(f"%{ord(c) - 0xDC00:02X}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def unescape_name(name: str) -> bytes:
    """The original bytes of an escaped name."""
    parts = []
    last = 0
    for m in _ESCAPE.finditer(name):
        parts.append(name[last:m.start()].encode("utf-8"))
        parts.append(b"%" if m[1] == "25" else bytes([int(m[1], 16)]))
        last = m.end()
    parts.append(name[last:].encode("utf-8"))
    return b"".join(parts)


def text_name(name: str) -> str:
    """A name from the OS as text: itself when it is valid UTF-8 (e.g. one this escaping wrote to
    disk), else escaped."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return escape_name(name)

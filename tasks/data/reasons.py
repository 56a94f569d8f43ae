"""The one vocabulary of why an input was refused or failed: preprocess's manifest.parquet, the bulk
ledger and `stylepipe ledger` all write a reason as `<code>: <detail>` with a code from REASONS.

A failure is an input's own fault (recorded; the job goes on and the next run does not try it again),
TRANSIENT (recorded; the next run tries again: nothing was learnt about the input), or FATAL (no
input's fault: the job stops with one line, and the inputs in flight stay unrecorded)."""
from __future__ import annotations

REASONS = {
    "empty": "zero-byte file",
    "not-an-image": "Pillow does not recognise the format (text, HTML error page, ...)",
    "truncated": "the file ends before the image data does",
    "too-large": "over a cap: pixels (max_pixels, decompression bombs) or bytes (max_input_bytes)",
    "too-small": "a side below the minimum the networks take (tasks/data/images.py MIN_SIDE)",
    "decode-error": "any other decoding failure",
    "unsupported-mode": "a Pillow mode with no conversion to RGB",
    "unreadable": "the file could not be read (an I/O error; tried again by the next run)",
    "corrupt": "damaged in its archive (a bad CRC, a broken compressed stream)",
    "changed": "its bytes no longer match data/raw/datasets/NAME/manifest.json",
    "crashed": "the decoding process died on it (a decoder crash, out of memory)",
    "download": "refused by the download stage (unsafe archive member, link out of the tree, ...)",
    "duplicate": "same bytes (preprocess) or same name (an archive member listed twice) as another input",
    "hidden": "a dotfile, __MACOSX entry or macOS resource fork",
    "no-domain": "a translation dataset's file under neither an A/ nor a B/ folder",
    "half-missing": "one half of a pair: the other half is missing or was rejected",
    "size-mismatch": "the two halves of a pair differ in size",
    "not-an-image-name": "the file name has no image suffix",
    "unsafe-name": "a name that would leave the output folder ('..', absolute, NUL) or claim .stylepipe/",
    "link": "a symbolic or hard link (not followed)",
    "special-file": "a device, FIFO, socket or folder where a file was expected",
    "encrypted": "an encrypted archive member",
    "no-painting": "an AdaIN job has no usable painting for this input (not in its manifest, or the painting named is missing or does not decode)",
    "model-error": "the forward pass failed on this input alone",
    "encode-error": "the result could not be encoded in the output format",
    "write-error": "the output could not be written (tried again by the next run)",
    "worker-error": "an unexpected error in a decode/encode worker (tried again by the next run)",
    "disk-full": "no space left where the outputs go (stops the job)",
}
TRANSIENT = frozenset({"unreadable", "write-error", "worker-error"})
FATAL = frozenset({"disk-full"})
# reasons written before this vocabulary existed: their first words -> the code
_LEGACY = {"worker error": "worker-error", "cannot write the output": "write-error", "unsafe name": "unsafe-name",
           "encrypted member": "encrypted", "symlink": "link", "link (links": "link", "special file": "special-file",
           "not a regular file": "special-file", "macOS resource fork": "hidden", "not an image file name":
           "not-an-image-name", "duplicate member name": "duplicate", "the archive is damaged": "corrupt",
           "unreadable folder": "unreadable"}


def reason(code: str, detail: str = "") -> str:
    if code not in REASONS:
        raise ValueError(f"unknown reason code {code!r}")
    return f"{code}: {detail}" if detail else code


def code_of(text: str) -> str:
    """The code of a recorded reason ('' for none)."""
    code = text.split(":", 1)[0].strip()
    if code in REASONS or not text:
        return code
    return next((c for prefix, c in _LEGACY.items() if text.startswith(prefix)), code)


def is_transient(text: str) -> bool:
    return code_of(text) in TRANSIENT


def is_fatal(text: str) -> bool:
    return code_of(text) in FATAL

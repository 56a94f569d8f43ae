"""Change values in params.yaml as text: every byte outside the changed values stays as it was
(comments, blank lines, quoting, flow-style lists and their line lengths).

A value is found through ruamel's round-trip positions (line and column of the value), and only its
token is replaced. A key its mapping lacks but shows as a comment (`# network: fast`, params.yaml's
way of showing a default that a preset or recipe fills in) is written on that line, the comment
after it kept. Where neither is possible (a new key, a block-style list or mapping as the old
value), the edit falls back to a ruamel round trip of the whole file. Either way the result is
parsed again and must equal the intended document.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

import yaml

_PLAIN_END = (",", "}", "]")


def _dump_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    if text.endswith("\n...\n"):  # a lone scalar's document end marker
        text = text[:-5]
    return text.strip()


def _token_end(line: str, col: int) -> int | None:
    """End (exclusive) of the scalar or flow collection starting at line[col], or None."""
    c = line[col] if col < len(line) else ""
    if c in "'\"":
        i = col + 1
        while i < len(line):
            if line[i] == c:
                if c == "'" and line[i + 1:i + 2] == "'":  # '' inside a single-quoted scalar
                    i += 2
                    continue
                return i + 1
            if c == '"' and line[i] == "\\":
                i += 1
            i += 1
        return None
    if c in "[{":
        depth, quote, i = 0, "", col
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None
    if c in ("|", ">", "&", "*", "!", ""):
        return None
    i = col
    while i < len(line):
        if line[i] in _PLAIN_END or line[i] == "#" and line[i - 1] in " \t" or line[i:i + 2] == ": ":
            break
        i += 1
    return len(line[:i].rstrip())


def _locate(doc, keys: list[str]):
    """(line, col) of the value at keys in a ruamel round-trip document, or None."""
    node = doc
    for k in keys[:-1]:
        if not hasattr(node, "get") or k not in node:
            return None
        node = node[k]
    if not hasattr(node, "lc") or keys[-1] not in node:
        return None
    old = node[keys[-1]]
    if hasattr(old, "lc") and not getattr(getattr(old, "fa", None), "_flow_style", False):
        return None  # a block-style list or mapping: no single token to replace
    line, col = node.lc.value(keys[-1])
    return line, col


def _placeholder(doc, lines: list[str], keys: list[str]) -> tuple[int, str, int] | None:
    """(line number, the line uncommented, its value's column) of the one `# key: value` line at the
    indent of the mapping that lacks keys[-1], within that mapping's block. None where there is not
    exactly one; where the comment is prose (`# lr: unset, Adam's rate ...`, or a plain value with
    spaces); or where the line uncommented would not parse as that key of that mapping."""
    parent, start = doc, 0
    for k in keys[:-1]:
        if not isinstance(parent, dict) or k not in parent:
            return None
        start = parent.lc.key(k)[0] + 1
        parent = parent[k]
    if not isinstance(parent, dict) or not parent or keys[-1] in parent:
        return None
    indent = parent.lc.key(next(iter(parent)))[1]
    commented = re.compile(rf" {{{indent}}}# ?{re.escape(keys[-1])}: ")
    found = []
    for i in range(start, len(lines)):
        body = lines[i].rstrip("\r\n")
        if body.strip() and not body.lstrip().startswith("#") and len(body) - len(body.lstrip()) < indent:
            break  # the mapping's block has ended
        if commented.match(body):
            found.append(i)
    if len(found) != 1:
        return None
    line_no = found[0]
    uncommented = " " * indent + lines[line_no].lstrip()[1:].lstrip()
    body = uncommented.rstrip("\r\n")
    col = indent + len(keys[-1]) + 2
    end = None if body[col:col + 1].strip() == "" else _token_end(body, col)
    if end is None:
        return None
    shown, after = body[col:end], body[end:].strip()
    if (after and not after.startswith("#")) or (shown[0] not in "'\"[{" and " " in shown):
        return None
    try:  # the line uncommented, as it stands, must add just that key to just that mapping
        before = yaml.safe_load("".join(lines))
        trial = yaml.safe_load("".join(lines[:line_no] + [uncommented] + lines[line_no + 1:]))
    except yaml.YAMLError:
        return None
    from stylepipe.config import set_in

    set_in(before, keys, yaml.safe_load(shown))
    return (line_no, uncommented, col) if trial == before else None


def edit_text(text: str, changes: list[tuple[list[str], Any]], expected: dict) -> str:
    """`text` with each (keys, value) of `changes` applied; `expected` is the parsed result it must
    give (checked)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    lines = text.splitlines(keepends=True)
    by_round_trip = []  # changes with no token to replace: applied by a round trip of the edited text
    for keys, value in changes:
        doc = rt.load("".join(lines))
        where = _locate(doc, keys)
        if where is not None:
            line_no, col = where
            line = lines[line_no]
        elif (shown := _placeholder(doc, lines, keys)) is not None:
            line_no, line, col = shown
        else:
            by_round_trip.append((keys, value))
            continue
        end = _token_end(line.rstrip("\r\n"), col)
        if end is None:
            by_round_trip.append((keys, value))
            continue
        new = _dump_value(value)
        if isinstance(value, str) and line[col] == '"':  # keep the value's quoting style
            new = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, str) and line[col] == "'":
            new = "'" + value.replace("'", "''") + "'"
        lines[line_no] = line[:col] + new + line[end:]
    result = "".join(lines)
    with contextlib.suppress(ValueError, yaml.YAMLError):
        if by_round_trip:
            result = _round_trip(result, by_round_trip, expected)
        if yaml.safe_load(result) == expected:
            return result
    return _round_trip(text, changes, expected)


def _null_representer():
    from ruamel.yaml.representer import RoundTripRepresenter

    class NullRepresenter(RoundTripRepresenter):
        """ruamel writes a null as nothing after the colon: params.yaml spells out `null`."""

    NullRepresenter.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return NullRepresenter


def _round_trip(text: str, changes: list[tuple[list[str], Any]], expected: dict) -> str:
    from ruamel.yaml import YAML

    from stylepipe.config import set_in

    rt = YAML()
    rt.Representer = _null_representer()
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(text)
    for keys, value in changes:
        set_in(doc, keys, value)
    out = io.StringIO()
    rt.dump(doc, out)
    result = out.getvalue()
    if yaml.safe_load(result) != expected:
        raise ValueError("params.yaml edit did not give the intended values")
    return result

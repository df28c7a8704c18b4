"""Read and write Triton's ``config.pbtxt`` (protobuf text format) without protobuf classes.

The service reads batching limits, tensor specs and model parameters from the same file Triton
reads, so the two backends cannot drift apart.  Only the subset of the text format that model
configs use is supported: scalars, strings, enums, nested messages and repeated fields.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{}\[\]:,<>])
      | (?P<word>[A-Za-z0-9_.+\-]+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"pbtxt: cannot parse near {text[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "comment" or kind is None:
            continue
        out.append((kind, m.group(kind)))
    return out


def _scalar(kind: str, raw: str) -> Any:
    if kind == "string":
        return bytes(raw[1:-1], "utf-8").decode("unicode_escape")
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw  # enum identifier


def loads(text: str) -> dict[str, list[Any]]:
    """Parse into ``{field: [values...]}``; every field is a list because any may repeat."""
    toks = _tokens(text)
    pos = 0

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal pos
        msg: dict[str, list[Any]] = {}
        while pos < len(toks):
            kind, val = toks[pos]
            if kind == "punct" and val == end:
                pos += 1
                return msg
            if kind != "word":
                raise ValueError(f"pbtxt: expected a field name, got {val!r}")
            name = val
            pos += 1
            if toks[pos] == ("punct", ":"):
                pos += 1
            msg.setdefault(name, []).extend(value())
            if pos < len(toks) and toks[pos] == ("punct", ","):
                pos += 1
        if end is not None:
            raise ValueError("pbtxt: unterminated message")
        return msg

    def value() -> list[Any]:
        nonlocal pos
        kind, val = toks[pos]
        if kind == "punct" and val in "{<":
            pos += 1
            return [message("}" if val == "{" else ">")]
        if kind == "punct" and val == "[":
            pos += 1
            items: list[Any] = []
            while toks[pos] != ("punct", "]"):
                if toks[pos] == ("punct", ","):
                    pos += 1
                    continue
                items.extend(value())
            pos += 1
            return items
        pos += 1
        return [_scalar(kind, val)]

    return message(None)


def first(msg: dict[str, list[Any]], name: str, default: Any = None) -> Any:
    vals = msg.get(name)
    return vals[0] if vals else default


def _fmt_scalar(v: Any, enum: bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if enum:
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Enum(str):
    """A bare identifier (``TYPE_FP32``) rather than a quoted string."""


def dumps(msg: dict[str, Any], indent: int = 0) -> str:
    """Write a dict as text format; list values become repeated fields, dicts nested messages."""
    pad = "  " * indent
    lines: list[str] = []
    for key, val in msg.items():
        vals = val if isinstance(val, list) else [val]
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and isinstance(val, list):
            lines.append(f"{pad}{key}: [ {', '.join(repr(v) for v in vals)} ]")
            continue
        for v in vals:
            if isinstance(v, dict):
                lines.append(f"{pad}{key} {{")
                lines.append(dumps(v, indent + 1))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_fmt_scalar(v, isinstance(v, Enum))}")
    return "\n".join(line for line in lines if line)

"""docs/PERFORMANCE.md is written by several benchmarks: each owns a marked section, and a
benchmark that regenerates the whole file keeps the sections it does not own."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.S)


def wrap(name: str, text: str) -> str:
    return f"<!-- section:{name} -->\n{text.rstrip()}\n<!-- /section:{name} -->\n"


def sections(text: str) -> dict[str, str]:
    return {m["name"]: m.group(0) for m in _SECTION.finditer(text)}


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` into section ``name`` of ``path`` (appended if the file lacks it)."""
    old = path.read_text() if path.is_file() else ""
    block = wrap(name, text)
    if name in sections(old):
        new = _SECTION.sub(lambda m: block if m["name"] == name else m.group(0), old)
    else:
        new = old.rstrip() + "\n\n" + block if old else block
    path.write_text(new)


def keep_sections(new_text: str, path: Path) -> str:
    """``new_text`` plus the sections ``path`` has that ``new_text`` does not."""
    old = sections(path.read_text()) if path.is_file() else {}
    mine = sections(new_text)
    kept = [block for name, block in old.items() if name not in mine]
    return new_text.rstrip() + ("\n\n" + "\n".join(kept) if kept else "") + "\n"

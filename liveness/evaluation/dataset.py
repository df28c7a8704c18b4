"""The labels file: ``file,label[,attack][,subject]`` with a header row, extra columns ignored.

Written to take whatever a user's own tooling produced: a UTF-8 BOM (Excel), Windows line
endings, any column order and case, ``attack_type`` for ``attack``, paths relative to the
CSV's folder or absolute, with spaces, or with Windows separators.  A row whose file does
not exist is still an item (it becomes an error row in the report): dropping it would make
the figures look complete when they are not.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

BONA_FIDE_LABELS = frozenset({"real", "bona fide", "bonafide", "live", "genuine"})
ATTACK_LABELS = frozenset({"spoof", "attack", "fake"})
ATTACK_ALIASES = ("attack", "attack_type", "attack type", "pai", "pai_species")
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".gif", ".3gp", ".3g2", ".mkv", ".m4v"})
UNKNOWN_ATTACK = "unknown"


@dataclass(frozen=True)
class Item:
    line: int  # in the CSV, 1-based, header is line 1
    file: str  # as written in the CSV
    path: Path  # resolved
    bona_fide: bool
    attack: str  # "" for bona fide
    subject: str

    @property
    def media(self) -> str:
        return "video" if self.path.suffix.lower() in VIDEO_EXTENSIONS else "image"


@dataclass(frozen=True)
class Skipped:
    line: int
    file: str
    label: str


@dataclass(frozen=True)
class LabelledSet:
    source: Path
    items: tuple[Item, ...]
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)

    def skipped_by_label(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.label] = counts.get(s.label, 0) + 1
        return counts


def normalize_label(raw: str) -> bool | None:
    """True for bona fide, False for an attack, None for anything else (``mixed``, blank)."""
    label = re.sub(r"[\s_-]+", " ", raw.strip().lower())
    if label in BONA_FIDE_LABELS:
        return True
    if label in ATTACK_LABELS:
        return False
    return None


def resolve(file: str, base: Path) -> Path:
    """``file`` as the user meant it.  Surrounding whitespace and Windows separators are
    forgiven only when the literal name does not exist, so a real file called ' a.jpg' or
    'a\\b.jpg' (legal on Linux) still wins."""
    candidates = [file, file.strip()]
    if os.sep == "/" and "\\" in file:
        candidates.append(file.strip().replace("\\", "/"))
    paths = [(base / Path(c).expanduser()) for c in candidates if c.strip()]
    for p in paths:
        if p.exists():
            return p
    return paths[1] if len(paths) > 1 else paths[0]


def read_labels(path: str | os.PathLike[str]) -> LabelledSet:
    """Raise ``ValueError`` with a message a user can act on for anything wrong with the file
    itself; problems of single rows become skipped rows or error items, never an exception."""
    source = Path(path).expanduser()
    try:
        # utf-8-sig strips a BOM; newline="" lets csv handle \r\n and quoted newlines.
        with open(source, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ValueError(f"labels file not found: {source}") from None
    except IsADirectoryError:
        raise ValueError(f"labels file is a directory: {source}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV") from None
    except OSError as e:
        raise ValueError(f"cannot read labels file {source}: {e.strerror or e}") from None
    if not rows:
        raise ValueError(f"{source}: empty file (expected a header row: file,label[,attack][,subject])")
    header = [h.strip().lower() for h in rows[0]]
    columns = {name: i for i, name in reversed(list(enumerate(header)))}  # first occurrence wins
    for needed in ("file", "label"):
        if needed not in columns:
            raise ValueError(f"{source}: no '{needed}' column in the header {rows[0]!r} "
                             "(expected file,label[,attack][,subject])")
    attack_col = next((columns[a] for a in ATTACK_ALIASES if a in columns), None)
    subject_col = columns.get("subject")
    base = source.resolve().parent

    def cell(row: list[str], i: int | None) -> str:
        return row[i] if i is not None and i < len(row) else ""

    items: list[Item] = []
    skipped: list[Skipped] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank lines, trailing separators
        file = cell(row, columns["file"])
        label = cell(row, columns["label"])
        bona_fide = normalize_label(label)
        if bona_fide is None or not file.strip():
            skipped.append(Skipped(line, file, label.strip() or "(blank)"))
            continue
        attack = ""
        if not bona_fide:
            attack = cell(row, attack_col).strip().lower()
            if attack in ("", "none", "n/a", "na", "-"):
                attack = UNKNOWN_ATTACK
        items.append(Item(line, file, resolve(file, base), bona_fide, attack, cell(row, subject_col).strip()))
    if not items:
        raise ValueError(f"{source}: no row with a bona fide or attack label "
                         f"({len(skipped)} rows skipped: labels {sorted({s.label for s in skipped})})")
    return LabelledSet(source, tuple(items), tuple(skipped))

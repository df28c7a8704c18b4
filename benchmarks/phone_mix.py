"""The phone-photo mix as files: written once per benchmark run, read by every measurement of it.

    python benchmarks/phone_mix.py OUT_DIR      # writes OUT_DIR/*.jpg and OUT_DIR/labels.csv

The mix itself is ``tools/realworld_media.py``'s ``dev_phone_mix``: the 10 dev sources (Silent-Face
T1 live, F1 print and F2 replay; three real verification faces; four frames of the real dev video)
reframed so the face is 45% of the width, upscaled bicubic to 2, 5, 8 and 12 MP 3:4 portrait,
re-encoded as JPEG at quality 90, the 8 and 12 MP ones stored landscape with EXIF Orientation 6.
Writing it to disk once means the reference peer (a subprocess), the in-process ceiling and every
Locust process judge exactly the same bytes.

``labels.csv`` has ``liveness evaluate``'s columns (file, label, attack, subject, condition) plus
megapixels, the displayed width x height and the file size.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA_ROOT = REPO.parent / "shared" / "media" / "dev"
MODELS_ROOT = REPO.parent / "shared" / "models"
LABELS = "labels.csv"
COLUMNS = ("file", "label", "attack", "subject", "condition", "megapixels", "width", "height", "bytes")


@dataclass(frozen=True)
class MixImage:
    name: str  # file name, e.g. T1_2MP.jpg
    live: bool  # expected verdict (label == "real")
    megapixels: int
    width: int  # as displayed (EXIF orientation applied)
    height: int
    raw: bytes


def write_mix(out: Path, media: Path = MEDIA_ROOT, models: Path = MODELS_ROOT) -> Path:
    """The mix as files in ``out`` plus ``labels.csv``; returns the CSV's path."""
    import sys

    sys.path.insert(0, str(REPO))
    from tools.realworld_media import DEV_ATTACKS, PHONE_SIZES, dev_phone_mix

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in dev_phone_mix(media, models):
        mp = int(s.name.rsplit("@", 1)[1].removesuffix("MP"))
        width, height = PHONE_SIZES[mp]
        name = s.name.replace("@", "_") + ".jpg"
        (out / name).write_bytes(s.data)
        attack = DEV_ATTACKS.get(s.source, "") if s.label == "spoof" else ""
        rows.append({"file": name, "label": s.label, "attack": attack, "subject": s.source, "condition": s.condition,
                     "megapixels": mp, "width": width, "height": height, "bytes": len(s.data)})
    path = out / LABELS
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def read_mix(folder: Path) -> list[MixImage]:
    """The images ``write_mix`` wrote, in its order (source by source, size by size)."""
    with open(folder / LABELS, newline="") as fh:
        return [MixImage(r["file"], r["label"] == "real", int(r["megapixels"]), int(r["width"]), int(r["height"]),
                         (folder / r["file"]).read_bytes()) for r in csv.DictReader(fh)]


def describe(images: list[MixImage]) -> dict:
    """Sizes and bytes of the mix, per megapixel class (for the report)."""
    by_mp: dict[int, list[MixImage]] = {}
    for im in images:
        by_mp.setdefault(im.megapixels, []).append(im)
    return {
        "images": len(images),
        "live": sum(im.live for im in images),
        "spoof": sum(not im.live for im in images),
        "total_bytes": sum(len(im.raw) for im in images),
        "sizes": [{"megapixels": mp, "width": ims[0].width, "height": ims[0].height, "images": len(ims),
                   "exif_rotated": mp >= 8, "mean_bytes": sum(len(i.raw) for i in ims) / len(ims),
                   "min_bytes": min(len(i.raw) for i in ims), "max_bytes": max(len(i.raw) for i in ims)}
                  for mp, ims in sorted(by_mp.items())],
    }


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write the phone-photo mix of the dev media and its labels.csv")
    ap.add_argument("out", type=Path)
    print(write_mix(ap.parse_args().out))

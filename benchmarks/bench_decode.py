"""Decode benchmark for liveness.imaging.decode (a script, not a test).

    python benchmarks/bench_decode.py [--repeat N] [images...]

Prints the median milliseconds per decode for each dev image, for the chosen path
(``decode_image``: header/structure validation + cv2.imdecode + our EXIF rotation) and the
alternatives it was compared with.  Every variant returns an oriented HxWx3 BGR uint8 array.
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import os
import statistics
import sys
import time

import cv2
import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from liveness.imaging.decode import (  # noqa: E402
    ImageLimits,
    _PARSERS,
    apply_orientation,
    decode_image,
    sniff_format,
    strip_data_uri_and_b64decode,
)

DEFAULT_GLOB = "/work/shared/media/dev/images/*.jpg"
LIMITS = ImageLimits()


def chosen(data: bytes) -> np.ndarray:
    return decode_image(data, LIMITS).bgr


def structure_only(data: bytes):
    return _PARSERS[sniff_format(data)](data, LIMITS)


def cv2_imread_color(data: bytes) -> np.ndarray:
    # OpenCV applies EXIF orientation itself; no validation at all.
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def cv2_ignore_orientation(data: bytes) -> np.ndarray:
    # Pixel decode only (no rotation); the floor for any cv2-based path.
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)


def pil_decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    rgb = np.asarray(im.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def pil_decode_then_rotate_in_numpy(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    orientation = im.getexif().get(0x0112, 1)
    im.load()
    bgr = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    return apply_orientation(bgr, orientation)


def b64_plus_chosen(text: str) -> np.ndarray:
    return decode_image(strip_data_uri_and_b64decode(text, LIMITS), LIMITS).bgr


def median_ms(fn, arg, repeat: int) -> float:
    for _ in range(5):  # warm-up
        fn(arg)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: leave)")
    args = ap.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    paths = args.images or sorted(glob.glob(DEFAULT_GLOB))
    if not paths:
        sys.exit(f"no images (looked for {DEFAULT_GLOB})")

    variants = [
        ("chosen: decode_image (validate + cv2 + rotate)", chosen, False),
        ("  part: structural parse only", structure_only, False),
        ("alt: cv2.imdecode IMREAD_COLOR (no validation)", cv2_imread_color, False),
        ("alt: cv2.imdecode IGNORE_ORIENTATION (no rotate)", cv2_ignore_orientation, False),
        ("alt: PIL open+exif_transpose+RGB->BGR", pil_decode, False),
        ("alt: PIL decode + cv2.rotate", pil_decode_then_rotate_in_numpy, False),
        ("chosen incl. base64 (data URI)", b64_plus_chosen, True),
    ]
    print(f"python {sys.version.split()[0]}, opencv {cv2.__version__}, pillow {Image.__version__}, "
          f"cv2 threads {cv2.getNumThreads()}, repeat {args.repeat}")
    ref_check = {}
    for path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        text = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        d = decode_image(data, LIMITS)
        print(f"\n{os.path.basename(path)}: {len(data)} bytes, {d.format}, {d.width}x{d.height}, "
              f"orientation {d.orientation}")
        ref = chosen(data)
        for name, fn, wants_text in variants:
            arg = text if wants_text else data
            ms = median_ms(fn, arg, args.repeat)
            out = fn(arg)
            note = ""
            if isinstance(out, np.ndarray):
                if out.shape != ref.shape:
                    note = f"  (shape {out.shape})"
                else:
                    diff = int(np.abs(out.astype(np.int16) - ref).max())
                    note = "  (identical)" if diff == 0 else f"  (max |diff| {diff})"
            print(f"  {name:<52s} {ms:8.3f} ms{note}")
            ref_check.setdefault(name, []).append(ms)
    print("\nmedian over images:")
    for name, values in ref_check.items():
        print(f"  {name:<52s} {statistics.median(values):8.3f} ms")


if __name__ == "__main__":
    main()

"""Synthetic clips for the video tests and benchmark, made in memory with PyAV and PIL."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from PIL import Image, ImageSequence


def encode(frames: Iterable[np.ndarray], fps: float, *, codec: str = "mpeg4", fmt: str = "mp4",
           options: dict | None = None) -> bytes:
    """BGR frames -> an encoded clip (bytes)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = None
        for bgr in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = bgr.shape[:2]
                stream.pix_fmt = "yuv420p"
                if options:
                    stream.options = options
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def read_frames(path: Path, every: int = 1, limit: int | None = None) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % every == 0:
                out.append(frame.to_ndarray(format="bgr24"))
                if limit is not None and len(out) >= limit:
                    break
    return out


def gif_segment(path: Path, first: int, last: int) -> bytes:
    """Frames first..last (inclusive) of an animated GIF, as a new GIF with their delays."""
    src = Image.open(path)
    frames = [(f.convert("RGB").copy(), f.info.get("duration", 33)) for f in ImageSequence.Iterator(src)][first : last + 1]
    buf = io.BytesIO()
    frames[0][0].save(buf, format="GIF", save_all=True, append_images=[f for f, _ in frames[1:]],
                      duration=[d for _, d in frames], loop=0)
    return buf.getvalue()

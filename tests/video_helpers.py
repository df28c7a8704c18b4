"""Synthetic clips for the video tests and benchmark, made in memory with PyAV and PIL."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np
from PIL import Image, ImageSequence


def encode(frames: Iterable[np.ndarray], fps: float, *, codec: str = "mpeg4", fmt: str = "mp4",
           options: dict | None = None, rotation: int | None = None) -> bytes:
    """BGR frames -> an encoded clip (bytes).

    ``fmt`` is the FFmpeg muxer (``mp4``, ``3gp``, ``3g2``, ``webm``...).  ``rotation`` writes a
    display matrix (the track's ``tkhd`` matrix in ISO-BMFF) in PyAV's convention: degrees
    counter-clockwise, as ``VideoFrame.rotation`` reads it back; a phone held upright with a
    landscape sensor writes -90 (players turn the stored frames 90 degrees clockwise).  Pair it
    with ``stored_frames`` to make the rotated twin of an upright clip."""
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
                if rotation is not None:
                    stream.set_display_rotation(rotation)
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


def stored_frames(upright: Iterable[np.ndarray], rotation: int) -> list[np.ndarray]:
    """Upright frames -> the frames a camera stores for a clip with display ``rotation``
    (degrees counter-clockwise, as for ``encode``): -90 gives the landscape frames of a phone
    held upright, which a player turns 90 degrees clockwise to show them upright again."""
    assert rotation % 90 == 0, rotation
    # np.rot90 turns counter-clockwise for k > 0: store the upright frame turned *against* the
    # display matrix, so that applying the matrix shows it upright again.
    return [np.ascontiguousarray(np.rot90(f, k=-(rotation // 90))) for f in upright]


def fit(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the aspect ratio of ``width`` x ``height``, then resize (e.g. to one of the
    few frame sizes H.263 allows: 128x96, 176x144, 352x288...)."""
    h, w = bgr.shape[:2]
    if w * height > h * width:  # too wide
        cw, ch = round(h * width / height), h
    else:
        cw, ch = w, round(w * height / width)
    x, y = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(np.ascontiguousarray(bgr[y : y + ch, x : x + cw]), (width, height), interpolation=cv2.INTER_AREA)

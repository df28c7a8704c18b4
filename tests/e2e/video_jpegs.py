"""Frames of a video file as the JPEGs a challenge client sends (imported by bare name, as ws_client)."""

from __future__ import annotations

from pathlib import Path


def jpeg_frames(path: Path, first: int, last: int, step: int, quality: int = 92) -> list[bytes]:
    """Frames ``first``, ``first + step``, ... up to ``last`` (inclusive) of ``path``, each a JPEG."""
    import av
    import cv2

    out = []
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i > last:
                break
            if i >= first and (i - first) % step == 0:
                ok, buf = cv2.imencode(".jpg", fr.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, quality])
                assert ok
                out.append(buf.tobytes())
    return out

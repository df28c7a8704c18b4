"""Decode memory: a budget from the header (not pixels alone), a process pool that bounds
concurrent large decodes, headers that lie about their size refused as corrupt, and RSS that
comes back down after a burst.

Media: 16-bit RGBA PNGs built here with zlib (all-zero rows compress ~1000:1, the issue's
280 KB 6000x6000 case), and the dev JPEG T1 with its frame header patched to claim 20000x2000.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from liveness import errors
from liveness.errors import LivenessError
from liveness.imaging import ImageLimits, decode_image
from liveness.imaging.decode import decode_cost
from liveness.imaging.memory import DecodeMemory
from tests.fakes import FakeClock

T1 = Path("/work/shared/media/dev/images/silentface_image_T1.jpg")
REPO = Path(__file__).resolve().parents[1]


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def rgba16_png(width: int, height: int, value: int = 0, alpha: int = 0xFFFF) -> bytes:
    """A valid 16-bit RGBA PNG, every pixel (value, value, value, alpha)."""
    px = struct.pack(">HHHH", value, value, value, alpha)
    row = b"\x00" + px * width
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, width, height)
    return data[:8] + chunk(b"IHDR", bytes(ihdr)) + data[33:]


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    i = 2
    while True:
        marker, seglen = b[i + 1], (b[i + 2] << 8) | b[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, i + 5, height, width)
            return bytes(b)
        i += 2 + seglen


def refused(kind, fn, *args, **kwargs) -> LivenessError:
    with pytest.raises(LivenessError) as ei:
        fn(*args, **kwargs)
    assert ei.value.kind is kind, ei.value
    return ei.value


# -- the budget, from the header ---------------------------------------------------------------


def test_a_16_bit_rgba_png_costs_its_bytes_per_sample_not_its_pixels(monkeypatch):
    png = rgba16_png(6000, 6000)
    assert len(png) < 500_000  # the case: a few hundred KB, 36 Mpx, under the 40 MP limit
    # 6000 x 6000 x 4 channels x 2 bytes, twice (OpenCV's buffer and its result) = 576 MB; a
    # 300 MiB budget refuses it before OpenCV is called.
    monkeypatch.setattr("liveness.imaging.decode.cv2.imdecode", lambda *a: pytest.fail("decoded"))
    err = refused(errors.IMAGE_TOO_MANY_PIXELS, decode_image, png, ImageLimits(max_decode_bytes=300 * 2**20))
    assert err.status == 413
    assert err.details["decode_bytes"] == 6000 * 6000 * 16
    assert err.details["max_decode_bytes"] == 300 * 2**20
    assert "MiB" in err.message


def test_an_8_bit_jpeg_of_the_same_size_costs_less():
    from liveness.imaging.decode import _parse_jpeg

    header = _parse_jpeg(T1.read_bytes(), ImageLimits())
    assert decode_cost(header) == header.width * header.height * 6


def test_16_bit_and_alpha_images_decode_to_8_bit_bgr_composited_over_black():
    # half-transparent mid grey: 0x8000 >> 8 = 128, times alpha 0x8000 >> 8 = 128 / 255 -> 64
    img = decode_image(rgba16_png(700, 300, value=0x8000, alpha=0x8000))
    assert img.bgr.shape == (300, 700, 3) and img.bgr.dtype == np.uint8
    assert set(np.unique(img.bgr)) == {64}
    opaque = decode_image(rgba16_png(700, 300, value=0xFFFF))
    assert set(np.unique(opaque.bgr)) == {255}


# -- headers that lie --------------------------------------------------------------------------


def test_a_jpeg_header_claiming_20000x2000_is_corrupt_not_filler(monkeypatch):
    lying = with_jpeg_size(T1.read_bytes(), 20000, 2000)
    monkeypatch.setattr("liveness.imaging.decode.cv2.imdecode", lambda *a: pytest.fail("decoded"))
    err = refused(errors.CORRUPT_IMAGE, decode_image, lying)
    assert "too little image data" in err.message
    assert (err.details["width"], err.details["height"]) == (20000, 2000)


def test_a_png_header_bigger_than_its_data_can_inflate_to_is_corrupt(monkeypatch):
    lying = with_png_size(rgba16_png(64, 64, value=1234), 6000, 6000)
    monkeypatch.setattr("liveness.imaging.decode.cv2.imdecode", lambda *a: pytest.fail("decoded"))
    err = refused(errors.CORRUPT_IMAGE, decode_image, lying)
    assert "too little image data" in err.message


def test_honest_images_pass_the_data_floor():
    for path in sorted(T1.parent.glob("*.jpg")):
        assert decode_image(path.read_bytes()).width > 0
    assert decode_image(rgba16_png(2000, 2000)).width == 2000  # all zeros: deflate's best ratio


# -- the pool ----------------------------------------------------------------------------------


def test_the_pool_refuses_with_busy_when_memory_stays_taken():
    clock = FakeClock()
    pool = DecodeMemory(100, wait_s=0.0, clock=clock)
    with pool.hold(80):
        err = refused(errors.BUSY, lambda: pool.hold(30).__enter__())
        assert err.status == 503 and err.retry_after == 1
        with pool.hold(20):  # what fits is not refused
            assert pool.in_use == 100
    assert pool.in_use == 0


def test_concurrent_large_decodes_never_exceed_the_pool():
    png = rgba16_png(1500, 1000, value=0x4000)
    cost = 1500 * 1000 * 16
    pool = DecodeMemory(2 * cost + cost // 2, wait_s=600)  # two at a time, never three
    peak, lock = [0], threading.Lock()
    real_hold = pool.hold

    class Watching:
        def __init__(self, n):
            self.cm = real_hold(n)

        def __enter__(self):
            self.cm.__enter__()
            with lock:
                peak[0] = max(peak[0], pool.in_use)

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    pool.hold = Watching  # type: ignore[method-assign]
    results = []
    threads = [threading.Thread(target=lambda: results.append(decode_image(png, memory=pool).width)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1500] * 8
    assert 0 < peak[0] <= 2 * cost
    assert pool.in_use == 0


def test_rss_comes_back_down_after_a_burst_of_large_decodes(tmp_path):
    """In a fresh interpreter: 8 concurrent 3000x3000 16-bit RGBA decodes through a 256 MiB
    pool.  Peak RSS stays within the pool (plus the libraries' slack) and RSS afterwards is
    back within 64 MiB of where it was after one warm-up decode."""
    png = tmp_path / "rgba16.png"
    png.write_bytes(rgba16_png(3000, 3000, value=0x3000))
    script = textwrap.dedent(f"""
        import threading
        from liveness.imaging import decode_image
        from liveness.imaging.memory import configure_decode_memory
        def rss():
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096
        def high_water():  # this process's own peak (ru_maxrss would include the parent's at fork)
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
        pool = configure_decode_memory(256 * 2**20, wait_s=600)
        data = open({str(png)!r}, "rb").read()
        decode_image(data)
        base = rss()
        ts = [threading.Thread(target=decode_image, args=(data,)) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        peak = high_water()
        print(base, rss(), peak)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    base, after, peak = map(int, out.stdout.split())
    mib = 2**20
    assert after - base < 64 * mib, (base / mib, after / mib)
    assert peak - base < 256 * mib + 128 * mib, (base / mib, peak / mib)

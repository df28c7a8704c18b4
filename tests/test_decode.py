"""Tests for liveness.imaging.decode.  Hostile inputs are generated here; the real dev images
are read by path from /work/shared/media/dev/images (skipped when absent)."""

from __future__ import annotations

import base64
import io
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from liveness import errors
from liveness.errors import LivenessError
from liveness.imaging import (
    DecodedImage,
    ImageLimits,
    decode_image,
    decode_image_file,
    sniff_format,
    strip_data_uri_and_b64decode,
)
from liveness.imaging import decode as decode_mod

DEV_DIR = Path("/work/shared/media/dev/images")
DEV_T1 = DEV_DIR / "silentface_image_T1.jpg"
needs_dev = pytest.mark.skipif(not DEV_T1.exists(), reason="dev images not available")

LIMITS = ImageLimits()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def photo_rgb(w: int = 96, h: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth gradient plus mild noise: compresses like a photo, asymmetric so rotations and
    flips are distinguishable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.int32)
    g = (y * 255 // max(h - 1, 1)).astype(np.int32)
    b = ((x + 2 * y) % 256).astype(np.int32)
    img = np.stack([r, g, b], axis=-1) + rng.integers(-12, 13, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img, fmt: str, **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_with_orientation(orientation: int) -> Image.Exif:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def expect(kind, fn, *args, **kwargs) -> LivenessError:
    with pytest.raises(LivenessError) as ei:
        fn(*args, **kwargs)
    assert ei.value.kind is kind, f"expected {kind.code}, got {ei.value.code}: {ei.value.message}"
    return ei.value


@pytest.fixture
def no_pixel_decode(monkeypatch):
    """Fail the test if anything reaches a pixel decoder."""

    def boom(*a, **k):  # pragma: no cover - only runs on failure
        raise AssertionError("pixels were decoded before the limit check")

    # The decode module uses no PIL; OpenCV is its only pixel decoder.
    monkeypatch.setattr(decode_mod.cv2, "imdecode", boom)


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return encode(photo_rgb(256, 192), "JPEG", quality=90)


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    return encode(photo_rgb(200, 150, seed=3), "PNG")


# ---------------------------------------------------------------------------------------------
# base64
# ---------------------------------------------------------------------------------------------


class TestBase64:
    payload = bytes(range(256)) * 3 + b"\xfb\xff\xfe"  # exercises + / and - _ alphabets

    def test_plain(self):
        assert strip_data_uri_and_b64decode(base64.b64encode(self.payload).decode(), LIMITS) == self.payload

    def test_urlsafe(self):
        text = base64.urlsafe_b64encode(self.payload).decode()
        assert "-" in text or "_" in text
        assert strip_data_uri_and_b64decode(text, LIMITS) == self.payload

    @pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
    def test_missing_padding(self, n):
        data = self.payload[:n] + b"xyz"[: n % 3]
        text = base64.b64encode(data).decode().rstrip("=")
        assert strip_data_uri_and_b64decode(text, LIMITS) == data

    def test_whitespace_and_newlines(self):
        text = base64.encodebytes(self.payload).decode()  # newline every 76 chars
        text = " \t" + text.replace("\n", "\r\n ") + "\n"
        assert strip_data_uri_and_b64decode(text, LIMITS) == self.payload

    @pytest.mark.parametrize(
        "prefix",
        [
            "data:image/jpeg;base64,",
            "DATA:IMAGE/PNG;BASE64,",
            "Data:image/webp;Base64,",
            "data:image/jpg;charset=utf-8;base64,",
            "  data:image/png;base64,",
            "data:application/octet-stream;base64,",  # media type ignored; magic bytes decide
        ],
    )
    def test_data_uri(self, prefix):
        assert strip_data_uri_and_b64decode(prefix + base64.b64encode(self.payload).decode(), LIMITS) == self.payload

    def test_data_uri_with_whitespace_and_real_image(self, jpeg_bytes):
        body = base64.encodebytes(jpeg_bytes).decode()
        out = decode_image(strip_data_uri_and_b64decode("data:image/jpeg;base64,\n" + body, LIMITS))
        assert out.format == "jpeg" and (out.width, out.height) == (256, 192)

    @pytest.mark.parametrize("text", ["", "   ", "\n\t", "data:image/png;base64,", "data:image/png;base64,  \n"])
    def test_empty_is_missing_image(self, text):
        expect(errors.MISSING_IMAGE, strip_data_uri_and_b64decode, text, LIMITS)

    def test_none_is_missing_image(self):
        expect(errors.MISSING_IMAGE, strip_data_uri_and_b64decode, None, LIMITS)

    @pytest.mark.parametrize(
        "text",
        [
            "this is not base64!",
            "@@@@",
            "QUJD*REVG",
            "QUJD\x00REVG",
            "QUJDRA=A",  # padding in the middle
            "QUJDR",  # impossible length (4n+1)
            "Zm9v\u00e9YmFy",  # non-ASCII
            "data:image/png,notbase64",  # data URI without ;base64
            "data:image/png;base64",  # no comma
        ],
    )
    def test_garbage_is_invalid_base64(self, text):
        expect(errors.INVALID_BASE64, strip_data_uri_and_b64decode, text, LIMITS)

    def test_too_large_rejected_from_length_before_decoding(self, monkeypatch):
        small = ImageLimits(max_bytes=1000)
        monkeypatch.setattr(decode_mod.binascii, "a2b_base64", None)  # would TypeError if called
        # 1336 chars -> ~1002 bytes estimated.  Not even valid base64: it is never decoded.
        err = expect(errors.IMAGE_TOO_LARGE, strip_data_uri_and_b64decode, "!" * 1336, small)
        assert err.status == 413
        expect(errors.IMAGE_TOO_LARGE, strip_data_uri_and_b64decode, "A" * 10_000_000, small)
        expect(errors.IMAGE_TOO_LARGE, strip_data_uri_and_b64decode, "data:image/png;base64," + "A" * 1400, small)

    def test_size_limit_counts_payload_not_whitespace(self):
        small = ImageLimits(max_bytes=1000)
        data = bytes(990)
        text = base64.encodebytes(data).decode().replace("\n", "\n\n\n")  # lots of whitespace
        assert len(text) * 3 // 4 > 1000
        assert strip_data_uri_and_b64decode(text, small) == data
        expect(errors.IMAGE_TOO_LARGE, strip_data_uri_and_b64decode, base64.b64encode(bytes(1002)).decode(), small)

    def test_huge_input_is_rejected_from_its_length_alone(self, monkeypatch):
        """Not a byte of the payload is scanned, copied or decoded (was: "under 50 ms", which a
        busy machine could miss): any string method on it, or base64 decoding, fails the test."""

        class Untouchable(str):
            def _touched(self, *a, **k):  # pragma: no cover - only runs on failure
                raise AssertionError("the payload was scanned before its length was checked")

            split = strip = lstrip = rstrip = isascii = translate = __contains__ = __iter__ = _touched

        def no_decode(*a, **k):  # pragma: no cover - only runs on failure
            raise AssertionError("the payload was decoded before its length was checked")

        monkeypatch.setattr(decode_mod.binascii, "a2b_base64", no_decode)
        big = Untouchable("A" * (200 * 1024 * 1024))
        expect(errors.IMAGE_TOO_LARGE, strip_data_uri_and_b64decode, big, LIMITS)

    def test_bytes_input_accepted(self):
        assert strip_data_uri_and_b64decode(base64.b64encode(b"abc"), LIMITS) == b"abc"

    def test_wrong_type(self):
        expect(errors.INVALID_REQUEST, strip_data_uri_and_b64decode, 12345, LIMITS)


# ---------------------------------------------------------------------------------------------
# sniffing and byte-level errors
# ---------------------------------------------------------------------------------------------


def _gif() -> bytes:
    return encode(Image.new("P", (40, 40)), "GIF")


def _bmp() -> bytes:
    return encode(photo_rgb(40, 40), "BMP")


def _tiff() -> bytes:
    return encode(photo_rgb(40, 40), "TIFF")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("face.jpg", b"\xff\xd8\xff" + bytes(100))
    return buf.getvalue()


UNSUPPORTED = {
    "gif": _gif,
    "bmp": _bmp,
    "tiff": _tiff,
    "pdf": lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
    "zip": _zip,
    "text": lambda: b"hello, this is definitely not an image\n" * 5,
    "html": lambda: b"<!doctype html><html><body><img src=x></body></html>",
    "random": lambda: np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
    "riff-wav": lambda: b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40),
    "png-sig-typo": lambda: b"\x89PNG\r\n\x1a\x0b" + bytes(40),
    "avif": lambda: b"\x00\x00\x00\x1cftypavif" + bytes(40),
}


class TestSniffAndBytes:
    def test_sniff_supported(self, jpeg_bytes, png_bytes):
        assert sniff_format(jpeg_bytes) == "jpeg"
        assert sniff_format(png_bytes) == "png"
        assert sniff_format(encode(photo_rgb(40, 40), "WEBP")) == "webp"
        assert sniff_format(jpeg_bytes[:3]) == "jpeg"  # magic only, no validation

    @pytest.mark.parametrize("name", sorted(UNSUPPORTED))
    def test_sniff_unsupported(self, name):
        assert sniff_format(UNSUPPORTED[name]()) is None

    def test_sniff_short(self):
        assert sniff_format(b"") is None
        assert sniff_format(b"\xff") is None

    @pytest.mark.parametrize("name", sorted(UNSUPPORTED))
    def test_unsupported_format(self, name, no_pixel_decode):
        err = expect(errors.UNSUPPORTED_FORMAT, decode_image, UNSUPPORTED[name]())
        assert err.status == 415
        for fmt in ("JPEG", "PNG", "WebP"):
            assert fmt in err.message

    def test_empty(self):
        assert expect(errors.EMPTY_IMAGE, decode_image, b"").status == 400
        expect(errors.EMPTY_IMAGE, decode_image, bytearray())

    def test_too_large(self, jpeg_bytes, no_pixel_decode):
        err = expect(errors.IMAGE_TOO_LARGE, decode_image, jpeg_bytes, ImageLimits(max_bytes=len(jpeg_bytes) - 1))
        assert err.status == 413
        expect(errors.IMAGE_TOO_LARGE, decode_image, b"\xff\xd8\xff" + bytes(11 * 1024 * 1024))

    def test_exactly_at_byte_limit_is_fine(self, jpeg_bytes):
        assert decode_image(jpeg_bytes, ImageLimits(max_bytes=len(jpeg_bytes))).width == 256

    def test_wrong_types(self):
        expect(errors.MISSING_IMAGE, decode_image, None)
        expect(errors.INVALID_REQUEST, decode_image, "not bytes")
        expect(errors.INVALID_REQUEST, decode_image, 42)

    def test_memoryview_ok(self, jpeg_bytes):
        assert decode_image(memoryview(jpeg_bytes)).nbytes == len(jpeg_bytes)


# ---------------------------------------------------------------------------------------------
# dimension limits (all before any pixel is decoded)
# ---------------------------------------------------------------------------------------------


def crafted_png_bomb(width: int, height: int) -> bytes:
    """A *valid* 1-bit greyscale PNG of width x height all-zero pixels: tiny on disk, huge
    in memory.  The IDAT is a real deflate stream of every row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    block = row * 1000
    parts = []
    full, rest = divmod(height, 1000)
    for _ in range(full):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * rest))
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def patch_jpeg_sof(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    i = 2
    while True:
        assert b[i] == 0xFF
        marker, seglen = b[i + 1], (b[i + 2] << 8) | b[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", b, i + 5, height, width)
            return bytes(b)
        i += 2 + seglen


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    return crafted_png_bomb(30_000, 30_000)


class TestDimensionLimits:
    @pytest.mark.filterwarnings("error")  # no DecompressionBombWarning or anything else
    def test_png_decompression_bomb(self, png_bomb, no_pixel_decode):
        assert len(png_bomb) < 200_000  # ~900 Mpx in a tiny file
        err = expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, png_bomb)
        assert err.status == 413
        assert err.details["width"] == 30_000 and err.details["height"] == 30_000
        # Refused from the header alone (was: "under 10 ms"): with every byte after IHDR
        # destroyed - no valid chunk, no IEND - the answer is the same, so nothing after the
        # header was walked, let alone inflated.
        header_only = png_bomb[:33] + b"\xff" * (len(png_bomb) - 33)
        err = expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, header_only)
        assert err.details["width"] == 30_000 and err.details["height"] == 30_000

    @pytest.mark.filterwarnings("error")
    def test_png_bomb_also_via_base64(self, png_bomb, no_pixel_decode):
        text = "data:image/png;base64," + base64.b64encode(png_bomb).decode()
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, strip_data_uri_and_b64decode(text, LIMITS))

    def test_png_bomb_header_only(self, no_pixel_decode):
        # Header claims a huge image; the rest of the file is not even there.
        data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, data)

    def test_jpeg_bomb(self, jpeg_bytes, no_pixel_decode):
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, patch_jpeg_sof(jpeg_bytes, 65_000, 65_000))
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, patch_jpeg_sof(jpeg_bytes, 8000, 8000))  # 64 Mpx

    def test_webp_bomb(self, no_pixel_decode):
        w = h = 16_000  # VP8X canvas, 256 Mpx
        vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        body = b"WEBP" + vp8x + b"VP8L" + struct.pack("<I", 6) + b"\x2f" + bytes(5)
        data = b"RIFF" + struct.pack("<I", len(body)) + body
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, data)

    def test_max_side(self, no_pixel_decode):
        data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20_001, 40, 8, 2, 0, 0, 0))
        err = expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, data)  # only 0.8 Mpx, but too wide
        assert err.details["max_side"] == 20_000

    def test_custom_pixel_limit(self, jpeg_bytes, no_pixel_decode):
        expect(errors.IMAGE_TOO_MANY_PIXELS, decode_image, jpeg_bytes, ImageLimits(max_pixels=256 * 192 - 1))

    @pytest.mark.parametrize("size", [(31, 100), (100, 31), (20, 20), (1, 1)])
    def test_too_small(self, size, no_pixel_decode):
        for fmt in ("PNG", "JPEG", "WEBP"):
            err = expect(errors.IMAGE_TOO_SMALL, decode_image, encode(photo_rgb(*size), fmt))
            assert err.status == 400

    def test_min_side_is_inclusive(self):
        out = decode_image(encode(photo_rgb(32, 32), "PNG"))
        assert (out.width, out.height) == (32, 32)

    def test_pil_global_untouched(self):
        before = Image.MAX_IMAGE_PIXELS
        decode_image(encode(photo_rgb(64, 64), "PNG"))
        assert Image.MAX_IMAGE_PIXELS == before


# ---------------------------------------------------------------------------------------------
# corruption and truncation
# ---------------------------------------------------------------------------------------------


def with_garbage(data: bytes, start: float, end: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    lo, hi = int(len(b) * start), int(len(b) * end)
    b[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    return bytes(b)


def jpeg_header_end(data: bytes) -> int:
    """Offset just past the first SOS segment."""
    i = 2
    while True:
        marker, seglen = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        i += 2 + seglen
        if marker == 0xDA:
            return i


class TestCorrupt:
    @needs_dev
    def test_dev_jpeg_cut_at_60_percent(self):
        data = DEV_T1.read_bytes()
        expect(errors.CORRUPT_IMAGE, decode_image, data[: int(len(data) * 0.6)])

    def test_png_cut_at_60_percent(self, png_bytes):
        expect(errors.CORRUPT_IMAGE, decode_image, png_bytes[: int(len(png_bytes) * 0.6)])

    @pytest.mark.parametrize("frac", [0.02, 0.1, 0.3, 0.6, 0.9, 0.99, -2, -1])
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "WEBP-lossless", "JPEG-progressive"])
    def test_truncated_anywhere(self, fmt, frac):
        img = photo_rgb(128, 96)
        kw = {
            "JPEG": dict(format="JPEG", quality=90),
            "JPEG-progressive": dict(format="JPEG", quality=90, progressive=True),
            "PNG": dict(format="PNG"),
            "WEBP": dict(format="WEBP", quality=80),
            "WEBP-lossless": dict(format="WEBP", lossless=True),
        }[fmt]
        kw = dict(kw)
        data = encode(img, kw.pop("format"), **kw)
        cut = int(len(data) * frac) if frac > 0 else len(data) + int(frac)
        expect(errors.CORRUPT_IMAGE, decode_image, data[:cut])

    @needs_dev
    @pytest.mark.parametrize("seed", range(40))
    def test_dev_jpeg_middle_overwritten_with_garbage(self, seed):
        data = with_garbage(DEV_T1.read_bytes(), 0.45, 0.55, seed)
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    @pytest.mark.parametrize("seed", range(40))
    def test_generated_jpeg_small_garbage_patch(self, jpeg_bytes, seed):
        # ~1.5 KB of garbage in the entropy-coded data
        data = with_garbage(jpeg_bytes, 0.50, 0.50 + 1500 / len(jpeg_bytes), seed)
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    def test_jpeg_premature_eoi(self, jpeg_bytes):
        b = bytearray(jpeg_bytes)
        mid = len(b) // 2
        b[mid:mid + 2] = b"\xff\xd9"
        expect(errors.CORRUPT_IMAGE, decode_image, bytes(b))

    def test_jpeg_trailing_data_after_eoi_is_allowed(self, jpeg_bytes):
        # Cameras append trailers (e.g. motion-photo data) and padding after EOI.
        assert decode_image(jpeg_bytes + b"\x00" * 64).width == 256
        assert decode_image(jpeg_bytes + jpeg_bytes).width == 256  # MPF-style second image
        assert decode_image(jpeg_bytes + bytes(16) + jpeg_bytes).width == 256
        assert decode_image(jpeg_bytes + b"SEFH" + bytes(100) + b"SEFT").width == 256

    @pytest.mark.parametrize("seed", range(5))
    def test_jpeg_valid_header_then_garbage(self, jpeg_bytes, seed):
        rng = np.random.default_rng(seed)
        cut = jpeg_header_end(jpeg_bytes)
        data = jpeg_bytes[:cut] + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
        expect(errors.CORRUPT_IMAGE, decode_image, data)
        # and garbage right after SOI / the first segment
        expect(errors.CORRUPT_IMAGE, decode_image, jpeg_bytes[:2] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        expect(errors.CORRUPT_IMAGE, decode_image, jpeg_bytes[:20] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())

    def test_jpeg_valid_header_then_garbage_then_eoi(self, jpeg_bytes):
        rng = np.random.default_rng(7)
        cut = jpeg_header_end(jpeg_bytes)
        data = jpeg_bytes[:cut] + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes() + b"\xff\xd9"
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    @pytest.mark.parametrize("seed", range(5))
    def test_png_valid_header_then_garbage(self, png_bytes, seed):
        rng = np.random.default_rng(seed)
        data = png_bytes[:33] + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    def test_png_valid_chunks_but_garbage_idat(self):
        # CRCs are right but the deflate stream is garbage: the decoder must catch it.
        rng = np.random.default_rng(1)
        ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
        data = (
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
            + png_chunk(b"IEND", b"")
        )
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    @pytest.mark.parametrize("seed", range(10))
    def test_png_middle_garbage(self, png_bytes, seed):
        expect(errors.CORRUPT_IMAGE, decode_image, with_garbage(png_bytes, 0.4, 0.5, seed))

    def test_png_single_bit_flip(self, png_bytes):
        b = bytearray(png_bytes)
        b[len(b) // 2] ^= 0x01
        expect(errors.CORRUPT_IMAGE, decode_image, bytes(b))

    def test_png_without_iend(self, png_bytes):
        expect(errors.CORRUPT_IMAGE, decode_image, png_bytes[:-12])

    def test_webp_valid_header_then_garbage(self):
        data = encode(photo_rgb(128, 96), "WEBP", quality=80)
        rng = np.random.default_rng(0)
        head = 30  # RIFF header + VP8 chunk header + frame header
        garbage = data[:head] + rng.integers(0, 256, len(data) - head, dtype=np.uint8).tobytes()
        expect(errors.CORRUPT_IMAGE, decode_image, garbage)

    @pytest.mark.parametrize(
        "data",
        [
            b"\xff\xd8\xff",
            b"\xff\xd8\xff\xd9",
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
            b"\x89PNG\r\n\x1a\n",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
            b"RIFF\x04\x00\x00\x00WEBP",
            b"RIFF\xff\xff\xff\x7fWEBPVP8 ",
        ],
    )
    def test_stubs(self, data):
        expect(errors.CORRUPT_IMAGE, decode_image, data)

    def test_fuzz_only_liveness_errors(self, jpeg_bytes, png_bytes):
        """Random mutations of valid files either decode to a sane image or raise
        LivenessError -- nothing else escapes."""
        rng = np.random.default_rng(1234)
        sources = [
            jpeg_bytes,
            png_bytes,
            encode(photo_rgb(64, 48), "WEBP", quality=70),
            encode(photo_rgb(64, 48), "WEBP", lossless=True),
            encode(photo_rgb(64, 48), "JPEG", progressive=True, exif=exif_with_orientation(6)),
        ]
        for i in range(600):
            src = bytearray(sources[i % len(sources)])
            op = i % 3
            if op == 0:  # flip some bytes anywhere, including headers
                for pos in rng.integers(0, len(src), size=rng.integers(1, 6)):
                    src[pos] = rng.integers(0, 256)
            elif op == 1:  # truncate
                src = src[: rng.integers(1, len(src))]
            else:  # header survives, rest replaced
                keep = int(rng.integers(2, 64))
                src = src[:keep] + rng.integers(0, 256, len(src) - keep, dtype=np.uint8).tobytes()
            try:
                out = decode_image(bytes(src))
            except LivenessError:
                continue
            assert out.bgr.dtype == np.uint8 and out.bgr.ndim == 3 and out.bgr.shape[2] == 3
            assert out.bgr.shape[:2] == (out.height, out.width)


# ---------------------------------------------------------------------------------------------
# colour models and formats
# ---------------------------------------------------------------------------------------------


def assert_bgr(out: DecodedImage, w: int, h: int) -> None:
    assert isinstance(out, DecodedImage)
    assert out.bgr.shape == (h, w, 3)
    assert out.bgr.dtype == np.uint8
    assert out.bgr.flags.c_contiguous
    assert (out.width, out.height) == (w, h)


class TestColourModels:
    def test_rgb_png_exact(self, png_bytes):
        out = decode_image(png_bytes)
        assert_bgr(out, 200, 150)
        assert out.format == "png" and out.orientation == 1 and out.nbytes == len(png_bytes)
        assert np.array_equal(out.bgr, photo_rgb(200, 150, seed=3)[:, :, ::-1])

    def test_jpeg_matches_cv2(self, jpeg_bytes):
        out = decode_image(jpeg_bytes)
        assert_bgr(out, 256, 192)
        assert out.format == "jpeg"
        assert np.array_equal(out.bgr, cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR))

    def test_progressive_jpeg(self):
        img = photo_rgb(128, 96)
        data = encode(img, "JPEG", quality=95, progressive=True)
        out = decode_image(data)
        assert_bgr(out, 128, 96)
        assert np.array_equal(out.bgr, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        assert np.abs(out.bgr.astype(int) - img[:, :, ::-1]).mean() < 8

    def test_jpeg_with_restart_markers(self):
        img = photo_rgb(128, 96)
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
        assert ok and b"\xff\xdd" in buf.tobytes()
        out = decode_image(buf.tobytes())
        assert_bgr(out, 128, 96)
        # and restart markers out of sequence are corruption
        b = bytearray(buf.tobytes())
        first = b.index(b"\xff\xd0", jpeg_header_end(bytes(b)))
        b[first + 1] = 0xD3
        expect(errors.CORRUPT_IMAGE, decode_image, bytes(b))

    def test_webp_lossy_and_lossless(self):
        img = photo_rgb(96, 64)
        lossless = decode_image(encode(img, "WEBP", lossless=True))
        assert_bgr(lossless, 96, 64)
        assert lossless.format == "webp"
        assert np.array_equal(lossless.bgr, img[:, :, ::-1])
        lossy = decode_image(encode(img, "WEBP", quality=90))
        assert_bgr(lossy, 96, 64)
        assert np.abs(lossy.bgr.astype(int) - img[:, :, ::-1]).mean() < 6

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
    def test_grayscale(self, fmt):
        grey = photo_rgb(64, 48)[:, :, 0]
        out = decode_image(encode(Image.fromarray(grey, "L"), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
        assert_bgr(out, 64, 48)
        assert np.array_equal(out.bgr[:, :, 0], out.bgr[:, :, 1]) and np.array_equal(out.bgr[:, :, 1], out.bgr[:, :, 2])
        tol = 0 if fmt != "JPEG" else 8
        assert np.abs(out.bgr[:, :, 0].astype(int) - grey).mean() <= tol

    def test_1bit_png(self):
        bw = (photo_rgb(64, 48)[:, :, 0] > 128)
        out = decode_image(encode(Image.fromarray(bw).convert("1"), "PNG"))
        assert_bgr(out, 64, 48)
        assert set(np.unique(out.bgr)) <= {0, 255}

    def test_16bit_grey_png(self):
        grey16 = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
        data = cv2.imencode(".png", grey16)[1].tobytes()
        assert data[24] == 16  # bit depth in IHDR
        out = decode_image(data)
        assert_bgr(out, 64, 48)
        assert np.array_equal(out.bgr[:, :, 0], (grey16 >> 8).astype(np.uint8))

    def test_16bit_rgb_png(self):
        bgr16 = photo_rgb(64, 48)[:, :, ::-1].astype(np.uint16) * 257
        data = cv2.imencode(".png", bgr16)[1].tobytes()
        assert data[24] == 16
        out = decode_image(data)
        assert_bgr(out, 64, 48)
        assert np.array_equal(out.bgr, photo_rgb(64, 48)[:, :, ::-1])

    def test_16bit_rgba_png_composited(self):
        bgra16 = np.zeros((48, 64, 4), np.uint16)
        bgra16[..., :3] = 40000
        bgra16[:24, :, 3] = 65535
        data = cv2.imencode(".png", bgra16)[1].tobytes()
        out = decode_image(data)
        assert_bgr(out, 64, 48)
        assert (out.bgr[:24] == 40000 >> 8).all() and (out.bgr[24:] == 0).all()

    def test_rgba_png_composited_over_black(self):
        rgba = np.zeros((48, 64, 4), np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50  # stored colour everywhere
        rgba[:16, :, 3] = 255  # opaque
        rgba[16:32, :, 3] = 128  # half
        rgba[32:, :, 3] = 0  # transparent: stored colour must not leak
        out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
        assert_bgr(out, 64, 48)
        assert (out.bgr[:16] == [50, 100, 200]).all()
        assert np.abs(out.bgr[16:32].astype(int) - [25, 50, 100]).max() <= 1
        assert (out.bgr[32:] == 0).all()

    def test_opaque_rgba_equals_rgb(self):
        img = photo_rgb(64, 48)
        rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
        out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
        assert np.array_equal(out.bgr, img[:, :, ::-1])

    def test_la_and_palette_transparency(self):
        la = Image.new("LA", (64, 48), (180, 0))
        la.paste((180, 255), (0, 0, 64, 24))
        out = decode_image(encode(la, "PNG"))
        assert_bgr(out, 64, 48)
        assert (out.bgr[:24] == 180).all() and (out.bgr[24:] == 0).all()

        p = Image.new("P", (64, 48), 1)
        p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
        p.paste(0, (0, 0, 64, 24))
        out = decode_image(encode(p, "PNG", transparency=1))
        assert_bgr(out, 64, 48)
        assert (out.bgr[24:] == 0).all()

    @pytest.mark.parametrize("mode", ["L", "RGB"])
    def test_trns_colour_key(self, mode):
        img = Image.new(mode, (64, 48), 200 if mode == "L" else (200, 150, 100))  # key 10 != 0 below
        img.paste(10 if mode == "L" else (10, 20, 30), (0, 24, 64, 48))
        key = 10 if mode == "L" else (10, 20, 30)
        out = decode_image(encode(img, "PNG", transparency=key))
        assert_bgr(out, 64, 48)
        assert (out.bgr[24:] == 0).all()  # keyed colour is transparent -> black
        assert (out.bgr[:24] == (200 if mode == "L" else [100, 150, 200])).all()

    @pytest.mark.parametrize("bits", [1, 2, 4, 16])
    def test_grey_trns_low_and_high_depth(self, bits):
        maxval = (1 << bits) - 1
        samples = np.zeros((48, 64), np.uint16)
        samples[:16] = maxval  # keyed (transparent) band: white without the key
        samples[16:32] = max(maxval - 1, 0)  # opaque band just below the key
        if bits == 16:
            raw = samples.astype(">u2").tobytes()
            rows = [b"\x00" + raw[i * 128:(i + 1) * 128] for i in range(48)]
        else:
            packed = []
            for row in samples:
                acc = 0
                for v in row:
                    acc = (acc << bits) | int(v)
                nbits = 64 * bits
                pad = (-nbits) % 8
                packed.append(b"\x00" + (acc << pad).to_bytes((nbits + pad) // 8, "big"))
            rows = packed
        ihdr = struct.pack(">IIBBBBB", 64, 48, bits, 0, 0, 0, 0)
        data = (
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"tRNS", struct.pack(">H", maxval))
            + png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + png_chunk(b"IEND", b"")
        )
        out = decode_image(data)
        assert_bgr(out, 64, 48)
        assert (out.bgr[:16] == 0).all()
        expected_mid = (maxval - 1) >> 8 if bits == 16 else (maxval - 1) * (255 // maxval)
        assert (out.bgr[16:32] == expected_mid).all()
        assert (out.bgr[32:] == 0).all()

    def test_palette_png(self):
        img = Image.fromarray(photo_rgb(64, 48)).quantize(64)
        out = decode_image(encode(img, "PNG"))
        assert_bgr(out, 64, 48)
        assert np.array_equal(out.bgr, np.asarray(img.convert("RGB"))[:, :, ::-1])

    def test_webp_with_alpha(self):
        rgba = np.zeros((48, 64, 4), np.uint8)
        rgba[..., :3] = 220
        rgba[:24, :, 3] = 255
        out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True))
        assert_bgr(out, 64, 48)
        assert (out.bgr[:24] == 220).all() and (out.bgr[24:] == 0).all()

    @pytest.mark.parametrize("adobe", [True, False])
    def test_cmyk_jpeg(self, adobe):
        img = photo_rgb(64, 48)
        cmyk = Image.fromarray(img).convert("CMYK")
        data = encode(cmyk, "JPEG", quality=95)
        if not adobe:
            assert b"Adobe" in data
        out = decode_image(data)
        assert_bgr(out, 64, 48)
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
        assert np.abs(out.bgr.astype(int) - ref).max() <= 2
        assert np.abs(out.bgr.astype(int) - img[:, :, ::-1]).mean() < 4


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------

# Expected pixel transform per EXIF orientation, on an HxWxC array.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90 clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse
    8: lambda a: np.rot90(a, k=1),  # rotate 90 counter-clockwise
}


class TestOrientation:
    @pytest.mark.parametrize("orientation", [6, 8])
    def test_jpeg_orientation_exact(self, orientation):
        img = photo_rgb(96, 64)
        plain = encode(img, "JPEG", quality=92)
        tagged = encode(img, "JPEG", quality=92, exif=exif_with_orientation(orientation))
        ref = decode_image(plain).bgr  # same pixels, no tag
        out = decode_image(tagged)
        assert out.orientation == orientation
        assert (out.width, out.height) == (64, 96)  # rotated
        assert out.bgr.flags.c_contiguous
        assert np.array_equal(out.bgr, ORIENT[orientation](ref))
        # Applied exactly once: OpenCV's own EXIF handling gives the same pixels ...
        assert np.array_equal(out.bgr, cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR))
        # ... and so does PIL's.
        pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(tagged))).convert("RGB"))[:, :, ::-1]
        assert pil.shape == out.bgr.shape
        assert np.abs(pil.astype(int) - out.bgr).max() <= 3  # different IDCT rounding only

    @pytest.mark.parametrize("orientation", range(1, 9))
    @pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
    def test_all_orientations(self, fmt, orientation):
        img = photo_rgb(96, 64)
        kw = {"PNG": {}, "WEBP": {"lossless": True}, "JPEG": {"quality": 95}}[fmt]
        data = encode(img, fmt, exif=exif_with_orientation(orientation), **kw)
        out = decode_image(data)
        assert out.orientation == orientation
        expected_size = (64, 96) if orientation >= 5 else (96, 64)
        assert (out.width, out.height) == expected_size
        base = decode_image(encode(img, fmt, **kw)).bgr
        assert np.array_equal(out.bgr, np.ascontiguousarray(ORIENT[orientation](base)))
        if fmt != "JPEG":
            assert np.array_equal(out.bgr, np.ascontiguousarray(ORIENT[orientation](img[:, :, ::-1])))
            # independent reference: PIL's own EXIF transpose of the same file
            pil = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            assert np.array_equal(out.bgr, np.asarray(pil)[:, :, ::-1])

    def test_rgba_png_with_orientation_applied_once(self):
        rgba = np.dstack([photo_rgb(96, 64), np.full((64, 96), 255, np.uint8)])
        rgba[0, 0, 3] = 0  # force the alpha path
        out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG", exif=exif_with_orientation(6)))
        assert (out.width, out.height) == (64, 96)
        expected = photo_rgb(96, 64)[:, :, ::-1].copy()
        expected[0, 0] = 0
        assert np.array_equal(out.bgr, np.ascontiguousarray(np.rot90(expected, k=-1)))

    @pytest.mark.parametrize("value", [0, 9, 255])
    def test_invalid_orientation_ignored(self, value):
        img = photo_rgb(96, 64)
        out = decode_image(encode(img, "PNG", exif=exif_with_orientation(value)))
        assert out.orientation == 1
        assert np.array_equal(out.bgr, img[:, :, ::-1])

    def test_big_endian_exif(self):
        img = photo_rgb(96, 64)
        tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0) + bytes(4)
        plain = encode(img, "JPEG", quality=90)
        tagged = plain[:2] + b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff + plain[2:]
        out = decode_image(tagged)
        assert out.orientation == 8
        assert np.array_equal(out.bgr, np.ascontiguousarray(np.rot90(decode_image(plain).bgr, k=1)))

    def test_garbage_exif_does_not_break_decode(self):
        plain = encode(photo_rgb(96, 64), "JPEG", quality=90)
        junk = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(10)
        tagged = plain[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(junk)) + junk + plain[2:]
        out = decode_image(tagged)
        assert out.orientation == 1 and (out.width, out.height) == (96, 64)


# ---------------------------------------------------------------------------------------------
# real dev images
# ---------------------------------------------------------------------------------------------


@needs_dev
class TestDevImages:
    def test_t1_identical_to_cv2_imread(self):
        out = decode_image_file(DEV_T1)
        ref = cv2.imread(str(DEV_T1))
        assert out.format == "jpeg"
        assert out.orientation == 6  # stored 640x480 landscape, tagged to display portrait
        assert (out.width, out.height) == (480, 640)
        assert out.bgr.shape == ref.shape == (640, 480, 3)
        assert np.array_equal(out.bgr, ref)
        assert out.nbytes == DEV_T1.stat().st_size

    @pytest.mark.parametrize("path", sorted(DEV_DIR.glob("*.jpg")) if DEV_DIR.exists() else [])
    def test_all_dev_images(self, path):
        data = path.read_bytes()
        out = decode_image(data)
        assert np.array_equal(out.bgr, cv2.imread(str(path)))
        via_b64 = decode_image(strip_data_uri_and_b64decode("data:image/jpeg;base64," + base64.b64encode(data).decode(), LIMITS))
        assert np.array_equal(via_b64.bgr, out.bgr)

    def test_missing_file(self, tmp_path):
        expect(errors.MISSING_IMAGE, decode_image_file, tmp_path / "nope.jpg")

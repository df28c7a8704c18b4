"""Image decoding and validation for the request hot path.

Pipeline (every step is cheap until the last one):

1. ``strip_data_uri_and_b64decode`` -- optional ``data:...;base64,`` prefix, whitespace,
   url-safe alphabet and missing padding are tolerated; the decoded size is bounded from the
   text length *before* any decoding work.
2. ``decode_image``
   a. byte-count limits (``EMPTY_IMAGE`` / ``IMAGE_TOO_LARGE``);
   b. format sniffed from magic bytes only (JPEG, PNG, WebP; anything else is
      ``UNSUPPORTED_FORMAT``);
   c. a pure-Python *structural* parse of the container (JPEG markers and entropy-coded
      segments up to EOI, PNG chunks with CRCs up to IEND, WebP RIFF chunks).  It yields the
      dimensions, the EXIF orientation and the alpha flag, and rejects truncated or mangled
      files.  Pixel limits (``IMAGE_TOO_MANY_PIXELS`` / ``IMAGE_TOO_SMALL``) are enforced here,
      before a single pixel is decoded, so a 30000x30000 "bomb" costs microseconds;
   d. pixels are decoded with ``cv2.imdecode`` (measured fastest, see
      ``benchmarks/bench_decode.py``) with ``IMREAD_IGNORE_ORIENTATION``; the EXIF orientation
      parsed in (c) is then applied exactly once by us, identically for all three formats
      (OpenCV itself would honour it for JPEG and PNG but not WebP).
   e. optionally (``min_long_side``) a JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT
      domain (libjpeg's scaled IDCT, OpenCV's ``IMREAD_REDUCED_COLOR_*``): the largest reduction
      whose longer side stays at least ``min_long_side``, chosen from the header.  A 12 MP phone
      photo then costs about half the decode time and an eighth of the memory; PNG and WebP
      have no such mode in OpenCV and are decoded in full.  ``DecodedImage.scale`` says how far
      the pixels were reduced; ``width``/``height`` stay the full image's.

Why the structural parse is needed: libjpeg silently pads a damaged entropy-coded segment
and OpenCV returns the half-grey result (it only prints "Corrupt JPEG data" to stderr), so
garbage inside a JPEG must be caught before decoding.  The check is strict but standard:
inside a scan only stuffed ``FF00``, fill bytes and in-sequence ``RSTn`` (and only if a
restart interval was declared) may appear; the first other marker must be a legal
between-scan marker or EOI.  Bytes after EOI that end in ``FFD9`` but contain no new SOI
are treated as the rest of the scan behind a premature EOI (garbage that happened to
contain ``FFD9``); other trailers (camera/motion-photo data, padding, an appended MPF image)
are allowed.  Limitation: a *small* patch of garbage (tens of bytes) that contains no
``0xFF`` byte is structurally invisible and decodes to locally wrong pixels -- neither
OpenCV nor PIL reports that (libjpeg only warns), so no cheap check can catch it.  Detection
rate measured on a 100-byte random patch: ~35 % (PIL: ~32 %); >= 1 KB: ~99 %.

PNG: every chunk CRC is verified (ancillary ones too, as PIL does) and IEND is required;
a broken deflate stream inside valid chunks is caught by libpng (``imdecode`` fails).
WebP: RIFF/chunk sizes must fit the file; animated WebP is ``UNSUPPORTED_FORMAT``.

Alpha: images with an alpha channel (PNG colour types 4/6 or ``tRNS`` -- palette, RGB and
greyscale colour keys --, WebP with alpha) are composited over **black**
(``bgr * alpha / 255``), so fully transparent pixels come out black whatever colour happened
to be stored under them (OpenCV's own IMREAD_COLOR would just drop alpha and expose that
hidden colour).  Opaque images are unaffected and take the plain IMREAD_COLOR path.
Greyscale, palette, 16-bit PNG and CMYK/YCCK JPEG come out as 8-bit BGR.

PIL is not used on this path at all, so its process-global ``Image.MAX_IMAGE_PIXELS`` and
``DecompressionBombWarning`` never come into play here.

Only ``LivenessError`` ever leaves this module; anything unexpected becomes ``CORRUPT_IMAGE``.
"""

from __future__ import annotations

import binascii
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from liveness.errors import (
    CORRUPT_IMAGE,
    EMPTY_IMAGE,
    IMAGE_TOO_LARGE,
    IMAGE_TOO_MANY_PIXELS,
    IMAGE_TOO_SMALL,
    INVALID_BASE64,
    INVALID_REQUEST,
    MISSING_IMAGE,
    UNSUPPORTED_FORMAT,
    LivenessError,
)
from liveness.imaging.memory import DecodeMemory, default_decode_memory
from liveness.payload import PayloadCodes, check_payload, describe_head, parse_refusing

__all__ = [
    "ImageLimits",
    "DecodedImage",
    "strip_data_uri_and_b64decode",
    "sniff_format",
    "decode_image",
    "decode_image_file",
    "jpeg_reduction",
    "SUPPORTED_FORMATS",
]

SUPPORTED_FORMATS = ("jpeg", "png", "webp")
_ACCEPTED_MSG = "accepted formats are JPEG, PNG and WebP"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 20_000  # either dimension
    min_side: int = 32  # either dimension
    # Peak bytes one decode may take (liveness.imaging.memory), from the header.
    max_decode_bytes: int = 640 * 1024 * 1024  # 40 Mpx at 16-bit RGBA fits


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray  # HxWx3 uint8, C-contiguous, BGR, EXIF orientation applied
    format: str  # "jpeg" | "png" | "webp"
    width: int  # after orientation
    height: int  # after orientation
    orientation: int  # EXIF orientation that was applied (1 = none)
    nbytes: int  # size of the encoded image
    # DCT-domain reduction of ``bgr`` (1, 2, 4, 8): full-image pixel = bgr pixel x scale.
    # ``width``/``height`` are the full image's (after orientation) whatever the scale.
    scale: int = 1


_DEFAULT_LIMITS = ImageLimits()


_IMAGE_CODES = PayloadCodes("image", MISSING_IMAGE, EMPTY_IMAGE, IMAGE_TOO_LARGE)


def _err(kind, message: str, **details) -> LivenessError:
    return LivenessError(kind, message, details)


def _corrupt(message: str, **details) -> LivenessError:
    return LivenessError(CORRUPT_IMAGE, message, details)


# --------------------------------------------------------------------------------------------
# base64
# --------------------------------------------------------------------------------------------

# data:[<mediatype>][;param=value]*;base64,   (case-insensitive, any image/* or none at all)
_DATA_URI = re.compile(r"\s*data:([^,;]*)((?:;[^,;]*)*?);base64,", re.IGNORECASE)
_URLSAFE = str.maketrans("-_", "+/")
# Whitespace may at most double a sane payload (e.g. "\r\n" every 76 chars is ~2.6 %); beyond
# that we reject without even scanning the text.
_WS_SLACK = 2


def _estimated_decoded(n_chars: int) -> int:
    return (n_chars * 3) // 4


def strip_data_uri_and_b64decode(text: str, limits: ImageLimits = _DEFAULT_LIMITS) -> bytes:
    """Decode a base64 image payload (plain or url-safe, padded or not, whitespace allowed,
    optional ``data:image/<type>;base64,`` prefix).

    Raises ``MISSING_IMAGE`` for an empty payload, ``IMAGE_TOO_LARGE`` when the payload would
    decode to more than ``limits.max_bytes`` (checked from its length before decoding) and
    ``INVALID_BASE64`` for anything that is not base64.
    """
    try:
        return _b64decode(text, limits)
    except LivenessError:
        raise
    except Exception as exc:  # pragma: no cover - defensive
        raise _err(INVALID_BASE64, "image is not valid base64", reason=type(exc).__name__) from None


def _b64decode(text, limits: ImageLimits) -> bytes:
    if text is None:
        raise _err(MISSING_IMAGE, "no image was provided")
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise _err(INVALID_BASE64, "image is not valid base64 (non-ASCII characters)") from None
    if not isinstance(text, str):
        raise _err(INVALID_REQUEST, "image must be a base64 string", type=type(text).__name__)

    # Cheapest possible bound first: even with a data URI prefix the payload cannot be longer
    # than the whole string.
    max_chars = (limits.max_bytes * 4) // 3 + 4
    if len(text) > _WS_SLACK * max_chars + 256:
        raise _err(
            IMAGE_TOO_LARGE,
            f"image exceeds the {limits.max_bytes} byte limit",
            max_bytes=limits.max_bytes,
            estimated_bytes=_estimated_decoded(len(text)),
        )

    payload = text
    if text[:64].lstrip()[:5].lower() == "data:":
        m = _DATA_URI.match(text)
        if m is None:
            raise _err(INVALID_BASE64, "data URI must be of the form data:image/<type>;base64,<data>")
        # The declared media type is deliberately ignored (clients send image/jpg,
        # application/octet-stream, ...): the magic bytes decide the format.
        payload = text[m.end():]

    if _estimated_decoded(len(payload)) > limits.max_bytes:
        # Maybe it is mostly whitespace; only then is it worth compacting.
        payload = "".join(payload.split())
        if _estimated_decoded(len(payload)) > limits.max_bytes:
            raise _err(
                IMAGE_TOO_LARGE,
                f"image exceeds the {limits.max_bytes} byte limit",
                max_bytes=limits.max_bytes,
                estimated_bytes=_estimated_decoded(len(payload)),
            )
    elif any(c in payload for c in " \n\r\t\f\v"):
        # Compacting copies the string; skip it in the common no-whitespace case (six
        # C-level scans are cheaper than the copy).
        payload = "".join(payload.split())

    if not payload:
        raise _err(MISSING_IMAGE, "no image was provided (empty base64 payload)")
    if not payload.isascii():
        raise _err(INVALID_BASE64, "image is not valid base64 (non-ASCII characters)")

    if "-" in payload or "_" in payload:
        payload = payload.translate(_URLSAFE)
    body = payload.rstrip("=")
    if len(body) % 4 == 1:
        raise _err(INVALID_BASE64, "image is not valid base64 (bad length)")
    padded = body + "=" * (-len(body) % 4)
    try:
        out = binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _err(INVALID_BASE64, "image is not valid base64") from None
    if not out:
        raise _err(MISSING_IMAGE, "no image was provided (empty base64 payload)")
    if len(out) > limits.max_bytes:
        raise _err(
            IMAGE_TOO_LARGE,
            f"image exceeds the {limits.max_bytes} byte limit",
            max_bytes=limits.max_bytes,
            nbytes=len(out),
        )
    return out


# --------------------------------------------------------------------------------------------
# format sniffing
# --------------------------------------------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"

# Recognised-but-rejected formats, only to make the error message helpful.
_OTHER_MAGIC = (
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"%PDF", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"\x00\x00\x01\x00", "ico"),
    (b"8BPS", "psd"),
    (b"\xff\x0a", "jpegxl"),
)


def sniff_format(data: bytes) -> str | None:
    """Return ``"jpeg"``, ``"png"`` or ``"webp"`` from the magic bytes alone, else ``None``."""
    try:
        head = bytes(data[:16])
    except Exception:
        return None
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == _PNG_SIG:
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _iso_bmff_image(head: bytes) -> str | None:
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in (b"avif", b"avis"):
        return "avif"
    if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        return "heif"
    return "iso-bmff"


def _describe_unknown(head: bytes) -> str | None:
    return describe_head(head, _OTHER_MAGIC, _iso_bmff_image)


# --------------------------------------------------------------------------------------------
# EXIF orientation
# --------------------------------------------------------------------------------------------


def _exif_orientation(tiff: bytes) -> int:
    """Orientation (1-8) from a TIFF-structured EXIF block; 1 when absent or malformed."""
    if tiff[:6] == b"Exif\x00\x00":
        tiff = tiff[6:]
    if len(tiff) < 8:
        return 1
    if tiff[:4] == b"II*\x00":
        e = "<"
    elif tiff[:4] == b"MM\x00*":
        e = ">"
    else:
        return 1
    (ifd,) = struct.unpack_from(e + "I", tiff, 4)
    if ifd < 8 or ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(e + "H", tiff, ifd)
    pos = ifd + 2
    for _ in range(min(count, 512)):
        if pos + 12 > len(tiff):
            return 1
        tag, typ, cnt = struct.unpack_from(e + "HHI", tiff, pos)
        if tag == 0x0112:
            if typ == 3 and cnt >= 1:  # SHORT
                (val,) = struct.unpack_from(e + "H", tiff, pos + 8)
            elif typ in (4, 9) and cnt >= 1:  # LONG / SLONG written by sloppy tools
                (val,) = struct.unpack_from(e + "I", tiff, pos + 8)
            else:
                return 1
            return val if 1 <= val <= 8 else 1
        pos += 12
    return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` turned upright for EXIF orientation 1-8 (other values: unchanged)."""
    # Same pixel permutations as OpenCV's ApplyExifOrientation / PIL's exif_transpose.
    if orientation == 2:
        img = cv2.flip(img, 1)
    elif orientation == 3:
        img = cv2.rotate(img, cv2.ROTATE_180)
    elif orientation == 4:
        img = cv2.flip(img, 0)
    elif orientation == 5:
        img = cv2.transpose(img)
    elif orientation == 6:
        img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        img = cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)
    elif orientation == 8:
        img = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


# --------------------------------------------------------------------------------------------
# structural parsers: (width, height, orientation, has_alpha) or raise CORRUPT_IMAGE
# --------------------------------------------------------------------------------------------

class _Header(NamedTuple):
    width: int
    height: int
    orientation: int  # 1-8
    has_alpha: bool
    grey_key: int | None = None  # PNG greyscale tRNS colour key, in decoded sample units
    raw_bpp: int = 3  # bytes per pixel of OpenCV's decode (3: straight to 8-bit BGR)
    # Entropy-coded / compressed bytes, for the "too little data for that size" check.
    data_bytes: int = 0


def decode_cost(h: _Header) -> int:
    """Peak bytes of decoding ``h``.  OpenCV peaks at twice its output (it decodes into a
    buffer, then converts channel order into the result; measured for JPEG, PNG and WebP at
    8 and 16 bits); our 8-bit BGR copy (alpha, 16 bits, orientation) comes after its buffer
    is freed."""
    return h.width * h.height * max(2 * h.raw_bpp, h.raw_bpp + 3)


# SOF markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG reserved, CC = DAC)
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
# Markers with a length field that may legitimately appear between scans.
_BETWEEN_SCANS = frozenset((0xC4, 0xCC, 0xDB, 0xDD, 0xDC, 0xFE, *range(0xE0, 0xF0)))
# Next "real" marker inside entropy-coded data: FF followed by anything but 00, RSTn or FF.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_RST = re.compile(rb"\xff[\xd0-\xd7]")


def _parse_jpeg(data: bytes, limits: ImageLimits) -> _Header:
    n = len(data)
    pos = 2
    width = height = None
    orientation = 1
    restart_interval = 0
    seen_scan = False
    exif_seen = False
    scan_bytes = 0
    arithmetic = False

    while True:
        # Marker: one or more 0xFF fill bytes then the marker code.
        if pos >= n:
            raise _corrupt("JPEG is truncated (no EOI marker)")
        if data[pos] != 0xFF:
            raise _corrupt("JPEG marker structure is broken", offset=pos)
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise _corrupt("JPEG is truncated (no EOI marker)")
        marker = data[pos]
        pos += 1

        if marker == 0xD9:  # EOI
            if not seen_scan:
                raise _corrupt("JPEG has no image data")
            # Bytes after EOI are normally a camera trailer, padding or an appended image
            # (MPF).  Trailing bytes that end in EOI without containing any SOI are the rest
            # of this image's scan after a premature EOI that came from damaged data.
            if pos < n and data.endswith(b"\xff\xd9") and data.find(b"\xff\xd8\xff", pos) < 0:
                raise _corrupt("JPEG has a premature EOI marker (damaged image data)", offset=pos - 2)
            # Huffman coding spends at least one bit on every 8x8 block of the full-resolution
            # component, so fewer bytes than that is a header lying about the size (libjpeg
            # would decode it to filler).  Arithmetic coding has no such floor.
            blocks = -(-width // 8) * -(-height // 8)
            if not arithmetic and scan_bytes * 8 < blocks:
                raise _corrupt(
                    f"JPEG has too little image data for its {width}x{height} header",
                    width=width, height=height, data_bytes=scan_bytes,
                )
            return _Header(width, height, orientation, False, data_bytes=scan_bytes)
        if marker == 0x01:  # TEM: standalone, harmless
            continue
        if 0xD0 <= marker <= 0xD7:
            raise _corrupt("JPEG has a restart marker outside a scan", offset=pos - 2)
        if marker == 0xD8:
            raise _corrupt("JPEG has a duplicate SOI marker", offset=pos - 2)
        if marker == 0x00:
            raise _corrupt("JPEG marker structure is broken", offset=pos - 2)
        if seen_scan and marker != 0xDA and marker not in _BETWEEN_SCANS:
            raise _corrupt(f"JPEG has an unexpected marker 0xFF{marker:02X} after a scan", offset=pos - 2)
        if not seen_scan and marker != 0xDA and marker not in _SOF and marker not in _BETWEEN_SCANS:
            raise _corrupt(f"JPEG has an unknown marker 0xFF{marker:02X}", offset=pos - 2)

        if pos + 2 > n:
            raise _corrupt("JPEG is truncated inside a marker segment")
        seglen = (data[pos] << 8) | data[pos + 1]
        if seglen < 2:
            raise _corrupt("JPEG marker segment has an invalid length", offset=pos)
        seg_end = pos + seglen
        if seg_end > n:
            raise _corrupt("JPEG is truncated inside a marker segment")
        body = pos + 2

        if marker in _SOF:
            if width is not None:
                raise _corrupt("JPEG has more than one frame header")
            if seglen < 8:
                raise _corrupt("JPEG frame header is too short")
            arithmetic = marker >= 0xC9
            precision = data[body]
            height = (data[body + 1] << 8) | data[body + 2]
            width = (data[body + 3] << 8) | data[body + 4]
            ncomp = data[body + 5]
            if ncomp not in (1, 3, 4) or seglen != 8 + 3 * ncomp or precision not in (8, 12, 16):
                raise _corrupt("JPEG frame header is invalid")
            if height == 0:
                # DNL-defined height: unsupported by our limit check, and practically unused.
                raise _corrupt("JPEG without a height in its frame header is not supported")
            # Limits before anything else: a bomb is rejected here, microseconds in.
            _check_dims(width, height, limits)
        elif marker == 0xE1 and not exif_seen and data[body:body + 6] == b"Exif\x00\x00":
            exif_seen = True
            orientation = _exif_orientation(data[body + 6:seg_end])
        elif marker == 0xDD:
            if seglen != 4:
                raise _corrupt("JPEG restart interval segment is invalid")
            restart_interval = (data[body] << 8) | data[body + 1]
        elif marker == 0xDA:
            if width is None:
                raise _corrupt("JPEG scan before frame header")
            seen_scan = True
            m = _JPEG_MARKER.search(data, seg_end)
            if m is None:
                raise _corrupt("JPEG is truncated (no EOI marker)")
            scan_end = m.start()
            scan_bytes += scan_end - seg_end
            expected = 0
            for r in _JPEG_RST.finditer(data, seg_end, scan_end):
                if not restart_interval:
                    raise _corrupt("JPEG has a restart marker without a restart interval", offset=r.start())
                if data[r.start() + 1] != 0xD0 + expected:
                    raise _corrupt("JPEG restart markers are out of sequence", offset=r.start())
                expected = (expected + 1) & 7
            pos = scan_end
            continue
        pos = seg_end


def _parse_png(data: bytes, limits: ImageLimits) -> _Header:
    n = len(data)
    if n < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise _corrupt("PNG header (IHDR) is missing or invalid")
    width, height, depth, ctype, comp, filt, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if (zlib.crc32(data[12:29]) & 0xFFFFFFFF) != struct.unpack_from(">I", data, 29)[0]:
        raise _corrupt("PNG header (IHDR) checksum mismatch")
    valid_depths = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if (
        ctype not in valid_depths
        or depth not in valid_depths[ctype]
        or comp != 0
        or filt != 0
        or interlace not in (0, 1)
        or width == 0
        or height == 0
        or width > 0x7FFFFFFF
        or height > 0x7FFFFFFF
    ):
        raise _corrupt("PNG header (IHDR) is invalid")
    # Limits before walking (let alone inflating) the rest of the file.
    _check_dims(width, height, limits)

    has_alpha = ctype in (4, 6)
    grey_key = None
    orientation = 1
    seen_idat = False
    idat_bytes = 0
    crc32 = zlib.crc32
    unpack = struct.unpack_from
    view = memoryview(data)  # CRC over chunk bodies without copying them
    pos = 33
    while True:
        if pos + 12 > n:
            raise _corrupt("PNG is truncated (no IEND chunk)")
        length, ctype_b = unpack(">I4s", data, pos)
        end = pos + 8 + length
        if length > 0x7FFFFFFF or end + 4 > n:
            raise _corrupt("PNG is truncated (chunk runs past the end of the file)", offset=pos)
        if (crc32(view[pos + 4:end]) & 0xFFFFFFFF) != unpack(">I", data, end)[0]:
            raise _corrupt(f"PNG chunk {ctype_b!r} checksum mismatch", offset=pos)
        if not ctype_b.isalpha():  # four ASCII letters
            raise _corrupt("PNG chunk type is invalid", offset=pos)
        if ctype_b == b"IDAT":
            seen_idat = True
            idat_bytes += length
        elif ctype_b == b"IEND":
            if not seen_idat:
                raise _corrupt("PNG has no image data")
            _check_png_data(width, height, depth, ctype, idat_bytes)
            sample = 2 if depth == 16 else 1
            return _Header(width, height, orientation, has_alpha, grey_key,
                           raw_bpp=4 * sample if has_alpha else 3, data_bytes=idat_bytes)
        elif ctype_b == b"IHDR":
            raise _corrupt("PNG has a duplicate IHDR chunk")
        elif ctype_b == b"tRNS":
            has_alpha = True
            if ctype == 0 and length >= 2:
                # OpenCV ignores a greyscale colour key, so we apply it ourselves.  Samples
                # of 1/2/4 bits are scaled to 0-255 by the decoder; 16 bits stay 16 bits.
                key = unpack(">H", data, pos + 8)[0] & ((1 << depth) - 1)
                grey_key = key * (255 // ((1 << depth) - 1)) if depth < 8 else key
        elif ctype_b == b"eXIf":
            orientation = _exif_orientation(data[pos + 8:end])
        pos = end + 4


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Deflate cannot compress better than about 1032:1 (258-byte matches in 2-bit codes); the
# slack covers zlib's header and interlacing's extra filter bytes.
_DEFLATE_MAX_RATIO = 1100


def _check_png_data(width: int, height: int, depth: int, ctype: int, idat_bytes: int) -> None:
    raw = height * (1 + -(-width * _PNG_CHANNELS[ctype] * depth // 8))
    if idat_bytes * _DEFLATE_MAX_RATIO < raw:
        raise _corrupt(
            f"PNG has too little image data for its {width}x{height} header",
            width=width, height=height, data_bytes=idat_bytes,
        )


def _parse_webp(data: bytes, limits: ImageLimits) -> _Header:
    n = len(data)
    if n < 20:
        raise _corrupt("WebP is truncated")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size < 12 or riff_size + 8 > n:
        raise _corrupt("WebP is truncated (RIFF size exceeds the file)")
    n = riff_size + 8  # trailing bytes after the RIFF container are ignored
    width = height = None
    orientation = 1
    has_alpha = False
    has_bitstream = False
    pos = 12
    first = True
    while pos + 8 <= n:
        fourcc = data[pos:pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        end = body + size
        if end > n:
            raise _corrupt("WebP is truncated (chunk runs past the end of the file)", offset=pos)
        if fourcc == b"VP8X" and first:
            if size < 10:
                raise _corrupt("WebP extended header is invalid")
            flags = data[body]
            if flags & 0x02:
                raise _err(UNSUPPORTED_FORMAT, f"animated WebP is not supported; {_ACCEPTED_MSG}")
            has_alpha = bool(flags & 0x10)
            width = 1 + int.from_bytes(data[body + 4:body + 7], "little")
            height = 1 + int.from_bytes(data[body + 7:body + 10], "little")
            _check_dims(width, height, limits)
        elif fourcc == b"VP8 ":
            if size < 10 or data[body + 3:body + 6] != b"\x9d\x01\x2a":
                raise _corrupt("WebP lossy bitstream header is invalid")
            w = struct.unpack_from("<H", data, body + 6)[0] & 0x3FFF
            h = struct.unpack_from("<H", data, body + 8)[0] & 0x3FFF
            if width is None:
                width, height = w, h
                _check_dims(width, height, limits)
            has_bitstream = True
        elif fourcc == b"VP8L":
            if size < 5 or data[body] != 0x2F:
                raise _corrupt("WebP lossless bitstream header is invalid")
            (bits,) = struct.unpack_from("<I", data, body + 1)
            w = (bits & 0x3FFF) + 1
            h = ((bits >> 14) & 0x3FFF) + 1
            if width is None:
                width, height = w, h
                _check_dims(width, height, limits)
                has_alpha = bool((bits >> 28) & 1)
            has_bitstream = True
        elif fourcc == b"EXIF":
            orientation = _exif_orientation(data[body:end])
        elif fourcc == b"ANMF":
            raise _err(UNSUPPORTED_FORMAT, f"animated WebP is not supported; {_ACCEPTED_MSG}")
        first = False
        pos = end + (size & 1)  # chunks are padded to even sizes
    if not has_bitstream or width is None:
        raise _corrupt("WebP has no image data")
    return _Header(width, height, orientation, has_alpha, raw_bpp=4 if has_alpha else 3)


_PARSERS = {"jpeg": _parse_jpeg, "png": _parse_png, "webp": _parse_webp}


def _check_dims(width: int, height: int, limits: ImageLimits) -> None:
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise _err(
            IMAGE_TOO_MANY_PIXELS,
            f"image is {width}x{height}; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} per side",
            width=width,
            height=height,
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
        )
    if width < limits.min_side or height < limits.min_side:
        raise _err(
            IMAGE_TOO_SMALL,
            f"image is {width}x{height}; both sides must be at least {limits.min_side} pixels",
            width=width,
            height=height,
            min_side=limits.min_side,
        )


# --------------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------------

_FLAGS_COLOR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_FLAGS_ALPHA = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION


_BAND_ROWS = 256  # rows converted at a time: temporaries stay a few MB whatever the image


def _to_bgr_over_black(img: np.ndarray) -> np.ndarray:
    """Any OpenCV decode result (1/3/4 channels, 8/16-bit) -> HxWx3 uint8 BGR, alpha
    composited over black.  Converted in bands of rows into one output array, so a 16-bit
    RGBA image costs its decode plus the 8-bit result, not several full-size temporaries."""
    if img.dtype not in (np.uint8, np.uint16):
        raise _corrupt("unexpected pixel type", dtype=str(img.dtype))
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 2, 3, 4):
        raise _corrupt("unexpected channel count", channels=channels)
    if img.dtype == np.uint8 and channels == 3:
        return img
    if img.dtype == np.uint8 and channels == 4 and img[:, :, 3].min() == 255:
        return np.ascontiguousarray(img[:, :, :3])
    out = np.empty((img.shape[0], img.shape[1], 3), np.uint8)
    for top in range(0, img.shape[0], _BAND_ROWS):
        band = img[top:top + _BAND_ROWS]
        if band.dtype == np.uint16:
            band = (band >> 8).astype(np.uint8)
        out[top:top + _BAND_ROWS] = _band_to_bgr(band, channels)
    return out


def _band_to_bgr(band: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return cv2.cvtColor(band.reshape(band.shape[0], band.shape[1]), cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return band
    if channels == 2:  # grey + alpha (not produced by OpenCV today, kept for safety)
        grey, alpha = band[:, :, 0], band[:, :, 1]
        return cv2.cvtColor(cv2.multiply(grey, alpha, scale=1 / 255.0), cv2.COLOR_GRAY2BGR)
    bgr, alpha = np.ascontiguousarray(band[:, :, :3]), band[:, :, 3]
    return cv2.multiply(bgr, cv2.merge((alpha, alpha, alpha)), scale=1 / 255.0)


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_reduction(width: int, height: int, min_long_side: int | None) -> int:
    """The DCT-domain reduction (1, 2, 4 or 8) of a ``width`` x ``height`` JPEG: the largest whose
    longer side stays at least ``min_long_side`` (None or 0: 1, a full decode)."""
    if not min_long_side:
        return 1
    long_side = max(width, height)
    return next((f for f in (8, 4, 2) if long_side // f >= min_long_side), 1)


def decode_image(
    data: bytes, limits: ImageLimits = _DEFAULT_LIMITS, memory: DecodeMemory | None = None,
    min_long_side: int | None = None, scale: int | None = None,
) -> DecodedImage:
    """Validate and decode an encoded JPEG/PNG/WebP into an oriented BGR array.

    All limits are checked from the bytes and the container headers before any pixel is
    decoded; the decode then takes its memory from ``memory`` (default: the process's pool,
    ``liveness.imaging.memory``).  A JPEG is reduced in the DCT domain by ``scale`` when given,
    else as far as ``min_long_side`` allows (``jpeg_reduction``); other formats are decoded in
    full.  Only ``LivenessError`` is raised.
    """
    return parse_refusing(
        lambda: _decode(data, limits, memory, min_long_side, scale),
        (IMAGE_TOO_MANY_PIXELS, "image is too large to decode"),
        (CORRUPT_IMAGE, "image could not be decoded"),
    )


def _decode(data, limits: ImageLimits, memory: DecodeMemory | None, min_long_side: int | None = None,
            scale: int | None = None) -> DecodedImage:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif data is not None and not isinstance(data, bytes):
        raise _err(INVALID_REQUEST, "image must be bytes", type=type(data).__name__)
    nbytes = check_payload(data, limits.max_bytes, _IMAGE_CODES)

    fmt = sniff_format(data)
    if fmt is None and data[:2] == b"\xff\xd8":
        # SOI present but no marker after it: a damaged JPEG rather than another format.
        raise _corrupt("JPEG marker structure is broken right after SOI")
    if fmt is None:
        detected = _describe_unknown(data[:16])
        what = f" ({detected})" if detected else ""
        raise _err(
            UNSUPPORTED_FORMAT,
            f"unsupported image format{what}; {_ACCEPTED_MSG}",
            **({"detected": detected} if detected else {}),
        )

    try:
        header = _PARSERS[fmt](data, limits)
    except LivenessError:
        raise
    except (IndexError, struct.error, ValueError):
        raise _corrupt(f"{fmt.upper()} structure is invalid or truncated") from None
    reduce = 1
    if fmt == "jpeg":
        reduce = scale if scale in (1, *_REDUCED) else jpeg_reduction(header.width, header.height, min_long_side)
    cost = decode_cost(header)
    if cost > limits.max_decode_bytes:
        mib = 1024 * 1024
        raise _err(
            IMAGE_TOO_MANY_PIXELS,
            f"image is {header.width}x{header.height} at {header.raw_bpp} bytes per pixel: decoding it needs "
            f"{cost // mib} MiB; the limit is {limits.max_decode_bytes // mib} MiB",
            width=header.width, height=header.height, decode_bytes=cost, max_decode_bytes=limits.max_decode_bytes,
        )
    # The limit is the full image's (a reduced decode of a bomb is still refused); the pool is
    # charged what this decode takes.
    with (memory or default_decode_memory()).hold(cost // (reduce * reduce)):
        img = _pixels(data, fmt, header, reduce)
    w, h = header.width, header.height
    if header.orientation >= 5:  # 5-8 swap the sides
        w, h = h, w
    return DecodedImage(bgr=img, format=fmt, width=int(w), height=int(h), orientation=header.orientation,
                        nbytes=nbytes, scale=reduce)


def _pixels(data: bytes, fmt: str, header: _Header, reduce: int = 1) -> np.ndarray:
    width, height, orientation, has_alpha, grey_key = header[:5]
    if reduce > 1:  # libjpeg's scaled output rounds up
        width, height = -(-width // reduce), -(-height // reduce)
    buf = np.frombuffer(data, dtype=np.uint8)
    if has_alpha:
        raw = cv2.imdecode(buf, _FLAGS_ALPHA)
        if raw is not None and grey_key is not None and raw.ndim == 2:
            raw = np.where(raw == grey_key, 0, raw).astype(raw.dtype)
        img = None if raw is None else _to_bgr_over_black(raw)
        del raw  # before the orientation copy: the peak is decode + result, not more
    else:
        img = cv2.imdecode(buf, (_REDUCED[reduce] | cv2.IMREAD_IGNORE_ORIENTATION) if reduce > 1 else _FLAGS_COLOR)
    if img is None:
        raise _corrupt(f"{fmt.upper()} image data is corrupt or truncated")
    if img.shape[0] != height or img.shape[1] != width:
        raise _corrupt(
            "decoded size does not match the image header",
            header=[width, height],
            decoded=[int(img.shape[1]), int(img.shape[0])],
        )
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        img = _to_bgr_over_black(img)

    if orientation != 1:
        img = apply_orientation(img, orientation)
    return img if img.flags.c_contiguous else np.ascontiguousarray(img)


def decode_image_file(path: str | Path, limits: ImageLimits = _DEFAULT_LIMITS) -> DecodedImage:
    """Read ``path`` (at most ``limits.max_bytes + 1`` bytes) and ``decode_image`` it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise _err(MISSING_IMAGE, f"cannot read image file: {exc.strerror or exc}", path=str(path)) from None
    return decode_image(data, limits)

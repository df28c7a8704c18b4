"""Real-world framings made from the dev media, for the acquisition tests and benchmarks.

The dev images are 480x640 phone frames with the face at ~40% of the width; real selfies are
1-12 MP with the face filling 40-70% of the frame, or small in a rear-camera 12 MP photo, often
EXIF-rotated, sometimes PNG with alpha or 16 bits.  Each maker below reproduces one of those
conditions from a dev image or a dev video frame, deterministically (no randomness, no network):

* ``reframed``: crop around the face so its box is ``fraction`` of the frame width, at the
  frame's aspect ratio, and upscale (bicubic) to ~1500x1900; outside the source it is padded by
  edge replication, the way a tight crop of a bigger scene looks.
* ``small_face``: the source placed, at the size that makes its face ``face_px`` wide, in a
  12 MP (4000x3000 or 3000x4000) frame whose rest is the source itself blurred and enlarged
  (a background, not a black border a detector could key on).
* ``exif_rotated``: the pixels stored rotated and an EXIF Orientation tag that undoes it, as
  phones write portrait photos (orientation 6 = stored 90 degrees counter-clockwise).
* ``png_alpha`` (8-bit RGBA, opaque face, transparent corners) and ``png16`` (16-bit RGB).
* ``phone_photo``: a selfie as a phone camera writes it: the source reframed (face at 45% of the
  width, bicubic upscale) to 2, 5, 8 or 12 MP in 3:4 portrait, re-encoded at quality 90 (phone
  cameras write 85-95); the 8 and 12 MP ones stored landscape with EXIF Orientation 6, as rear
  and most front cameras do.  ``phone_mix`` is the benchmark's and the decode tests' set.

Face boxes for the crops come from OpenCV's own YuNet (``cv2.FaceDetectorYN`` on the upstream
file in ../shared/models), not from the service's code under test.  ``dev_realworld_set`` is the
set the tests and benchmarks use: the three Silent-Face images (real, print, replay), three real
faces of the verification set (img6 and img17 are the close-ups the reference pass misses even
at their own size) and four frames of the real dev video, each in every condition (110 files).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. "T1@0.55", "img6@0.7", "T1@12MP/200px"
    data: bytes  # encoded file, as a client would upload it
    condition: str  # reframed | small_face | exif_rotated | png_alpha | png16
    label: str = "real"  # real | spoof (the source's label)
    source: str = ""  # the source's name (T1, img6, vid200, ...)


def jpeg(bgr: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def reframe(bgr: np.ndarray, box: Box, fraction: float, size: tuple[int, int] = (1500, 1900)) -> np.ndarray:
    """The face box becomes ``fraction`` of the output width; output is ``size`` (w, h)."""
    x, y, w, h = box
    out_w, out_h = size
    crop_w = w / fraction
    crop_h = crop_w * out_h / out_w
    cx, cy = x + w / 2, y + h / 2
    # The face a bit above the centre, as selfies are framed (forehead nearer the top).
    x0, y0 = int(round(cx - crop_w / 2)), int(round(cy - crop_h * 0.45))
    pad = int(max(crop_w, crop_h)) + 1
    padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[y0 + pad : y0 + pad + int(round(crop_h)), x0 + pad : x0 + pad + int(round(crop_w))]
    return cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)


def small_face(bgr: np.ndarray, box: Box, face_px: int, portrait: bool = False) -> np.ndarray:
    """The source scaled so its face is ``face_px`` wide, centred in a 12 MP frame whose rest
    is the source's own border replicated outwards and blurred (the scene around the subject;
    enlarging the source itself would put a second, giant face in the background)."""
    out_w, out_h = (3000, 4000) if portrait else (4000, 3000)
    s = face_px / box[2]
    scaled = cv2.resize(bgr, (round(bgr.shape[1] * s), round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
    sh, sw = scaled.shape[:2]
    top, left = (out_h - sh) // 2, (out_w - sw) // 2
    frame = cv2.copyMakeBorder(scaled, top, out_h - sh - top, left, out_w - sw - left, cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(frame, (0, 0), 15)
    blurred[top : top + sh, left : left + sw] = scaled
    return blurred


# EXIF orientation -> how the pixels are stored (cv2.rotate code applied to the upright image).
_STORE_ROTATION = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE}


def exif_rotated(bgr: np.ndarray, orientation: int, quality: int = 92) -> bytes:
    """A JPEG that displays as ``bgr`` only when its EXIF Orientation tag is honoured."""
    stored = cv2.rotate(bgr, _STORE_ROTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def png_alpha(bgr: np.ndarray, box: Box) -> bytes:
    """RGBA PNG: opaque inside an ellipse well around the face, fading to transparent corners."""
    h, w = bgr.shape[:2]
    x, y, bw, bh = box
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, rx, ry = x + bw / 2, y + bh / 2, bw * 1.6, bh * 1.9
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    alpha = np.clip((1.3 - d) / 0.3, 0, 1) * 255
    bgra = np.dstack([bgr, alpha.astype(np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    assert ok
    return buf.tobytes()


def png16(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr.astype(np.uint16) * 257)
    assert ok
    return buf.tobytes()


FRACTIONS = (0.4, 0.55, 0.7)  # face width / frame width: the usual selfie framings
SMALL_FACES = (120, 200, 320)  # px face width in a 12 MP frame (a rear-camera photo at arm's length)


def realworld_set(sources: dict[str, tuple[np.ndarray, Box]], labels: dict[str, str] | None = None) -> list[Sample]:
    """Every condition for every named (image, face box) source."""
    out: list[Sample] = []
    for name, (bgr, box) in sources.items():
        label = (labels or {}).get(name, "real")

        def add(suffix: str, data: bytes, condition: str) -> None:
            out.append(Sample(f"{name}{suffix}", data, condition, label, name))

        for f in FRACTIONS:
            add(f"@{f}", jpeg(reframe(bgr, box, f)), "reframed")
        for px in SMALL_FACES:
            add(f"@12MP/{px}px", jpeg(small_face(bgr, box, px), 90), "small_face")
        big = reframe(bgr, box, 0.55)
        for o in (3, 6, 8):
            add(f"@0.55/exif{o}", exif_rotated(big, o), "exif_rotated")
        add("/rgba", png_alpha(bgr, box), "png_alpha")
        add("/png16", png16(bgr), "png16")
    return out


# Megapixels -> (width, height) of a 3:4 portrait photo (common phone sensor sizes).
PHONE_SIZES = {2: (1224, 1632), 5: (1944, 2592), 8: (2448, 3264), 12: (3024, 4032)}
PHONE_FACE_FRACTION = 0.45


def phone_photo(bgr: np.ndarray, box: Box, megapixels: int, quality: int = 90) -> bytes:
    """``bgr`` as a phone selfie of ``megapixels`` (``PHONE_SIZES``), 8 MP and up EXIF-rotated."""
    framed = reframe(bgr, box, PHONE_FACE_FRACTION, PHONE_SIZES[megapixels])
    return exif_rotated(framed, 6, quality) if megapixels >= 8 else jpeg(framed, quality)


def phone_mix(sources: dict[str, tuple[np.ndarray, Box]], labels: dict[str, str] | None = None,
              megapixels: tuple[int, ...] = tuple(PHONE_SIZES)) -> list[Sample]:
    """Every source as a phone photo of every size in ``megapixels``."""
    return [Sample(f"{name}@{mp}MP", phone_photo(bgr, box, mp), "phone_photo", (labels or {}).get(name, "real"), name)
            for name, (bgr, box) in sources.items() for mp in megapixels]


def opencv_face_box(bgr: np.ndarray, yunet_onnx: Path) -> Box:
    """The biggest face by OpenCV's FaceDetectorYN (independent of the service's detectors)."""
    h, w = bgr.shape[:2]
    s = 640 / max(h, w)
    small = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    # The fixed 640x640 export (OpenCV's importer refuses the dynamic one): pad bottom/right.
    small = cv2.copyMakeBorder(small, 0, 640 - small.shape[0], 0, 640 - small.shape[1], cv2.BORDER_CONSTANT)
    det = cv2.FaceDetectorYN.create(str(yunet_onnx), "", (640, 640), 0.6, 0.3, 5000)
    _, faces = det.detect(small)
    if faces is None or not len(faces):
        raise RuntimeError("OpenCV's YuNet found no face in a dev source")
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])[:4]
    return float(x / s), float(y / s), float(fw / s), float(fh / s)


DEV_IMAGES = {"T1": ("images/silentface_image_T1.jpg", "real"), "F1": ("images/silentface_image_F1.jpg", "spoof"),
              "F2": ("images/silentface_image_F2.jpg", "spoof"), "img6": ("verification/deepface_img6.jpg", "real"),
              "img17": ("verification/deepface_img17.jpg", "real"), "img9": ("verification/deepface_img9.jpg", "real")}
DEV_VIDEO, DEV_VIDEO_FRAMES = "videos/jomariya_real_1.mp4", (0, 200, 400, 600)


def dev_sources(media: Path, models: Path) -> tuple[dict[str, tuple[np.ndarray, Box]], dict[str, str]]:
    """(name -> (BGR, face box), name -> label) for the dev images and video frames."""
    import av

    yunet = models / "detection" / "yunet" / "yunet_s_640_640.onnx"
    images = {k: cv2.imread(str(media / p)) for k, (p, _) in DEV_IMAGES.items()}
    labels = {k: lab for k, (_, lab) in DEV_IMAGES.items()}
    with av.open(str(media / DEV_VIDEO)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in DEV_VIDEO_FRAMES:
                images[f"vid{i}"] = frame.to_ndarray(format="bgr24")
                labels[f"vid{i}"] = "real"
            if i >= max(DEV_VIDEO_FRAMES):
                break
    return {k: (bgr, opencv_face_box(bgr, yunet)) for k, bgr in images.items()}, labels


def dev_realworld_set(media: Path, models: Path) -> list[Sample]:
    sources, labels = dev_sources(media, models)
    return realworld_set(sources, labels)


def dev_phone_mix(media: Path, models: Path, megapixels: tuple[int, ...] = tuple(PHONE_SIZES)) -> list[Sample]:
    sources, labels = dev_sources(media, models)
    return phone_mix(sources, labels, megapixels)


DEV_ATTACKS = {"F1": "print", "F2": "replay"}


def write_set(out: Path, media: Path, models: Path, which: str = "realworld") -> Path:
    """The set (``realworld`` or ``phone``: ``dev_phone_mix``) as files plus a ``labels.csv`` that
    ``liveness evaluate`` reads; returns the CSV."""
    out.mkdir(parents=True, exist_ok=True)
    rows = ["file,label,attack,subject,condition"]
    for s in (dev_phone_mix if which == "phone" else dev_realworld_set)(media, models):
        ext = ".png" if s.condition.startswith("png") else ".jpg"
        name = s.name.replace("/", "_").replace("@", "_") + ext
        (out / name).write_bytes(s.data)
        attack = DEV_ATTACKS.get(s.source, "") if s.label == "spoof" else ""
        rows.append(f"{name},{s.label},{attack},{s.source},{s.condition}")
    csv_path = out / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


if __name__ == "__main__":
    import argparse

    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description="Write the real-world framings of the dev media and their labels.csv")
    ap.add_argument("out", type=Path)
    ap.add_argument("--media", type=Path, default=repo.parent / "shared" / "media" / "dev")
    ap.add_argument("--models", type=Path, default=repo.parent / "shared" / "models")
    ap.add_argument("--set", dest="which", choices=("realworld", "phone"), default="realworld")
    a = ap.parse_args()
    print(write_set(a.out, a.media, a.models, a.which))

"""FindFace drop-in over real HTTP: the real ``curl`` binary, keyless, against a served Bento whose
``LIVENESS_ANONYMOUS_ROUTES`` opens FindFace's routes to a named key (docs/COMPATIBILITY.md
"FindFace").  Real models, the real dev video (tests/../shared/media/dev/video_segments.csv: the mp4
is real, GIF frames 33-61 a replay attack) and the real verification photos.

FindFace's ``findface-liveness-api`` listens on ``:18301`` and serves ``POST /v1/video-liveness``
with ``return_photo`` / ``return_normalized`` / ``return_detection`` in the query; its client sends
no credential.  The command lines below point at ``http://127.0.0.1:18301`` as that client does and
only the host is swapped.  The body layout (the video as the raw body) is ours: FindFace's own
usage example was not in the reference material we could read (docs/COMPATIBILITY.md "FindFace")."""

from __future__ import annotations

import base64
import json
import shlex
import sqlite3
import subprocess
from pathlib import Path
from typing import Iterator

import cv2
import pytest

from e2e_conftest import MEDIA, Server, create_key, key_usage, start_server
from tests.video_helpers import gif_segment, read_frames

pytestmark = pytest.mark.e2e

VIDEOS = MEDIA / "videos"
MP4 = VIDEOS / "jomariya_real_1.mp4"  # video_segments.csv: real, frames 0-799
GIF = VIDEOS / "silentface_demo.gif"  # frames 33-61: spoof (replay)
OTHER_PERSON = MEDIA / "verification" / "deepface_img5.jpg"  # identities.csv: group A, not the video's person
FINDFACE_HOST = "http://127.0.0.1:18301"  # where FindFace's client points; the only thing changed
ROUTES = {"/v1/video-liveness": "findface", "/v1/verify": "findface"}


@pytest.fixture(scope="module")
def ff(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One served Bento for the module, FindFace's routes open to the key named ``findface``."""
    work = tmp_path_factory.mktemp("findface")
    db = work / "keys.sqlite3"
    key = create_key(db, 100, name="findface")  # the key anonymous callers are charged to
    other = create_key(db, 100, name="not-findface")
    srv = start_server(db, work, {"LIVENESS_ANONYMOUS_ROUTES": json.dumps(ROUTES)})
    try:
        yield {"server": srv, "db": db, "key": key, "other": other, "dir": work}
    finally:
        srv.stop()


# The client's command lines: FindFace's port, path and flags, no credential, the video as the body.
VIDEO_CALL = ("curl -s -X POST -H 'Content-Type: {content_type}' --data-binary @{video} "
              "'http://127.0.0.1:18301/v1/video-liveness?{query}'")
VERIFY_CALL = "curl -s -X POST -H 'Content-Type: application/json' --data-binary @- 'http://127.0.0.1:18301/v1/verify'"


def curl(server: Server, command: str, *extra: str, stdin: str | None = None) -> tuple[int, dict]:
    """Run ``command`` with the real curl binary, its host swapped for ``server`` (``extra``: more
    curl arguments); -> (status, JSON body)."""
    argv = [a.replace(FINDFACE_HOST, server.url) for a in shlex.split(command)]
    assert argv[0] == "curl" and server.url in argv[-1]
    proc = subprocess.run([*argv, *extra, "-w", "\n%{http_code}"], input=stdin, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    body, status = proc.stdout.rsplit("\n", 1)
    return int(status), json.loads(body)


def video_liveness(server: Server, path: Path, query: str = "return_detection=true",
                   content_type: str = "video/mp4", *extra: str) -> tuple[int, dict]:
    return curl(server, VIDEO_CALL.format(content_type=content_type, video=shlex.quote(str(path)), query=query), *extra)


def verify(server: Server, doc: dict, *extra: str) -> tuple[int, dict]:
    return curl(server, VERIFY_CALL, *extra, stdin=json.dumps(doc))


def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def same_person_jpeg(ff: dict) -> Path:
    """A frame of the dev video far from the one the check picks (its last), as a JPEG photo: the
    verification set holds no photo of the video's person."""
    (frame,) = read_frames(MP4, every=790, limit=2)[1:]
    path = ff["dir"] / "same_person.jpg"
    assert cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


@pytest.fixture(scope="module")
def detection(ff: dict) -> dict:
    """FindFace's call: the real selfie video, keyless, with return_detection."""
    before = key_usage(ff["key"])["used"]
    status, doc = video_liveness(ff["server"], MP4)
    assert status == 200, doc
    return {"doc": doc, "charged": key_usage(ff["key"])["used"] - before}


def test_findface_video_call_works_keyless_and_returns_a_detection_id(ff, detection):
    doc = detection["doc"]
    assert doc["alive"] is True and doc["decision"] == "live" and doc["errors"] == []
    assert doc["average_liveness"] >= doc["liveness_threshold"]
    best = doc["best_face"]
    assert {"liveness", "quality", "bbox", "frame_no", "frame_ts", "detection_id"} <= set(best)
    assert isinstance(best["detection_id"], str) and len(best["detection_id"]) == 32
    assert "photo" not in best and "normalized" not in best  # not asked for
    assert detection["charged"] == 1  # one unit, to the named key, for the verdict and its detection


# FindFace's multipart form of the same call: the clip in a ``sample`` field.
FORM_CALL = "curl -s -X POST -F 'sample=@{video};type=video/mp4' 'http://127.0.0.1:18301/v1/video-liveness'"


def test_findface_multipart_sample_call_works_keyless(ff):
    before = key_usage(ff["key"])["used"]
    status, doc = curl(ff["server"], FORM_CALL.format(video=MP4))
    assert status == 200 and doc["alive"] is True and doc["decision"] == "live", doc
    assert key_usage(ff["key"])["used"] - before == 1


def test_only_the_embedding_is_stored(ff, detection):
    status, doc = video_liveness(ff["server"], MP4, "return_detection=true&return_photo=true")
    assert status == 200 and doc["alive"], doc
    photo = base64.b64decode(doc["best_face"]["photo"])  # the frame the detection was made from
    with sqlite3.connect(ff["db"]) as conn:
        rows = conn.execute("SELECT id, owner, length(blob), body FROM documents WHERE kind = 'detections'").fetchall()
        owner = conn.execute("SELECT key_id FROM api_keys WHERE name = 'findface'").fetchone()[0]
    ids = {detection["doc"]["best_face"]["detection_id"], doc["best_face"]["detection_id"]}
    mine = [r for r in rows if r[0] in ids]
    assert len(mine) == 2
    for _, row_owner, blob_len, body in mine:
        assert row_owner == owner and blob_len == 128 * 4  # MobileFaceNet's float32 embedding, nothing more
        assert set(json.loads(body)) == {"bbox", "model", "quality", "reasons"}
    data = b"".join(p.read_bytes() for p in ff["db"].parent.glob(ff["db"].name + "*"))  # the file, its WAL
    assert photo[:3] == b"\xff\xd8\xff" and not any(photo[i:i + 64] in data for i in range(0, len(photo) - 64, 256))


def test_verify_the_detection_against_the_same_and_another_person(ff, detection, same_person_jpeg):
    srv, detection_id = ff["server"], detection["doc"]["best_face"]["detection_id"]
    before = key_usage(ff["key"])["used"]
    status, same = verify(srv, {"detection_id1": detection_id, "image2": b64_file(same_person_jpeg)})
    assert status == 200, same
    status, other = verify(srv, {"detection_id1": detection_id, "image2": b64_file(OTHER_PERSON)})
    assert status == 200, other
    assert same["is_identical"] is True and other["is_identical"] is False, (same, other)
    assert same["match_confidence"] > other["match_confidence"] and same["threshold"] == other["threshold"]
    assert same["faces"][0]["detection_id"] == detection_id
    assert {m["name"] for m in same["models"]} == {"yunet", "mobilefacenet"}
    assert key_usage(ff["key"])["used"] - before == 2  # one unit per comparison, as with two images


def test_another_keys_call_cannot_use_the_detection_and_is_not_charged(ff, detection, same_person_jpeg):
    detection_id = detection["doc"]["best_face"]["detection_id"]
    before = key_usage(ff["other"])["used"]
    status, doc = verify(ff["server"], {"detection_id1": detection_id, "image2": b64_file(same_person_jpeg)},
                          "-H", f"X-API-Key: {ff['other']}")
    assert (status, doc["error"]["code"], doc["error"]["details"]["field"]) == (404, "detection_not_found", "detection_id1")
    status, doc = verify(ff["server"], {"detection_id1": "0" * 32, "image2": b64_file(same_person_jpeg)})
    assert (status, doc["error"]["code"]) == (404, "detection_not_found")
    assert key_usage(ff["other"])["used"] == before


def test_a_replayed_face_gets_no_detection(ff, tmp_path):
    clip = tmp_path / "replay.gif"
    clip.write_bytes(gif_segment(GIF, 33, 61))
    before = key_usage(ff["key"])["used"]
    status, doc = video_liveness(ff["server"], clip, "return_detection=true&return_photo=true", "image/gif")
    assert status == 200, doc
    assert doc["alive"] is False and [e["code"] for e in doc["errors"]] == ["RejectedByPassiveLiveDetection"]
    assert (doc["best_face"]["detection_id"], doc["best_face"]["detection_reason"]) == (None, "not_alive")
    assert key_usage(ff["key"])["used"] - before == 1  # the spoof verdict, as without the flag


def test_a_caller_that_sends_a_wrong_key_is_refused_and_bad_input_is_not_charged(ff, tmp_path):
    status, doc = video_liveness(ff["server"], MP4, "return_detection=true", "video/mp4", "-H", "X-API-Key: lk_wrong")
    assert (status, doc["error"]["code"]) == (401, "invalid_api_key")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"PK\x03\x04 not a video" * 8)
    before = key_usage(ff["key"])["used"]
    status, doc = video_liveness(ff["server"], junk)
    assert (status, doc["error"]["code"]) == (415, "unsupported_video")
    assert key_usage(ff["key"])["used"] == before

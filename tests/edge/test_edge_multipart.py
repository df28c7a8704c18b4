"""edge/multipart.py: multipart/form-data parsed in memory (a selfie must never be spooled to a
temporary file): field name -> raw bytes, first occurrence wins, boundaries as clients send them,
and malformed framing as the client's ``invalid_request`` (README "Errors"), never ours."""

from __future__ import annotations

import os

import pytest

from edge.multipart import parse_form
from liveness.errors import INVALID_REQUEST, LivenessError
from tests.edge.helpers import Part, jpeg, multipart

IMAGE = jpeg(64, 48)


def test_fields_files_and_binary_bytes_survive_exactly():
    binary = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n" + b"\r\n\r\n"
    body, ct = multipart([
        Part("hash_id", "lk_abc"),
        Part("image", IMAGE, "selfie.jpg", "image/jpeg"),
        Part("blob", binary, "b.bin", "application/octet-stream"),
        Part("empty", b""),
    ])
    assert parse_form(body, ct) == {"hash_id": b"lk_abc", "image": IMAGE, "blob": binary, "empty": b""}


def test_first_occurrence_of_a_field_wins():
    body, ct = multipart([Part("image", b"first"), Part("image", b"second")])
    assert parse_form(body, ct) == {"image": b"first"}


def test_a_part_without_a_name_is_ignored():
    body, ct = multipart([Part(None, b"anonymous"), Part("image", IMAGE)])
    assert parse_form(body, ct) == {"image": IMAGE}


@pytest.mark.parametrize("boundary", [
    "simple", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "--------------------------d74496d66958873e",
    "a'()+_,-./:=?b", "x" * 70,
])
def test_boundaries_as_browsers_curl_and_rfc_2046_allow(boundary):
    body, _ = multipart([Part("image", IMAGE, "a.jpg")], boundary=boundary)
    assert parse_form(body, f"multipart/form-data; boundary={boundary}") == {"image": IMAGE}
    assert parse_form(body, f'multipart/form-data; boundary="{boundary}"') == {"image": IMAGE}


def test_content_type_parameters_and_header_case():
    body, _ = multipart([Part("image", IMAGE)], boundary="B0und")
    assert parse_form(body, "multipart/form-data; charset=utf-8; boundary=B0und") == {"image": IMAGE}
    shouting = body.replace(b"Content-Disposition", b"CONTENT-DISPOSITION")
    assert parse_form(shouting, "multipart/form-data; boundary=B0und") == {"image": IMAGE}
    unquoted = body.replace(b'name="image"', b"name=image")
    assert parse_form(unquoted, "multipart/form-data; boundary=B0und") == {"image": IMAGE}


def test_a_utf8_field_name():
    body, ct = multipart([Part("bild_ä", b"v")])
    assert parse_form(body, ct) == {"bild_ä": b"v"}


def test_an_empty_form():
    body, ct = multipart([])
    assert parse_form(body, ct) == {}


@pytest.mark.parametrize("ct", ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"])
def test_no_boundary_is_invalid_request(ct):
    body, _ = multipart([Part("image", IMAGE)])
    with pytest.raises(LivenessError) as e:
        parse_form(body, ct)
    assert (e.value.kind, e.value.status, e.value.message) == (INVALID_REQUEST, 400, "multipart/form-data without a boundary.")


@pytest.mark.parametrize("body", [
    b"this is not multipart at all",
    b"--B\nContent-Disposition: form-data; name=\"a\"\n\nx\n--B--\n",  # LF line ends: not the wire format
    b"--Bxx\r\n",
])
def test_malformed_framing_is_invalid_request_naming_the_cause(body):
    with pytest.raises(LivenessError) as e:
        parse_form(body, "multipart/form-data; boundary=B")
    assert e.value.kind is INVALID_REQUEST and e.value.message.startswith("Malformed multipart body: ")
    assert e.value.__cause__ is None and e.value.__suppress_context__  # the parser's traceback stays ours


def test_a_wrong_boundary_in_the_header_is_malformed():
    body, _ = multipart([Part("image", IMAGE)], boundary="right")
    with pytest.raises(LivenessError) as e:
        parse_form(body, "multipart/form-data; boundary=wrong")
    assert e.value.kind is INVALID_REQUEST


def test_a_truncated_body_is_malformed_not_an_empty_form():
    body, ct = multipart([Part("image", IMAGE, "a.jpg")])
    with pytest.raises(LivenessError) as e:
        parse_form(body[: len(body) // 2], ct)
    assert e.value.kind is INVALID_REQUEST


@pytest.mark.parametrize("cut", ["headers", "data", "before_closing_dashes", "second_part", "empty"])
def test_a_body_cut_off_anywhere_before_the_closing_boundary_is_malformed(cut):
    body, ct = multipart([Part("hash_id", "lk_1"), Part("image", IMAGE, "a.jpg", "image/jpeg")])
    second = body.index(b'name="image"')
    end = {"headers": second + 5, "data": second + 200, "before_closing_dashes": len(body) - 4,
           "second_part": second - 10, "empty": 0}[cut]
    with pytest.raises(LivenessError) as e:
        parse_form(body[:end], ct)
    assert (e.value.kind, e.value.message) == (
        INVALID_REQUEST, "Malformed multipart body: it ends before the closing boundary.")


def test_the_closing_boundary_without_its_crlf_or_with_an_epilogue_is_complete():
    body, ct = multipart([Part("image", IMAGE, "a.jpg")])
    assert body.endswith(b"--\r\n")
    assert parse_form(body[:-2], ct) == {"image": IMAGE}
    assert parse_form(body + b"an epilogue RFC 2046 allows", ct) == {"image": IMAGE}


def test_nothing_is_written_to_disk(tmp_path, monkeypatch):
    # Starlette spools uploads over 1 MiB to temporary files; ours must not, at any size.
    import tempfile

    def no_temp(*a, **k):
        raise AssertionError("a temporary file was opened")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_temp)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp)
    monkeypatch.setattr(tempfile, "TemporaryFile", no_temp)
    big = os.urandom(3 * 1024 * 1024)
    body, ct = multipart([Part("image", big, "big.jpg")])
    assert parse_form(body, ct)["image"] == big

"""multipart/form-data parsed in memory.

Starlette (and so BentoML) spool uploads over 1 MiB to temporary files; a selfie is biometric
data and must not touch the disk, so we parse the already-bounded body ourselves.  A body must
end with its closing boundary: python-multipart's ``finalize()`` accepts a body cut off anywhere
(a dropped upload would read as a form without the image), so we check that the parser saw it.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from liveness.errors import INVALID_REQUEST, LivenessError


def parse_form(body: bytes, content_type: str) -> dict[str, bytes]:
    """Field name -> raw bytes (first occurrence wins)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise LivenessError(INVALID_REQUEST, "multipart/form-data without a boundary.")
    fields: dict[str, bytes] = {}
    state: dict[str, object] = {"name": None, "chunks": [], "header": b"", "value": b"", "headers": {}, "ended": False}

    def on_part_begin() -> None:
        state["headers"] = {}
        state["chunks"] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] = bytes(state["header"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = bytes(state["value"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_end() -> None:
        state["headers"][bytes(state["header"]).lower()] = bytes(state["value"])  # type: ignore[index]
        state["header"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["chunks"].append(data[start:end])  # type: ignore[union-attr]

    def on_part_end() -> None:
        disposition = state["headers"].get(b"content-disposition", b"")  # type: ignore[union-attr]
        _, opts = parse_options_header(disposition)
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name and name not in fields:
            fields[name] = b"".join(state["chunks"])  # type: ignore[arg-type]

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as e:  # malformed framing is the client's error, never ours
        raise LivenessError(INVALID_REQUEST, f"Malformed multipart body: {e}") from None
    if not state["ended"]:  # cut off before the closing boundary (a truncated upload, or no form at all)
        raise LivenessError(INVALID_REQUEST, "Malformed multipart body: it ends before the closing boundary.")
    return fields

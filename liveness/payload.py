"""The first check every uploaded payload gets: present, not empty, within its byte limit.

Images and videos share it so both refuse in the same order with the same details
(``nbytes``, ``max_bytes``), before anything parses the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from liveness.errors import LivenessError

T = TypeVar("T")


@dataclass(frozen=True)
class PayloadCodes:
    noun: str  # "image", "video": the message's subject
    missing: str
    empty: str
    too_large: str


def check_payload(data: bytes | None, max_bytes: int, codes: PayloadCodes) -> int:
    """-> the payload's size in bytes; raises the kind's missing / empty / too-large error."""
    if data is None:
        raise LivenessError(codes.missing, f"no {codes.noun} was provided", {})
    nbytes = len(data)
    if nbytes == 0:
        raise LivenessError(codes.empty, f"{codes.noun} is empty (0 bytes)", {})
    if nbytes > max_bytes:
        raise LivenessError(
            codes.too_large,
            f"{codes.noun} is {nbytes} bytes; the limit is {max_bytes}",
            {"nbytes": nbytes, "max_bytes": max_bytes},
        )
    return nbytes


def describe_head(head: bytes, magic: tuple[tuple[bytes, str], ...], container: Callable[[bytes], str | None]) -> str | None:
    """What a refused payload looks like, for the error message: a known magic number, else what
    ``container`` recognises in the head, else "text" for plain ASCII, else None."""
    for prefix, name in magic:
        if head.startswith(prefix):
            return name
    return container(head) or ("text" if head.isascii() else None)


def parse_refusing(parse: Callable[[], T], memory: tuple[str, str], broken: tuple[str, str]) -> T:
    """``parse()``, with anything but a LivenessError turned into one: running out of memory into
    ``memory`` (code, message), any other exception (a parser's bug or a payload it chokes on)
    into ``broken``, with the exception's type as ``reason`` - never its text, which may quote
    the payload."""
    try:
        return parse()
    except LivenessError:
        raise
    except MemoryError:
        raise LivenessError(*memory, {}) from None
    except Exception as exc:
        raise LivenessError(*broken, {"reason": type(exc).__name__}) from None

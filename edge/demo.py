"""The browser demo at ``/demo``: plain HTML/JS from liveness/web (no CDN), driving
``/v1/challenge/ws`` with the camera."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parents[1] / "liveness" / "web"

# Everything is served from here; the socket is same-origin ('self' covers ws:/wss: in CSP 3).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=()",
    "Cache-Control": "no-cache",
}


async def demo_page(_: Request) -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


def demo_routes() -> list[BaseRoute]:
    return [
        Route("/demo", demo_page, methods=["GET"]),
        Mount("/demo/assets", app=StaticFiles(directory=WEB), name="demo-assets"),
    ]

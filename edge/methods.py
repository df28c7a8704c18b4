"""ASGI middleware: a known path asked with a method it does not serve is ``405
method_not_allowed`` in the route's own error format, with ``Allow`` naming every method the
path does serve.

Starlette's router answers such a request itself, in plain text, naming only the methods of the
first route it tried (``POST /v1/sessions/{id}`` said ``Allow: GET, HEAD`` though DELETE works
too).  Here the routes of the whole service are consulted at once (``edge.apis.add_middleware``
collects the BentoML APIs and the routes of the mounted Starlette app), before any body is read.
Paths no route knows pass through (the framework's 404), and so does a CORS preflight.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Sequence

from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# (scope, the path's methods in ``Allow`` order) -> the 405 response (it gets the Allow header here)
Refuse = Callable[[Scope, list[str]], Response]

ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allow_order(methods: Iterable[str]) -> list[str]:
    """Methods in the usual order (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, then the rest)."""
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(ORDER)), m))


def http_routes(routes: Iterable[BaseRoute]) -> list[Route]:
    """The plain HTTP routes of a route list (a Mount or a WebSocket route knows its own methods;
    a Route without ``methods`` serves every method, so its path is never refused)."""
    return [r for r in routes if isinstance(r, Route)]


class AllowedMethods:
    def __init__(self, app: Any, routes: Sequence[Route], refuse: Refuse) -> None:
        self.app = app
        self.routes = list(routes)
        self.refuse = refuse

    def allowed(self, scope: Scope) -> list[str] | None:
        """None when a route serves this method and path (or no route knows the path); else the
        methods the path serves."""
        methods: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return None
            if match is Match.PARTIAL:
                methods |= route.methods or set()
        return allow_order(methods) if methods else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _preflight(scope):
            await self.app(scope, receive, send)
            return
        allowed = self.allowed(scope)
        if allowed is None:
            await self.app(scope, receive, send)
            return
        response = self.refuse(scope, allowed)
        response.headers["Allow"] = ", ".join(allowed)
        await response(scope, receive, send)


def _preflight(scope: Scope) -> bool:
    """A CORS preflight (OPTIONS with Access-Control-Request-Method) is CORS middleware's to answer."""
    return scope.get("method") == "OPTIONS" and any(k == b"access-control-request-method" for k, _ in scope["headers"])

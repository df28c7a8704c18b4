"""BentoML's OpenTelemetry middleware is bypassed unless ``http_tracing`` is on
(edge.apis.tracing_config, passed to ``@bentoml.service(tracing=...)`` in service.py): the exclude
list it builds, through OpenTelemetry's own ExcludeList as BentoML does, disables every route."""

from __future__ import annotations

from opentelemetry.util.http import ExcludeList

from edge.apis import tracing_config
from liveness.settings import Settings

URLS = ("http://h:3000/liveness", "http://h:3000/v1/liveness?x=1", "http://h:3000/face/v1.2/detectLiveness-sessions",
        "http://h:3000/api/v1/photoverify", "http://h:3000/socket.io/?EIO=4&transport=polling")


def test_off_by_default_every_url_is_excluded():
    cfg = tracing_config(Settings())
    excluded = ExcludeList(cfg["excluded_urls"])
    assert all(excluded.url_disabled(u) for u in URLS)


def test_on_leaves_bentoml_s_own_tracing_config_alone():
    assert tracing_config(Settings(http_tracing=True)) == {}

"""The edge: every wire the domain (``liveness``) is served on, and nothing else.

FACIA, native, video, sessions and challenge HTTP APIs (``apis``, parsers per API), the Starlette
routes (``routes``: health, admin, session reads, the challenge WebSocket, the demo), gRPC
(``grpc_server``), the credential extractor (``credentials``), the error renderers (``render``),
metrics and the BentoML patch.  The edge may import BentoML, Starlette and gRPC; the domain may
not (tests/test_domain_boundaries.py).
"""

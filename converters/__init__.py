import os

# As in liveness/__init__.py: no ONNX Runtime telemetry files while models are built.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

"""Face liveness (presentation-attack detection): the domain package, free of web frameworks."""

import os

# ONNX Runtime's Linux wheel records usage telemetry (a device id and an event database under
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime) unless this is set before it is imported;
# disable_telemetry_events() afterwards does not stop it (measured with 1.32).  Every liveness
# process, and the Triton server it starts (which inherits the environment), gets it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

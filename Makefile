# Two commands on a fresh machine: `make serve` and `make test` (README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

# Triton backend: a real tritonserver (nvidia-pytriton's, Python backend only) in its own venv
# (numpy<2), serving the Python-backend twin of model_repository.  Ports are overridable.
TRITON_VENV  ?= .venv-triton
TRITON_REPO  ?= .triton/repository
TRITON_HTTP_PORT    ?= 8000
TRITON_GRPC_PORT    ?= 8001
TRITON_METRICS_PORT ?= 8002
TRITON_PINS  := nvidia-pytriton==0.7.0 numpy==1.26.4 onnxruntime==1.32.0
TRITON_STAMP := $(TRITON_VENV)/.installed-$(shell echo '$(TRITON_PINS)' | sha256sum | cut -c1-12)

# gRPC code (docs/GRPC.md) is generated, never committed: edge/_proto is gitignored.
PROTO     := proto/liveness/bws/v1/liveness.proto proto/bioid/services/v1/bws.proto
PROTO_OUT := edge/_proto/SOURCE_SHA256

.PHONY: install proto models serve test bench loadtest clean triton triton-venv triton-repo serve-triton browser

install: $(STAMP) $(PROTO_OUT)

proto: $(PROTO_OUT)

$(PROTO_OUT): $(PROTO) $(STAMP) edge/protogen.py
	$(BIN)/python -m edge.protogen

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $@

# The model repository is a build output: rebuilt when a converter or a pinned source changes.
models: install model_repository/build_report.json

model_repository/build_report.json: $(wildcard converters/*.py) converters/sources.sha256
	$(BIN)/python -m converters.build

serve: models
	$(BIN)/bentoml serve service:Liveness --host 0.0.0.0 --port $(PORT)

# The Triton tests (marker `triton`) run too: they need .venv-triton (~1-2 min to create).
# The browser test (tests/e2e/test_browser.py) needs Debian's chromium (`browser`).
test: models triton-venv browser
	$(BIN)/python -m pytest -q

# Debian's Chromium for the headless browser test (Playwright drives /usr/bin/chromium; it never
# downloads a browser).  A no-op when chromium is installed; otherwise ~20 s of apt-get.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; }

triton: triton-venv triton-repo

triton-venv: $(TRITON_STAMP)

$(TRITON_STAMP):
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q $(TRITON_PINS)
	rm -f $(TRITON_VENV)/.installed-*; touch $@

triton-repo: models $(TRITON_REPO).built

$(TRITON_REPO).built: model_repository/build_report.json converters/triton_python.py
	$(BIN)/python -m converters.triton_python model_repository $(TRITON_REPO)
	touch $@

# tritonserver (explicit model control) and, while it runs, the Bento in front of it; stopping
# the Bento (Ctrl-C) stops Triton.  The Bento reads the same repository Triton serves.
serve-triton: models triton-venv triton-repo
	LIVENESS_BACKEND=triton LIVENESS_TRITON_URL=127.0.0.1:$(TRITON_GRPC_PORT) \
	LIVENESS_MODEL_REPOSITORY=$(TRITON_REPO) LIVENESS_TRITON_VENV=$(abspath $(TRITON_VENV)) \
	$(BIN)/python -m liveness.inference.triton_server serve --repository $(TRITON_REPO) \
		--http-port $(TRITON_HTTP_PORT) --grpc-port $(TRITON_GRPC_PORT) --metrics-port $(TRITON_METRICS_PORT) \
		-- $(BIN)/bentoml serve service:Liveness --host 0.0.0.0 --port $(PORT)

# Benchmarks measure; they are not tests.  Results go to docs/PERFORMANCE.md and docs/perf/*.png
# (~17 min on 2 cores; BENCH_QUICK=1 for a ~3 min smoke run; BENCH_DURATION, BENCH_LEVELS, ...:
# benchmarks/bench_report.py).  Needs an idle machine for meaningful numbers.
BENCH_QUICK ?=
BENCH_FLAGS := $(if $(filter-out 0,$(BENCH_QUICK)),--quick)
BENCH_STAMP := $(VENV)/.bench-$(shell cat requirements-bench.txt requirements.lock | sha256sum | cut -c1-12)

bench: models triton-venv triton-repo $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_report.py $(BENCH_FLAGS)
	$(BIN)/python benchmarks/bench_video.py --write $(BENCH_FLAGS)
	$(BIN)/python benchmarks/bench_challenges.py $(BENCH_FLAGS)
	$(BIN)/python benchmarks/bench_acquisition.py $(BENCH_FLAGS)

$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(BIN)/pip install -q -r requirements-bench.txt -c requirements.lock
	rm -f $(VENV)/.bench-*; touch $@

# Load test one scenario against a freshly served Bento (loadtests/run.py; results in loadtests/results/).
SCENARIO ?= FaciaUser
USERS    ?= 8
DURATION ?= 30s
loadtest: models
	$(BIN)/python loadtests/run.py --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION)

# Accuracy on a labelled set (docs/ACCURACY.md): the serving pipeline, settings and model
# versions, in-process.  make evaluate LABELS=path/to/labels.csv [ARGS="--target-bpcer 0.05 --out DIR"]
LABELS ?=
ARGS   ?=
.PHONY: evaluate
evaluate: models
	@test -n "$(LABELS)" || { echo 'usage: make evaluate LABELS=path/to/labels.csv [ARGS="--target-bpcer 0.05"]' >&2; exit 2; }
	$(BIN)/python -m liveness evaluate "$(LABELS)" $(ARGS)

clean:
	rm -rf model_repository .pytest_cache edge/_proto

# ---- OCI image (docs/DEPLOY.md) ------------------------------------------------------------------
# `make image`: dist/liveness-<version>.oci.tar without any registry or container engine: a Debian
# bookworm rootfs (mmdebstrap) + the runtime wheels downloaded on the host (.image/wheelhouse) +
# model_repository/, committed by buildah (vfs, chroot isolation); then `image-smoke` runs it.
# Not part of `make test` / CI (docs/DEPLOY.md says why).  Needs root or sudo.
IMAGE_VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
IMAGE_TAR     := dist/liveness-$(IMAGE_VERSION).oci.tar
IMAGE_TOOLS   := buildah podman skopeo umoci mmdebstrap

.PHONY: image image-smoke image-tools

image: models image-tools
	IMAGE_PYTHON=$(abspath $(BIN))/python bash image/build.sh
	bash image/smoke.sh $(IMAGE_TAR)

# Unpacks the archive, runs it as its non-root user on a read-only rootfs, scores real dev images.
image-smoke: image-tools
	bash image/smoke.sh $(IMAGE_TAR)

# Debian's buildah, podman, skopeo, umoci and mmdebstrap; a no-op when all are installed.
image-tools:
	@missing=; for t in $(IMAGE_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	[ -z "$$missing" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "image-tools: apt-get install$$missing"; \
		$$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $$missing; }; }
# ---- end of OCI image block ----------------------------------------------------------------------

#!/usr/bin/env bash
# `make image`: the service as an OCI image, built without any container registry or engine
# (docs/DEPLOY.md).  Stages, each re-used when its inputs have not changed:
#
#   1. wheelhouse  .image/wheelhouse   pip download ON THE HOST of the runtime-only set (pyproject's
#                                      dependencies + transitive, pinned and hash-checked against
#                                      requirements.lock): pip cannot reach an index from the build.
#   2. base        .image/cache/base-*.tar   mmdebstrap: Debian bookworm minbase + python3 (3.11).
#   3. rootfs      .image/rootfs       base + venv (pip --no-index from the wheelhouse) + the service
#                                      sources + model_repository/ + generated gRPC code + user 10001.
#   4. image       buildah (vfs, chroot isolation) from scratch, rootfs copied in, configured,
#                                      committed, written as dist/liveness-<version>.oci.tar.
#
# Needs root (mmdebstrap --mode=root, mount, chroot) and the tools of `make image-tools`.
# Knobs (environment): IMAGE_PYC=0|1, IMAGE_DOCKER_ARCHIVE=0|1, IMAGE_EXTRA_REQUIREMENTS,
# IMAGE_BASE_MAX_AGE_DAYS, IMAGE_DEBIAN_MIRROR, IMAGE_DEBIAN_SECURITY_MIRROR, IMAGE_PYTHON.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [[ $(id -u) != 0 ]]; then
    exec sudo --preserve-env "$0" "$@"
fi

NAME=liveness
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
[[ -n $VERSION ]] || { echo "image: no version in pyproject.toml" >&2; exit 1; }
IMAGE_REF=localhost/$NAME:$VERSION
OUT=dist/$NAME-$VERSION.oci.tar
DOCKER_OUT=dist/$NAME-$VERSION.docker.tar
W=$REPO/.image
WHEELHOUSE=$W/wheelhouse
ROOTFS=$W/rootfs
LIVENESS_UID=10001
HTTP_PORT=3000
GRPC_PORT=50051
PY=${IMAGE_PYTHON:-$REPO/.venv/bin/python}   # any CPython 3.11 with pip; only reads, never installs
IMAGE_PYC=${IMAGE_PYC:-1}
IMAGE_DOCKER_ARCHIVE=${IMAGE_DOCKER_ARCHIVE:-0}
# Imported by liveness/inference/triton.py for `backend = "triton"` but not declared in pyproject.
read -r -a EXTRA_REQUIREMENTS <<<"${IMAGE_EXTRA_REQUIREMENTS-tritonclient[grpc,http]}"
SUITE=bookworm
DEBIAN_MIRROR=${IMAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${IMAGE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE_PACKAGES=(python3 ca-certificates)
BASE_MAX_AGE_DAYS=${IMAGE_BASE_MAX_AGE_DAYS:-7}   # then rebuilt, for Debian's security updates
BUILDAH=(buildah --root "$W/storage" --runroot "$W/runroot" --storage-driver vfs)
CONTAINER=liveness-image-build
# docker format: the only one whose config has a HEALTHCHECK (see the commit below)
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs BUILDAH_FORMAT=docker

t_start=$SECONDS
stage_t=$SECONDS
log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
stage_done() { log "$1 done in $((SECONDS - stage_t)) s"; timings+=("$1=$((SECONDS - stage_t))s"); stage_t=$SECONDS; }
timings=()
die() { log "ERROR: $*"; exit 1; }

for tool in mmdebstrap buildah skopeo umoci unshare chroot; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'make image-tools'"
done
[[ -f model_repository/build_report.json ]] || die "model_repository/ not built: run 'make models'"
[[ -x $PY ]] || die "$PY missing: run 'make install' or set IMAGE_PYTHON to a Python 3.11 with pip"
[[ $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') == 3.11 ]] ||
    die "$PY is not Python 3.11 (bookworm's python3 is 3.11: the wheels must be cp311)"
mkdir -p "$W/cache" dist

# Nothing may still be mounted under .image (rootfs-run.sh mounts only in private namespaces).
if findmnt -rn -o TARGET | grep -q "^$W/"; then
    die "something is mounted under $W: $(findmnt -rn -o TARGET | grep "^$W/" | head -n3 | tr '\n' ' ')"
fi

# -- 1. wheelhouse (host) ---------------------------------------------------------------------------------
"$PY" image/runtime_requirements.py roots "${EXTRA_REQUIREMENTS[@]}" >"$W/runtime.in"
pip_version=$("$PY" -m pip --version | awk '{print $2}')
wheel_key=$(cat requirements.lock "$W/runtime.in" image/runtime_requirements.py <(echo "pip $pip_version") |
    sha256sum | cut -c1-16)
if [[ -f $WHEELHOUSE/.key && $(<"$WHEELHOUSE/.key") == "$wheel_key" ]] && ls "$W"/pip/pip-*.whl >/dev/null 2>&1; then
    log "wheelhouse up to date ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
else
    log "wheelhouse: resolving the runtime set against requirements.lock"
    rm -f "$WHEELHOUSE/.key"
    mkdir -p "$WHEELHOUSE" "$W/pip"
    "$PY" -m pip install -q --dry-run --ignore-installed --only-binary=:all: --report "$W/resolve.json" \
        -c requirements.lock -r "$W/runtime.in"
    "$PY" image/runtime_requirements.py pins "$W/resolve.json" requirements.lock >"$W/requirements.txt"
    log "wheelhouse: downloading $(wc -l <"$W/requirements.txt") wheels (hash-checked)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --require-hashes -d "$WHEELHOUSE" -r "$W/requirements.txt"
    rm -f "$W"/pip/*.whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$W/pip" "pip==$pip_version"
    # Drop wheels of an earlier resolution.
    "$PY" - "$WHEELHOUSE" "$W/requirements.txt" <<'EOF'
import re, sys
from pathlib import Path
canon = lambda s: re.sub(r"[-_.]+", "-", s).lower()
wanted = {canon(l.split("==")[0]) + "==" + l.split("==")[1].split()[0] for l in Path(sys.argv[2]).read_text().splitlines()}
for whl in Path(sys.argv[1]).glob("*.whl"):
    name, version = whl.name.split("-")[:2]
    if f"{canon(name)}=={version}" not in wanted:
        whl.unlink()
EOF
    cp "$W/requirements.txt" "$WHEELHOUSE/requirements.txt"
    echo "$wheel_key" >"$WHEELHOUSE/.key"
fi
stage_done wheelhouse

# -- 2. Debian base (mmdebstrap, cached) ---------------------------------------------------------------
MMDEBSTRAP_OPTS=(
    --variant=minbase --mode=root --format=tar
    --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr            # usr-is-merged, not usrmerge+perl
    --aptopt='Acquire::Languages "none"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'          # licences stay
)
SOURCES=(
    "deb $DEBIAN_MIRROR $SUITE main"
    "deb $DEBIAN_MIRROR $SUITE-updates main"
    "deb $SECURITY_MIRROR $SUITE-security main"
)
base_key=$(printf '%s\n' "$SUITE" "${MMDEBSTRAP_OPTS[@]}" "${SOURCES[@]}" | sha256sum | cut -c1-16)
BASE=$W/cache/base-$base_key.tar
if [[ -f $BASE ]] && [[ -z $(find "$BASE" -mtime "+$BASE_MAX_AGE_DAYS") ]]; then
    log "base rootfs cached ($(basename "$BASE"))"
else
    log "base rootfs: mmdebstrap $SUITE minbase + ${BASE_PACKAGES[*]}"
    rm -f "$BASE.tmp"
    mmdebstrap "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "$BASE.tmp" "${SOURCES[@]}" >"$W/mmdebstrap.log" 2>&1 ||
        { tail -n 30 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed (full log: $W/mmdebstrap.log)"; }
    mv "$BASE.tmp" "$BASE"
    find "$W/cache" -name 'base-*.tar' ! -name "$(basename "$BASE")" -delete
fi
stage_done base

# -- 3. rootfs -----------------------------------------------------------------------------------------
log "rootfs: base + venv + service + model_repository"
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
tar -C "$ROOTFS" --numeric-owner -xpf "$BASE"
mkdir -p "$ROOTFS/opt/liveness/app" "$ROOTFS/opt/liveness/bin" "$ROOTFS/opt/liveness/licenses"
# The sources bentofile.yaml packages; not tests/, benchmarks/, converters/, docs/, data/, .venv ...
tar -C "$REPO" --exclude=__pycache__ --exclude='*.py[co]' --exclude=edge/_proto \
    -cf - service.py liveness edge proto model_policy.toml model_repository |
    tar -C "$ROOTFS/opt/liveness/app" --no-same-owner -xf -
MODEL_SOURCES=${LIVENESS_MODEL_SOURCES:-$REPO/../shared/models}
if [[ -d $MODEL_SOURCES/licenses ]]; then      # licence texts of the upstream weights shipped here
    cp "$MODEL_SOURCES"/licenses/*.txt "$ROOTFS/opt/liveness/licenses/"
else
    log "warning: no $MODEL_SOURCES/licenses: the image carries no model licence texts"
fi
image/rootfs-run.sh --tmpfs /tmp \
    --bind "$WHEELHOUSE:/tmp/wheelhouse:ro" --bind "$W/pip:/tmp/pip:ro" \
    --bind "$REPO/image:/tmp/image:ro" \
    --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --env HOME=/tmp --env LANG=C.UTF-8 \
    --env PYTHONDONTWRITEBYTECODE=1 --env BENTOML_HOME=/tmp/bentoml --env BENTOML_DO_NOT_TRACK=True \
    --env ORT_DISABLE_TELEMETRY=1 --env IMAGE_PYC="$IMAGE_PYC" --env LIVENESS_UID="$LIVENESS_UID" \
    "$ROOTFS" /bin/sh /tmp/image/rootfs-setup.sh
rootfs_bytes=$(du -sb "$ROOTFS" | cut -f1)
stage_done rootfs

# -- 4. image (buildah, vfs, no registry) -------------------------------------------------------------
log "image: buildah from scratch -> $OUT"
"${BUILDAH[@]}" rm "$CONTAINER" >/dev/null 2>&1 || true          # a previous run that failed
"${BUILDAH[@]}" rmi -f "$IMAGE_REF" >/dev/null 2>&1 || true
"${BUILDAH[@]}" from --isolation chroot --name "$CONTAINER" scratch >/dev/null
cleanup_container() { "${BUILDAH[@]}" rm "$CONTAINER" >/dev/null 2>&1 || true; }
trap cleanup_container EXIT
mnt=$("${BUILDAH[@]}" mount "$CONTAINER")
tar -C "$ROOTFS" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
"${BUILDAH[@]}" umount "$CONTAINER" >/dev/null

revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || revision+="-dirty"
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
HEALTH_CMD=/opt/liveness/bin/healthcheck
HEALTH_INTERVAL=30s HEALTH_TIMEOUT=5s HEALTH_START=60s HEALTH_RETRIES=3
health_label=$(printf '{"test":["CMD","%s"],"interval":"%s","timeout":"%s","start_period":"%s","retries":%s}' \
    "$HEALTH_CMD" "$HEALTH_INTERVAL" "$HEALTH_TIMEOUT" "$HEALTH_START" "$HEALTH_RETRIES")
"${BUILDAH[@]}" config \
    --os linux --arch amd64 \
    --user "$LIVENESS_UID:$LIVENESS_UID" \
    --workingdir /opt/liveness/app \
    --port "$HTTP_PORT/tcp" --port "$GRPC_PORT/tcp" \
    --volume /data \
    --env PATH=/opt/liveness/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env HOME=/tmp \
    --env PYTHONUNBUFFERED=1 \
    --env PYTHONDONTWRITEBYTECODE=1 \
    --env BENTOML_HOME=/tmp/bentoml \
    --env BENTOML_DO_NOT_TRACK=True \
    --env ORT_DISABLE_TELEMETRY=1 \
    --env LIVENESS_DB_PATH=/data/liveness.sqlite3 \
    --env LIVENESS_MODEL_REPOSITORY=/opt/liveness/app/model_repository \
    --env LIVENESS_MODEL_POLICY_FILE=/opt/liveness/app/model_policy.toml \
    --env LIVENESS_GRPC_PORT="$GRPC_PORT" \
    --cmd "[\"/opt/liveness/venv/bin/bentoml\", \"serve\", \"service:Liveness\", \"--host\", \"0.0.0.0\", \"--port\", \"$HTTP_PORT\"]" \
    --healthcheck "CMD $HEALTH_CMD" \
    --healthcheck-interval "$HEALTH_INTERVAL" --healthcheck-timeout "$HEALTH_TIMEOUT" \
    --healthcheck-start-period "$HEALTH_START" --healthcheck-retries "$HEALTH_RETRIES" \
    --label org.opencontainers.image.title="$NAME" \
    --label org.opencontainers.image.description="On-premises face liveness (presentation-attack detection) service" \
    --label org.opencontainers.image.version="$VERSION" \
    --label org.opencontainers.image.revision="$revision" \
    --label org.opencontainers.image.created="$created" \
    --label io.liveness.base="Debian $SUITE minbase (mmdebstrap) + ${BASE_PACKAGES[*]}" \
    --label io.liveness.healthcheck="$health_label" \
    --created-by "image/build.sh (mmdebstrap rootfs, buildah from scratch)" \
    "$CONTAINER"
# Committed in docker format: the only format with a HEALTHCHECK field.  The OCI archive written from it
# has no such field (OCI image configs cannot carry one), so the probe is also in the label
# io.liveness.healthcheck; IMAGE_DOCKER_ARCHIVE=1 also writes a docker-archive that keeps it.
"${BUILDAH[@]}" commit --quiet --rm --format docker "$CONTAINER" "$IMAGE_REF" >/dev/null
trap - EXIT
rm -f "$OUT.tmp"
"${BUILDAH[@]}" push --quiet "$IMAGE_REF" "oci-archive:$OUT.tmp:$NAME:$VERSION"
mv "$OUT.tmp" "$OUT"
(cd dist && sha256sum "$(basename "$OUT")" >"$(basename "$OUT").sha256")
if [[ $IMAGE_DOCKER_ARCHIVE == 1 ]]; then
    rm -f "$DOCKER_OUT.tmp"
    "${BUILDAH[@]}" push --quiet "$IMAGE_REF" "docker-archive:$DOCKER_OUT.tmp:$NAME:$VERSION"
    mv "$DOCKER_OUT.tmp" "$DOCKER_OUT"
fi
"${BUILDAH[@]}" rmi "$IMAGE_REF" >/dev/null      # the archive is the product; keep no vfs copy around
stage_done image

tar_bytes=$(stat -c %s "$OUT")
{
    echo "image:        $OUT ($(numfmt --to=iec --suffix=B "$tar_bytes"), sha256 $(cut -c1-16 "$OUT.sha256")...)"
    [[ $IMAGE_DOCKER_ARCHIVE == 1 ]] && echo "docker:       $DOCKER_OUT ($(numfmt --to=iec --suffix=B "$(stat -c %s "$DOCKER_OUT")"))"
    echo "rootfs:       $(numfmt --to=iec --suffix=B "$rootfs_bytes") unpacked" \
        "(venv $(du -sh "$ROOTFS/opt/liveness/venv" | cut -f1)," \
        "models $(du -sh "$ROOTFS/opt/liveness/app/model_repository" | cut -f1))"
    echo "revision:     $revision"
    echo "build time:   $((SECONDS - t_start)) s (${timings[*]})"
} | tee "$W/last-build.txt"

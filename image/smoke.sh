#!/usr/bin/env bash
# `make image-smoke` (run by `make image`): the built OCI archive, unpacked as a container engine would,
# started as the image says (its command, environment, working dir and non-root user) in a chroot
# with a read-only root filesystem, a tmpfs /tmp and a /data volume; then a key is made with the
# in-image CLI and real dev images are scored over HTTP.  `podman run` cannot work in this sandbox
# (setrlimit), so image/rootfs-run.sh plays the engine: private mount + PID namespaces, nothing left
# mounted or running afterwards.
#
#   image/smoke.sh [dist/liveness-<version>.oci.tar]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [[ $(id -u) != 0 ]]; then
    exec sudo --preserve-env "$0" "$@"
fi

VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
TAR=${1:-dist/liveness-$VERSION.oci.tar}
DOCKER_TAR=${TAR%.oci.tar}.docker.tar
S=$REPO/.image/smoke
MEDIA=${LIVENESS_MEDIA_DIR:-$REPO/../shared/media}
IMAGES=$MEDIA/dev/images
CHECK=(python3 "$REPO/image/smoke_checks.py")
START_TIMEOUT=${SMOKE_START_TIMEOUT:-300}

log() { printf '[smoke %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -f $TAR ]] || die "no $TAR: run 'make image'"
for tool in skopeo umoci unshare chroot python3; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'make image-tools'"
done
[[ -f $IMAGES/silentface_image_T1.jpg && -f $IMAGES/silentface_image_F1.jpg ]] || die "dev images missing in $IMAGES"

server_pid=""
alive() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }   # zombies are dead
cleanup() {
    local rc=$?
    if [[ -n $server_pid ]] && alive "$server_pid"; then
        kill -KILL "$server_pid" 2>/dev/null || true   # unshare --kill-child: its whole PID namespace dies
        wait "$server_pid" 2>/dev/null || true
    fi
    if findmnt -rn -o TARGET | grep -q "^$S/"; then
        log "something is still mounted under $S; not deleting it"
    else
        rm -rf "$S"
    fi
    ((rc == 0)) || log "FAILED (exit $rc)"
}
trap cleanup EXIT
rm -rf "$S"
mkdir -p "$S/data"

log "unpacking $TAR (skopeo copy -> OCI layout, umoci unpack -> runtime bundle)"
skopeo copy --quiet "oci-archive:$TAR" "oci:$S/layout:smoke"
umoci unpack --image "$S/layout:smoke" "$S/bundle" >/dev/null
ROOTFS=$S/bundle/rootfs

log "image config"
docker_arg=()
[[ -f $DOCKER_TAR && $DOCKER_TAR -nt $TAR ]] || DOCKER_TAR=""
[[ -n $DOCKER_TAR ]] && docker_arg=("$DOCKER_TAR")
"${CHECK[@]}" image "$S/layout" "$S/bundle" "$S" "${docker_arg[@]}"
user=$(<"$S/run.user")
cwd=$(<"$S/run.cwd")
mapfile -t image_env <"$S/run.env"

if command -v podman >/dev/null; then   # a real engine accepts the archive (running it is what fails here)
    PODMAN=(podman --root "$S/podman/root" --runroot "$S/podman/run" --storage-driver vfs)
    loaded=$("${PODMAN[@]}" load -q -i "$TAR" 2>&1 | tail -n1)
    inspect=$("${PODMAN[@]}" image inspect --format '{{.Config.User}} {{len .Config.ExposedPorts}} ports' \
        "localhost/liveness:$VERSION")
    "${PODMAN[@]}" rmi -a -f >/dev/null
    echo "  ok  podman load: ${loaded} (user ${inspect})"
fi

log "image contents"
"${CHECK[@]}" rootfs "$ROOTFS" "$MEDIA" "$REPO/tests"
missing=$(image/rootfs-run.sh --ro --tmpfs /tmp --env PATH=/usr/bin:/bin "$ROOTFS" /bin/sh -c \
    'find /opt/liveness/venv -name "*.so*" -type f ! -path "*.libs/*" -exec ldd {} + 2>&1 | grep "not found" | sort -u' || true)
[[ -z $missing ]] || die "shared libraries missing in the image: $missing"
echo "  ok  every extension module in the venv finds its shared libraries (ldd)"

# One engine-like run: the image's env, user and cwd; read-only rootfs; /tmp tmpfs; /data volume.
chown "$user" "$S/data"
chmod 0750 "$S/data"
env_args=()
for kv in "${image_env[@]}"; do env_args+=(--env "$kv"); done
ENGINE=(image/rootfs-run.sh --ro --user "$user" --cwd "$cwd" --tmpfs /tmp --bind "$S/data:/data" "${env_args[@]}")
in_image() { "${ENGINE[@]}" "$@"; }

read -r HTTP_PORT GRPC_PORT < <("${CHECK[@]}" free-ports 2)
mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))))' "$S/run.args")
for i in "${!args[@]}"; do
    if [[ ${args[i]} == --port ]]; then args[i + 1]=$HTTP_PORT; fi
done
log "starting: ${args[*]} (HTTP :$HTTP_PORT, gRPC :$GRPC_PORT, as $user, read-only rootfs)"
"${ENGINE[@]}" --env "LIVENESS_GRPC_PORT=$GRPC_PORT" "$ROOTFS" -- "${args[@]}" >"$S/server.log" 2>&1 &
server_pid=$!   # unshare itself (rootfs-run.sh execs it); the server is its child, PID 1 of the namespace
BASE=http://127.0.0.1:$HTTP_PORT
if ! "${CHECK[@]}" wait "$BASE/status_check" "$START_TIMEOUT" "$server_pid"; then
    tail -n 40 "$S/server.log" >&2
    exit 1
fi

log "service"
"${CHECK[@]}" get "$BASE/status_check" 200 "Service is live"
"${CHECK[@]}" get "$BASE/readyz" 200
"${CHECK[@]}" get "$BASE/healthz" 200
"${CHECK[@]}" tcp "$GRPC_PORT"
in_image "$ROOTFS" -- /opt/liveness/bin/healthcheck "$HTTP_PORT"
echo "  ok  the image's health probe passes"
"${CHECK[@]}" procs "$ROOTFS" "${user%%:*}"

log "API key from the in-image CLI, then real images"
key=$(in_image "$ROOTFS" -- liveness keys create --name smoke --limit 100 | tail -n1)
[[ $key == lk_* ]] || die "liveness keys create printed no key: $key"
echo "  ok  liveness keys create -> ${key:0:8}..."
"${CHECK[@]}" liveness "$BASE" "$key" "$IMAGES/silentface_image_T1.jpg" live
"${CHECK[@]}" liveness "$BASE" "$key" "$IMAGES/silentface_image_F1.jpg" spoof
usage=$(in_image "$ROOTFS" -- liveness keys usage smoke)
grep -q '^used: 4$' <<<"$usage" || die "the CLI does not see the 4 charged requests: $usage"
echo "  ok  liveness keys usage smoke -> used: 4 (server and CLI share /data)"

log "stopping the server (SIGTERM)"
# As `docker stop` / the kubelet do: SIGTERM to the container's PID 1 (the bentoml arbiter).
init_pid=$(awk '{print $1}' "/proc/$server_pid/task/$server_pid/children")
kill -TERM "$init_pid"
stop_t=$SECONDS
for _ in $(seq 60); do alive "$server_pid" || break; sleep 0.5; done
! alive "$server_pid" || die "the server did not stop within 30 s of SIGTERM"
wait "$server_pid" || true
echo "  ok  the server stopped $((SECONDS - stop_t)) s after SIGTERM"
if grep -qiE 'read-only file system|permission denied' "$S/server.log"; then
    grep -iE 'read-only file system|permission denied' "$S/server.log" | head -n5 >&2
    die "the service tried to write outside /data and /tmp"
fi
echo "  ok  no write attempt outside /data and /tmp in the server log"
log "image smoke test passed: $TAR"

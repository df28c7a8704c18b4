#!/bin/sh
# Runs INSIDE the image rootfs (chrooted by image/build.sh through image/rootfs-run.sh, as root, with
# the wheelhouse bind-mounted read-only at /tmp/wheelhouse and pip's own wheel at /tmp/pip; /tmp is a
# tmpfs, so nothing mounted or written there stays in the image).  No network is needed or used.
set -eu

APP=/opt/liveness/app
VENV=/opt/liveness/venv
SITE=$VENV/lib/python3.11/site-packages
UID_GID=${LIVENESS_UID:-10001}
PYC=${IMAGE_PYC:-1}

# -- Python: Debian's python3 (3.11, the host's cp311 wheels) in a venv without pip ------------------
python3 -m venv --without-pip "$VENV"
set -- /tmp/pip/pip-*.whl
PIP="$VENV/bin/python $1/pip"   # pip runs from its wheel and is not installed into the image
$PIP install --no-index --find-links /tmp/wheelhouse --only-binary=:all: --require-hashes \
    --no-cache-dir --no-compile --disable-pip-version-check --root-user-action=ignore \
    --no-warn-script-location -q -r /tmp/wheelhouse/requirements.txt
$PIP check --disable-pip-version-check
rm -f "$VENV"/bin/Activate.ps1 "$VENV"/bin/activate.csh "$VENV"/bin/activate.fish

# -- the service: its sources are on the venv's path; the `liveness` admin CLI ------------------------
echo "$APP" >"$SITE/liveness-app.pth"
cat >"$VENV/bin/liveness" <<EOF
#!$VENV/bin/python
import sys

from liveness.cli import main

sys.exit(main())
EOF
chmod 0755 "$VENV/bin/liveness"

# gRPC code, generated here once (grpcio-tools): at run time protogen finds it up to date and the
# service never writes into its own code directory (the smoke test runs with a read-only rootfs).
cd "$APP"
"$VENV/bin/python" -m edge.protogen
"$VENV/bin/python" -c "import service" >/dev/null   # everything the service imports is there

# Container health probe (Docker HEALTHCHECK / podman --health-cmd): system python, isolated mode,
# no site-packages, so a probe costs ~40 ms.
cat >/opt/liveness/bin/healthcheck <<'EOF'
#!/usr/bin/python3 -I
"""Exit 0 when the service on 127.0.0.1:PORT (default 3000) answers GET /readyz with 200."""
import sys
import urllib.request

port = sys.argv[1] if len(sys.argv) > 1 else "3000"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
EOF
chmod 0755 /opt/liveness/bin/healthcheck

# -- bytecode ----------------------------------------------------------------------------------------
# The rootfs is read-only for the non-root user, so Python can never cache bytecode at run time: with
# IMAGE_PYC=1 (default) it is compiled here once (unchecked-hash: valid whatever the file mtimes);
# with IMAGE_PYC=0 there is none and every process start compiles what it imports.
find "$VENV" "$APP" -name __pycache__ -type d -prune -exec rm -rf {} +
if [ "$PYC" = 1 ]; then
    "$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$SITE" "$APP" >/dev/null
else
    find / -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
fi

# -- the non-root user and the data volume -----------------------------------------------------------
groupadd --gid "$UID_GID" liveness
useradd --no-log-init --uid "$UID_GID" --gid "$UID_GID" --home-dir /nonexistent \
    --no-create-home --shell /usr/sbin/nologin liveness
install -d -o "$UID_GID" -g "$UID_GID" -m 0750 /data

# -- leaner, and nothing from the build host -----------------------------------------------------------
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    /root/.cache /root/.python_history
find /var/log -type f -delete
rm -f /etc/resolv.conf                    # the build host's; container engines provide their own
echo liveness >/etc/hostname
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
chmod -R go+rX,go-w /opt/liveness

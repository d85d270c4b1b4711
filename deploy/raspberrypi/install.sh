#!/usr/bin/env bash
# Install (or update, or roll back) the MANET field agent on a Raspberry Pi.
#
#   sudo deploy/raspberrypi/install.sh [--interface wlan0] [--release NAME]
#   sudo deploy/raspberrypi/install.sh --rollback
#
# What it does, idempotently:
#   - creates the system user `manet` (no login, no home) in the groups bluetooth and netdev
#     (BlueZ's D-Bus policy lets the bluetooth group use the adapter; netdev may talk to
#     wpa_supplicant's control socket);
#   - installs the package into a new venv /opt/manet-agent/releases/NAME and points
#     /opt/manet-agent/current at it (an update is a new release; a rollback points back);
#   - writes /etc/manet-agent/agent.toml from the example if there is none (never overwrites);
#   - creates the node key /var/lib/manet-agent/node.key (0600, owned by manet) if missing;
#   - installs the hardened systemd unit and (on a live system) enables and (re)starts it.
#
# Options for packaging and tests:
#   --root DIR     install into DIR instead of / (no systemctl, users written to DIR/etc)
#   --source DIR   project source to pip-install (default: this repository)
#   --python PY    interpreter for the venv (default: python3)
#   --skip-pip     create the venv without installing the package (offline tests)
#   --keep N       releases to keep (default 3)
set -euo pipefail

ROOT=/
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=python3
RELEASE=""
INTERFACE=wlan0
SKIP_PIP=0
ROLLBACK=0
KEEP=3
USER_NAME=manet

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?}"; shift 2 ;;
        --source) SRC="${2:?}"; shift 2 ;;
        --python) PYTHON="${2:?}"; shift 2 ;;
        --release) RELEASE="${2:?}"; shift 2 ;;
        --interface) INTERFACE="${2:?}"; shift 2 ;;
        --skip-pip) SKIP_PIP=1; shift ;;
        --rollback) ROLLBACK=1; shift ;;
        --keep) KEEP="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$INTERFACE" in *[!A-Za-z0-9_.-]*|"") die "bad interface name: $INTERFACE" ;; esac
case "$RELEASE" in *[!A-Za-z0-9_.-]*) die "bad release name: $RELEASE" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"

R="${ROOT%/}"
LIVE=0
[ -z "$R" ] && LIVE=1
OPT="$R/opt/manet-agent"
ETC="$R/etc/manet-agent"
STATE="$R/var/lib/manet-agent"
UNIT="$R/etc/systemd/system/manet-agent.service"

switch_current() {  # atomically point $OPT/current at releases/$1
    ln -sfn "releases/$1" "$OPT/current.new"
    mv -Tf "$OPT/current.new" "$OPT/current"
    log "current release: $1"
}

restart_service() {
    if [ "$LIVE" -eq 1 ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload
        systemctl enable manet-agent.service
        systemctl restart manet-agent.service
        log "manet-agent.service (re)started; logs: journalctl -u manet-agent -f"
    fi
}

if [ "$ROLLBACK" -eq 1 ]; then
    [ -L "$OPT/current" ] || die "nothing installed in $OPT"
    now="$(basename "$(readlink "$OPT/current")")"
    previous="$(ls -1 "$OPT/releases" | sort | grep -B1 -x -F "$now" | head -n1)"
    [ -n "$previous" ] && [ "$previous" != "$now" ] || die "no release older than $now"
    switch_current "$previous"
    restart_service
    exit 0
fi

# 1. The service user.
prefix_args=()
[ "$LIVE" -eq 0 ] && prefix_args=(--prefix "$ROOT")
if ! grep -q "^$USER_NAME:" "$R/etc/passwd"; then
    useradd "${prefix_args[@]}" --system --user-group --no-create-home \
        --home-dir /var/lib/manet-agent --shell /usr/sbin/nologin \
        --comment "MANET field agent" "$USER_NAME"
    log "created system user $USER_NAME"
fi
for group in bluetooth netdev; do
    if grep -q "^$group:" "$R/etc/group"; then
        usermod "${prefix_args[@]}" --append --groups "$group" "$USER_NAME"
    fi
done
uid="$(awk -F: -v u="$USER_NAME" '$1 == u {print $3}' "$R/etc/passwd")"
gid="$(awk -F: -v u="$USER_NAME" '$1 == u {print $4}' "$R/etc/passwd")"

# 2. A new release in its own venv.
[ -n "$RELEASE" ] || RELEASE="$(date -u +%Y%m%d%H%M%S)"
REL="$OPT/releases/$RELEASE"
[ -e "$REL" ] && die "release $RELEASE exists already"
install -d -m 0755 "$OPT/releases"
if [ "$SKIP_PIP" -eq 1 ]; then
    "$PYTHON" -m venv --without-pip "$REL"
else
    "$PYTHON" -m venv "$REL"
    "$REL/bin/pip" install --quiet --upgrade pip
    "$REL/bin/pip" install --quiet "$SRC"
fi
install -d -m 0755 "$REL/share"
install -m 0644 "$HERE/README.md" "$HERE/agent.toml" "$REL/share/"
switch_current "$RELEASE"
ls -1 "$OPT/releases" | sort | head -n "-$KEEP" | while read -r old; do
    [ "$old" = "$RELEASE" ] || rm -rf "${OPT:?}/releases/$old"
done

# 3. Configuration (kept across updates).
install -d -m 0750 -o 0 -g "$gid" "$ETC"
if [ ! -e "$ETC/agent.toml" ]; then
    sed -e "s/^interface = \"wlan0\"/interface = \"$INTERFACE\"/" "$HERE/agent.toml" \
        > "$ETC/agent.toml.new"
    chmod 0640 "$ETC/agent.toml.new"
    chown "0:$gid" "$ETC/agent.toml.new"
    mv -f "$ETC/agent.toml.new" "$ETC/agent.toml"
    log "wrote $ETC/agent.toml (edit probe_host and the interfaces)"
fi

# 4. State directory and node key (kept across updates).
install -d -m 0700 -o "$uid" -g "$gid" "$STATE"
if [ ! -e "$STATE/node.key" ]; then
    if [ -x "$REL/bin/manet-agent" ]; then
        "$REL/bin/manet-agent" keygen --out "$STATE/node.key" >/dev/null
    else  # the same PKCS#8 PEM Ed25519 key, without the package
        (umask 077 && openssl genpkey -algorithm ed25519 -out "$STATE/node.key")
    fi
    chmod 0600 "$STATE/node.key"
    chown "$uid:$gid" "$STATE/node.key"
    log "created the node key $STATE/node.key"
fi

# 5. The systemd unit.
install -d -m 0755 "$(dirname "$UNIT")"
install -m 0644 "$HERE/manet-agent.service" "$UNIT"
restart_service
log "installed release $RELEASE into ${ROOT}"

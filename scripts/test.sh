#!/usr/bin/env bash
# Sets up (packages, release build) and runs every test: unit tests without a mount,
# then the mounted integration tests (which need root and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="/opt/swift/usr/bin:$PATH"

echo "== module layers (scripts/check-layers.py)"
python3 scripts/check-layers.py

echo "== unit tests (swift test)"
swift test

echo "== mounted tests (pytest Integration)"
python3 -m pytest Integration -q -p no:cacheprovider "$@"

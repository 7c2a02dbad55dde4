#!/usr/bin/env bash
# Writes what is generated from the command-line definitions into OUTDIR (default
# .build/extras): the man pages (man/snapfs.1 and one per command, by swift-argument-parser's
# generate-manual plugin) and the shell completions (completions/snapfs.bash, _snapfs for
# zsh, snapfs.fish). Needs a release build (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
out="${1:-.build/extras}"
snapfs=".build/release/snapfs"
[ -x "$snapfs" ] || { echo "extras.sh: build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$out/man" "$out/completions"
swift package --allow-writing-to-package-directory generate-manual --multi-page \
    --section 1 --output-directory "$out/man" >/dev/null
"$snapfs" --generate-completion-script bash > "$out/completions/snapfs.bash"
"$snapfs" --generate-completion-script zsh > "$out/completions/_snapfs"
"$snapfs" --generate-completion-script fish > "$out/completions/snapfs.fish"
echo "man pages in $out/man, completions in $out/completions"

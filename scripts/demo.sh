#!/usr/bin/env bash
# Sets up snapfs, mounts a demo directory, writes through it with coreutils and sqlite3,
# takes a snapshot by the control file and lets SQLite commits take their own, shows the
# snapshots (list, diff, a database snapshot opened read-only), and unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
snapfs="$PWD/.build/release/snapfs"

demo=${SNAPFS_DEMO_DIR:-/tmp/snapfs-demo}
backing="$demo/data"
mnt="$demo/mnt"
mkdir -p "$backing" "$mnt"
if mountpoint -q "$mnt"; then "$snapfs" unmount "$mnt"; fi

echo "== snapfs mount $backing $mnt"
"$snapfs" mount "$backing" "$mnt"
trap '"$snapfs" unmount "$mnt" 2>/dev/null || true' EXIT
grep " $mnt " /proc/self/mounts

echo "== writing files through the mount, then a snapshot by the control file"
echo "hello from $(date -u +%FT%TZ)" > "$mnt/hello.txt"
mkdir -p "$mnt/notes"
seq 1 1000 > "$mnt/notes/numbers.txt"
ln -sf hello.txt "$mnt/latest"
echo snapshot demo > "$mnt/.snapfs-control"
first=$("$snapfs" list "$mnt" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["name"])')
echo "snapshot: $first"

echo "== changing the tree; what changed since $first"
echo "a second line" >> "$mnt/hello.txt"
rm "$mnt/notes/numbers.txt"
echo "new" > "$mnt/notes/new.txt"
"$snapfs" diff "$mnt" "$first"

echo "== three SQLite transactions (WAL mode): snapshots of app.db at its commits"
echo "   (by default paced by what a snapshot costs: commits close together share the next"
echo "   snapshot, and the final state always gets one; --sqlite-min-interval 0: every commit)"
sqlite3 "$mnt/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS visits(id INTEGER PRIMARY KEY, at TEXT);" >/dev/null
for i in 1 2 3; do sqlite3 "$mnt/app.db" "INSERT INTO visits(at) VALUES (datetime('now'))"; done
for _ in $(seq 50); do "$snapfs" status "$mnt" | grep -q '^sqlite-pending: 0$' && break; sleep 0.1; done
"$snapfs" list "$mnt"

echo "== each database snapshot opens read-only with plain sqlite3 and holds a commit's rows"
for snap in $("$snapfs" list "$mnt" --json | python3 -c 'import json,sys; [print(d["name"]) for d in json.load(sys.stdin) if d.get("sqlite")]'); do
    echo "$snap: $(sqlite3 "$mnt/.snapshots/$snap/app.db" 'SELECT count(*) FROM sqlite_master WHERE name = "visits"') table, $(sqlite3 "$mnt/.snapshots/$snap/app.db" 'SELECT count(*) FROM visits' 2>/dev/null || echo 0) rows"
done
"$snapfs" versions "$mnt" app.db

echo "== .snapshots is read-only"
if echo x > "$mnt/.snapshots/$first/hello.txt" 2>/dev/null; then echo "unexpected: the write succeeded"; exit 1; else echo "write under .snapshots refused: read-only file system"; fi

echo "== status"
"$snapfs" status "$mnt"
"$snapfs" unmount "$mnt"
trap - EXIT
echo "== unmounted; the snapshots stay in $backing/.snapshots, readable without snapfs:"
ls "$backing/.snapshots"

#!/usr/bin/env bash
# Builds a Debian package of snapfs, snapfs_VERSION_ARCH.deb: the files scripts/install.sh
# installs, under /usr (the mount helper in /usr/sbin, the unit in /usr/lib/systemd/system),
# with the binary's library dependencies as dpkg-shlibdeps reads them and fuse3 for
# fusermount3. The binary has the Swift runtime linked in: the package installs on a
# machine without Swift. docs/install.md describes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

usage() {
    cat <<'USAGE'
Usage: scripts/build-deb.sh [--out DIR] [--no-build]

Builds snapfs_VERSION_ARCH.deb with dpkg-deb --build --root-owner-group.
  --out DIR    where to write the package (default .build-static/deb)
  --no-build   package what scripts/install.sh already built in .build-static/
  -h, --help   this text
The Maintainer field is "$DEBFULLNAME <$DEBEMAIL>" when those are set.
USAGE
}

fail() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

out=.build-static/deb
build=()
while [ $# -gt 0 ]; do
    case $1 in
        --out)
            [ $# -ge 2 ] && [ -n "$2" ] || fail "--out needs a directory (see --help)"
            out=$2
            shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        --no-build) build=(--no-build); shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail "unknown argument '$1' (see --help)" ;;
    esac
done
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install dpkg-dev binutils gzip)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

# The files, as scripts/install.sh lays them out for a package.
scripts/install.sh "${build[@]}" --destdir "$root" --prefix /usr \
    --mount-helper-dir /usr/sbin --unit-dir /usr/lib/systemd/system >"$work/install.log" 2>&1 \
    || { cat "$work/install.log" >&2; fail "scripts/install.sh failed"; }
# As Debian packages do: no debug sections (the symbol table stays, for backtraces), man
# pages compressed.
strip --strip-debug "$root/usr/bin/snapfs"
gzip -9n "$root"/usr/share/man/man1/*.1

version=$("$root/usr/bin/snapfs" --version) || fail "the binary does not run: $root/usr/bin/snapfs --version"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || fail "'$version' (snapfs --version) is not a Debian version"
arch=$(dpkg --print-architecture)

# dpkg-shlibdeps wants a debian/control naming the package, and runs from beside it.
mkdir -p "$work/src/debian"
printf 'Source: snapfs\n\nPackage: snapfs\nArchitecture: any\n' > "$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/snapfs" 2>"$work/shlibdeps.log") \
    || { cat "$work/shlibdeps.log" >&2; fail "dpkg-shlibdeps failed"; }
libraries=${shlibs#shlibs:Depends=}
[ -n "$libraries" ] && [ "$libraries" != "$shlibs" ] || fail "dpkg-shlibdeps printed no dependencies: $shlibs"
case $libraries in
    *libswift*) fail "the binary needs the Swift runtime as a library: $libraries" ;;
esac

mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: snapfs
Version: $version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-snapfs developers} <${DEBEMAIL:-snapfs@localhost}>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $libraries, fuse3
Recommends: restic
Suggests: sqlite3
Section: admin
Priority: optional
Description: FUSE filesystem that snapshots a directory at its consistent points
 snapfs mounts a directory through FUSE and snapshots it on a schedule, on
 demand and at every SQLite commit, keeping the snapshots under
 MOUNT/.snapshots. It lists, compares, restores and prunes them, and can
 replicate them to a restic repository (restic recommended for that).
 .
 Mount with 'snapfs mount BACKING MOUNTPOINT', 'mount -t fuse.snapfs', an
 /etc/fstab line, or the systemd unit snapfs@NAME (/etc/snapfs/NAME.conf).
CONTROL

mkdir -p "$out"
deb="$out/snapfs_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"

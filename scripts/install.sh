#!/usr/bin/env bash
# Installs snapfs: the binary with the Swift runtime linked in (it needs only glibc and
# libfuse3 at run time), its man pages, bash/zsh/fish completions, the systemd unit
# snapfs@.service and mount(8)'s helper mount.fuse.snapfs. docs/install.md says what goes
# where. Run it again to update: every file is replaced, nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

usage() {
    cat <<'USAGE'
Usage: scripts/install.sh [OPTIONS]

Builds snapfs with the Swift runtime linked in (swift build -c release
--static-swift-stdlib, in .build-static/) and installs it with its man pages,
shell completions, systemd unit and mount(8) helper.

Options (each also read from the environment variable in capitals):
  --prefix DIR            where to install (PREFIX; default /usr/local)
  --destdir DIR           stage under DIR instead of / (DESTDIR; for packaging):
                          files go to DIR/PREFIX/..., and refer to PREFIX/...
  --mount-helper-dir DIR  where mount(8) finds mount.fuse.snapfs (MOUNT_HELPER_DIR;
                          default /sbin: mount(8) looks only there)
  --unit-dir DIR          systemd unit directory (UNIT_DIR; default PREFIX/lib/systemd/system)
  --no-build              install what is already built in .build-static/ (no Swift needed)
  --uninstall             remove the files an install with the same options put in place
  -h, --help              this text

Examples:
  sudo scripts/install.sh                          # /usr/local/bin/snapfs, /sbin/mount.fuse.snapfs, ...
  scripts/install.sh --destdir /tmp/stage --prefix /usr --no-build
  sudo scripts/install.sh --uninstall
USAGE
}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
helper_dir=${MOUNT_HELPER_DIR:-/sbin}
unit_dir=${UNIT_DIR:-}
build=1
action=install
while [ $# -gt 0 ]; do
    case $1 in
        --prefix|--destdir|--mount-helper-dir|--unit-dir)
            [ $# -ge 2 ] && [ -n "$2" ] || fail "$1 needs a directory (see --help)"
            case $1 in
                --prefix) prefix=$2 ;;
                --destdir) destdir=$2 ;;
                --mount-helper-dir) helper_dir=$2 ;;
                --unit-dir) unit_dir=$2 ;;
            esac
            shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --mount-helper-dir=*) helper_dir=${1#*=}; shift ;;
        --unit-dir=*) unit_dir=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --uninstall) action=uninstall; shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail "unknown argument '$1' (see --help)" ;;
    esac
done
unit_dir=${unit_dir:-$prefix/lib/systemd/system}
for dir in "$prefix" "$helper_dir" "$unit_dir"; do
    case $dir in
        *[!A-Za-z0-9._/+-]*) fail "'$dir' has a character other than letters, digits and ._/+-: the unit and the mount helper name these paths unquoted" ;;
        /*) ;;
        *) fail "'$dir' is not an absolute path: --prefix, --mount-helper-dir and --unit-dir name where the files will be at run time" ;;
    esac
done
if [ -n "$destdir" ]; then
    case $destdir in /*) ;; *) destdir="$PWD/$destdir" ;; esac
    destdir=${destdir%/}
fi
prefix=${prefix%/}

# Where each file goes. Debian's zsh reads /usr/share/zsh/vendor-completions for packages,
# site-functions elsewhere (/usr/local/share/zsh/site-functions is on its default fpath).
bin="$prefix/bin/snapfs"
man_dir="$prefix/share/man/man1"
bash_completion="$prefix/share/bash-completion/completions/snapfs"
if [ "$prefix" = /usr ]; then zsh_completion=/usr/share/zsh/vendor-completions/_snapfs
else zsh_completion="$prefix/share/zsh/site-functions/_snapfs"; fi
fish_completion="$prefix/share/fish/vendor_completions.d/snapfs.fish"
unit="$unit_dir/snapfs@.service"
helper="$helper_dir/mount.fuse.snapfs"

# What the build leaves in .build-static/ (the same paths scripts/build-deb.sh uses).
built=.build-static/release/snapfs
extras=.build-static/extras

if [ "$action" = uninstall ]; then
    removed=0
    for target in "$destdir$bin" "$destdir$bash_completion" "$destdir$zsh_completion" "$destdir$fish_completion" \
                  "$destdir$unit" "$destdir$helper" "$destdir$man_dir"/snapfs.1 "$destdir$man_dir"/snapfs.*.1; do
        # The man glob stays unexpanded when it matches nothing.
        if [ -e "$target" ] || [ -L "$target" ]; then
            rm -f -- "$target" || fail "cannot remove $target"
            echo "removed $target"
            removed=$((removed + 1))
        fi
    done
    echo "install.sh: $removed files removed"
    [ -n "$destdir" ] || [ ! -d /run/systemd/system ] || echo "install.sh: run 'systemctl daemon-reload' to forget the unit"
    exit 0
fi

staged=$(mktemp -d)
trap 'rm -rf "$staged"' EXIT

# logged WHAT COMMAND...: runs COMMAND, printing the last lines of its output, or all of
# it and a failure naming WHAT.
logged() {
    local what=$1
    shift
    if ! "$@" >"$staged/log" 2>&1; then
        cat "$staged/log" >&2
        fail "$what failed (scripts/setup.sh installs what the build needs)"
    fi
    tail -n 2 "$staged/log"
}

if [ "$build" -eq 1 ]; then
    command -v swift >/dev/null || fail "swift is not on PATH: build on a machine with Swift, or install a build with --no-build"
    # No run-time library path either: not the toolchain's (-no-toolchain-stdlib-rpath)
    # nor the binary's own directory (--disable-local-rpath). It needs no library of theirs.
    echo "== swift build -c release --static-swift-stdlib (in .build-static)"
    logged "the static build" swift build -c release --static-swift-stdlib --scratch-path .build-static \
        -Xswiftc -no-toolchain-stdlib-rpath --disable-local-rpath
    # The man pages come from swift-argument-parser's generate-manual plugin, which builds
    # the package in release mode without --static-swift-stdlib: it runs in .build (the
    # usual release build) so that it does not relink the static binary.
    echo "== man pages and completions (in $extras)"
    logged "the release build" swift build -c release
    logged "generating the man pages and completions (scripts/extras.sh)" scripts/extras.sh "$extras"
fi
[ -x "$built" ] || fail "$built is not built: run without --no-build (needs Swift)"
for file in "$extras/man/snapfs.1" "$extras/completions/snapfs.bash" "$extras/completions/_snapfs" \
            "$extras/completions/snapfs.fish" dist/systemd/snapfs@.service dist/mount.fuse.snapfs; do
    [ -s "$file" ] || fail "$file is missing: run without --no-build (needs Swift)"
done
if ldd "$built" 2>/dev/null | grep -q 'libswift'; then
    fail "$built links the Swift runtime dynamically; rebuild with --static-swift-stdlib (run without --no-build)"
fi

# put MODE SOURCE DEST: installs SOURCE at DESTDIR/DEST, replacing what is there.
put() {
    install -D -m "$1" -- "$2" "$destdir$3" || fail "cannot write $destdir$3"
    echo "installed $destdir$3"
}

put 0755 "$built" "$bin"
# A page of a command this version no longer has goes.
for old in "$destdir$man_dir"/snapfs.*.1; do
    if [ -f "$old" ] && [ ! -e "$extras/man/$(basename "$old")" ]; then
        rm -f -- "$old" || fail "cannot remove $old"
        echo "removed $old"
    fi
done
for page in "$extras"/man/*.1; do
    put 0644 "$page" "$man_dir/$(basename "$page")"
done
put 0644 "$extras/completions/snapfs.bash" "$bash_completion"
put 0644 "$extras/completions/_snapfs" "$zsh_completion"
put 0644 "$extras/completions/snapfs.fish" "$fish_completion"

# The unit and the helper name the binary by the path it will have at run time.
sed "s|/usr/local/bin/snapfs|$bin|g" dist/systemd/snapfs@.service > "$staged/unit"
sed "s|^SNAPFS=.*|SNAPFS=$bin|" dist/mount.fuse.snapfs > "$staged/helper"
grep -q "^ExecStart=$bin " "$staged/unit" || fail "dist/systemd/snapfs@.service has no ExecStart=/usr/local/bin/snapfs line to point at $bin"
grep -q "^SNAPFS=$bin\$" "$staged/helper" || fail "dist/mount.fuse.snapfs has no SNAPFS= line to point at $bin"
put 0644 "$staged/unit" "$unit"
put 0755 "$staged/helper" "$helper"

echo "install.sh: snapfs $("$built" --version) installed${destdir:+ under $destdir}"
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    echo "install.sh: run 'systemctl daemon-reload' before 'systemctl enable --now snapfs@NAME' (docs/service.md)"
fi

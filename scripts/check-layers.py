#!/usr/bin/env python3
"""Checks that snapfs's Swift modules depend on each other one way only.

The layers, from the bottom up, and what each module may import of the package:
a module may use only the modules listed for it (its layer's lower neighbours). The
build already refuses cycles between targets; this check also refuses a dependency
that points upwards or sideways (Cache and SQLite know nothing of each other), whether
declared in Package.swift or written as an `import` in a source file, and C modules
used outside the layer they belong to. Exits 1 with one line per violation.
"""

import json
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent

# Module -> the package modules it may depend on. docs/architecture.md describes the layers.
ALLOWED = {
    "CLinux": set(),
    "CFUSE": set(),
    "CFUSEKernel": set(),
    "SnapFSBacking": {"CLinux"},
    "SnapFSCache": {"SnapFSBacking"},
    "SnapFSSQLite": {"SnapFSBacking"},
    "SnapFSSnapshots": {"SnapFSSQLite", "SnapFSBacking", "CLinux"},
    "SnapFSReplication": {"SnapFSSnapshots", "SnapFSBacking", "CLinux"},
    "SnapFSCore": {"SnapFSSnapshots", "SnapFSSQLite", "SnapFSCache", "SnapFSBacking", "CLinux"},
    "SnapFSFUSE": {"SnapFSCore", "SnapFSSnapshots", "SnapFSBacking", "CFUSE", "CFUSEKernel", "CLinux"},
    "SnapFSDaemon": {"SnapFSFUSE", "SnapFSCore", "SnapFSReplication", "SnapFSSnapshots", "SnapFSSQLite", "SnapFSCache",
                     "SnapFSBacking", "CLinux"},
    "snapfs": {"SnapFSDaemon", "SnapFSCore", "SnapFSReplication", "SnapFSSnapshots", "SnapFSBacking", "CLinux"},
}
TESTS = {"SnapFSCoreTests", "SnapFSFUSETests", "SnapFSReplicationTests"}


def package_targets():
    """Target name -> (declared dependencies within the package, source directory)."""
    out = subprocess.run(["swift", "package", "dump-package"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    targets = {}
    for target in json.loads(out)["targets"]:
        deps = set()
        for dep in target.get("dependencies", []):
            for kind in ("byName", "target"):
                if kind in dep:
                    deps.add(dep[kind][0])
        directory = target.get("path") or ("Tests/" if target["type"] == "test" else "Sources/") + target["name"]
        targets[target["name"]] = (deps, REPO / directory)
    return targets


def imports(directory):
    """(file, line number, module) for every import in the Swift files under `directory`."""
    for path in sorted(directory.rglob("*.swift")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:@testable\s+|@_exported\s+|@preconcurrency\s+)*import\s+(?:\w+\s+)?(\w+)", line)
            if match:
                yield path.relative_to(REPO), number, match.group(1)


def main():
    targets = package_targets()
    ours = set(targets)
    problems = []
    for name, (deps, directory) in sorted(targets.items()):
        if name in TESTS:
            continue
        if name not in ALLOWED:
            problems.append(f"Package.swift: target {name} has no place in the layers (add it to scripts/check-layers.py)")
            continue
        for dep in sorted(deps & ours - ALLOWED[name]):
            problems.append(f"Package.swift: {name} depends on {dep}, which is not below it")
        if not directory.is_dir():
            continue
        for path, number, module in imports(directory):
            if module in ours and module != name and module not in ALLOWED[name]:
                problems.append(f"{path}:{number}: {name} imports {module}, which is not below it")
            elif module in ours and module not in deps and module != name:
                problems.append(f"{path}:{number}: {name} imports {module} without depending on it in Package.swift")
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"layers: {len(ALLOWED)} modules, every dependency points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())

// swift-tools-version: 6.0
import PackageDescription

// The modules, each depending only on those below it (checked by scripts/check-layers.py;
// docs/architecture.md explains the layers):
//
//   snapfs            the commands
//   SnapFSDaemon      options, mount plan, the composition root of a mount, exit codes
//   SnapFSReplication snapshots sent to, listed in and restored from a restic repository
//   SnapFSFUSE        the kernel side: FUSE channel, ring, session, dispatch by node kind
//   SnapFSCore        the filesystem: every operation, decided at one mutation gate
//   SnapFSSnapshots   taking, building, listing, diffing, restoring and pruning snapshots
//   SnapFSSQLite      SQLite's on-disk formats, commit detection and its policy
//   SnapFSCache       the page cache of written data
//   SnapFSBacking     syscalls, descriptors, threads and clocks
//
// and C: CLinux (Linux calls Glibc's overlay lacks, for every layer), CFUSE (libfuse) and
// CFUSEKernel (the FUSE kernel protocol, the ring), used by SnapFSFUSE alone.
let system = Target.Dependency.product(name: "SystemPackage", package: "swift-system")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")

let package = Package(
    name: "snapfs",
    products: [
        .executable(name: "snapfs", targets: ["snapfs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // libfuse3 through pkg-config; the shim header wraps libfuse's macros.
        .systemLibrary(
            name: "CFUSE",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        // Linux syscalls that Glibc's Swift overlay does not expose (variadic or _GNU_SOURCE-only).
        .target(name: "CLinux"),
        // The FUSE kernel protocol (<linux/fuse.h> and what is newer than its minor), io_uring
        // queues and passthrough's backing files: kernel-side C that only SnapFSFUSE uses.
        .target(name: "CFUSEKernel"),
        .target(name: "SnapFSBacking", dependencies: ["CLinux", system]),
        .target(name: "SnapFSCache", dependencies: ["SnapFSBacking", system]),
        .target(name: "SnapFSSQLite", dependencies: ["SnapFSBacking", system]),
        .target(name: "SnapFSSnapshots", dependencies: ["SnapFSSQLite", "SnapFSBacking", "CLinux", system, logging]),
        .target(
            name: "SnapFSReplication",
            dependencies: ["SnapFSSnapshots", "SnapFSBacking", "CLinux", system, logging]
        ),
        .target(
            name: "SnapFSCore",
            dependencies: ["SnapFSSnapshots", "SnapFSSQLite", "SnapFSCache", "SnapFSBacking", "CLinux", system, logging]
        ),
        .target(
            name: "SnapFSFUSE",
            dependencies: ["SnapFSCore", "SnapFSSnapshots", "SnapFSBacking", "CFUSE", "CFUSEKernel", "CLinux", system, logging]
        ),
        .target(
            name: "SnapFSDaemon",
            dependencies: ["SnapFSFUSE", "SnapFSCore", "SnapFSReplication", "SnapFSSnapshots", "SnapFSSQLite", "SnapFSCache",
                           "SnapFSBacking", "CLinux", system, logging]
        ),
        .executableTarget(
            name: "snapfs",
            dependencies: [
                "SnapFSDaemon", "SnapFSCore", "SnapFSReplication", "SnapFSSnapshots", "SnapFSBacking", "CLinux", system, logging,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "SnapFSCoreTests",
            dependencies: ["SnapFSDaemon", "SnapFSCore", "SnapFSSnapshots", "SnapFSSQLite", "SnapFSCache",
                           "SnapFSBacking", "CLinux", system]
        ),
        .testTarget(
            name: "SnapFSReplicationTests",
            dependencies: ["SnapFSReplication", "SnapFSSnapshots", "SnapFSBacking"]
        ),
        .testTarget(
            name: "SnapFSFUSETests",
            dependencies: ["SnapFSFUSE", "CFUSEKernel"]
        ),
    ]
)

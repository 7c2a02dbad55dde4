// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "snapfs",
    products: [
        .executable(name: "snapfs", targets: ["snapfs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
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
        .target(
            name: "SnapFSCore",
            dependencies: [
                "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Collections", package: "swift-collections"),
            ]
        ),
        .target(
            name: "SnapFSFUSE",
            dependencies: [
                "CFUSE",
                "CLinux",
                "SnapFSCore",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "snapfs",
            dependencies: [
                "SnapFSCore",
                "SnapFSFUSE",
                "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "SnapFSCoreTests",
            dependencies: [
                "SnapFSCore",
                "CLinux",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
    ]
)

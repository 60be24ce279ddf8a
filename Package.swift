// swift-tools-version: 6.0
import PackageDescription

// Dependencies point one way: C shims -> LinearAlgebra -> Operators; EngineCore is the vocabulary every
// layer shares; RowIO turns bytes into batches; Manifest turns YAML into a validated graph; Runtime drives
// it all; the executable only parses arguments.
let package = Package(
    name: "rowflow",
    products: [
        .executable(name: "rowflow", targets: ["rowflow"]),
        .library(name: "RowflowRuntime", targets: ["Runtime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .target(name: "LinearAlgebra", dependencies: ["COpenBLAS"]),
        .target(name: "EngineCore"),
        .target(name: "RowIO", dependencies: ["EngineCore", "CZstd"]),
        .target(name: "Operators", dependencies: ["EngineCore", "LinearAlgebra"]),
        .target(name: "Manifest", dependencies: ["EngineCore", "Operators", "Yams"]),
        .target(name: "Runtime", dependencies: ["EngineCore", "RowIO", "Operators", "Manifest", "LinearAlgebra"]),
        .executableTarget(name: "rowflow", dependencies: [
            "Runtime", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "LinearAlgebraTests", dependencies: ["LinearAlgebra"]),
        .testTarget(name: "EngineCoreTests", dependencies: ["EngineCore"]),
        .testTarget(name: "RowIOTests", dependencies: ["RowIO", "EngineCore"]),
        .testTarget(name: "OperatorsTests", dependencies: ["Operators", "EngineCore", "LinearAlgebra"]),
        .testTarget(name: "ManifestTests", dependencies: ["Manifest", "EngineCore"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "RowIO", "EngineCore", "Operators", "LinearAlgebra"]),
        .testTarget(name: "EndToEndTests", dependencies: ["Runtime", "RowIO", "EngineCore", "LinearAlgebra"]),
    ]
)

// swift-tools-version: 6.0
import PackageDescription

// Dependencies point one way: C shims -> LinearAlgebra -> Operators; EngineCore is the vocabulary every
// layer shares (batches, errors, states, and the operator protocols and parameter vocabulary); RowIO turns
// bytes into batches; Manifest turns YAML into a validated graph against a registry it is given, and Report
// draws a run directory — neither knows the operators (nor links OpenBLAS); Runtime drives it all; the
// executable parses arguments and hands `OperatorRegistry.standard` to the rest.
let package = Package(
    name: "rowflow",
    products: [
        .executable(name: "rowflow", targets: ["rowflow"]),
        .library(name: "RowflowRuntime", targets: ["Runtime"]),
        // For the libFuzzer package in Tests/Fuzz (built only by `make fuzz`).
        .library(name: "RowflowFuzzHarness", targets: ["FuzzHarness"]),
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
        // Fixed-order float32 kernels whose results do not depend on the BLAS kernel or the CPU.
        .target(name: "CKernels"),
        .target(name: "LinearAlgebra", dependencies: ["COpenBLAS", "CKernels"]),
        .target(name: "EngineCore"),
        .target(name: "RowIO", dependencies: ["EngineCore", "CZstd"]),
        .target(name: "Operators", dependencies: ["EngineCore", "LinearAlgebra"]),
        .target(name: "Manifest", dependencies: ["EngineCore", "Yams"]),
        .target(name: "Runtime", dependencies: ["EngineCore", "RowIO", "Operators", "Manifest", "LinearAlgebra"]),
        // `rowflow report`: run directory → one HTML page with inline SVG (reads outputs, never operators' state).
        .target(name: "Report", dependencies: ["EngineCore", "RowIO", "Manifest"]),
        .executableTarget(name: "rowflow", dependencies: [
            "Runtime", "Report", "Operators", "LinearAlgebra", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Reference implementations and fixtures shared by the test targets (never linked into the product).
        .target(name: "TestSupport", dependencies: ["EngineCore", "LinearAlgebra", "RowIO"], path: "Tests/TestSupport"),
        .target(name: "FuzzHarness", dependencies: ["EngineCore", "RowIO", "Manifest", "Operators"], path: "Tests/FuzzHarness"),
        // NumberParser against strtod on 10⁷ generated strings, in release (`make test-numbers`, part of `make test`).
        .executableTarget(name: "rowflow-numcheck", dependencies: ["TestSupport"], path: "Tests/NumberCheck"),
        .testTarget(name: "LinearAlgebraTests", dependencies: ["LinearAlgebra", "TestSupport"]),
        .testTarget(name: "EngineCoreTests", dependencies: ["EngineCore", "TestSupport"]),
        .testTarget(name: "RowIOTests", dependencies: ["RowIO", "EngineCore", "TestSupport"]),
        .testTarget(name: "OperatorsTests", dependencies: ["Operators", "EngineCore", "LinearAlgebra", "TestSupport"]),
        .testTarget(name: "ManifestTests", dependencies: ["Manifest", "Operators", "EngineCore", "TestSupport"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "Manifest", "RowIO", "EngineCore", "Operators", "LinearAlgebra", "TestSupport"]),
        .testTarget(name: "ReportTests", dependencies: ["Report", "EngineCore", "RowIO", "Operators", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["RowIO", "EngineCore", "LinearAlgebra", "TestSupport", "FuzzHarness"]),
    ]
)

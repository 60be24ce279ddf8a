// swift-tools-version: 6.0
import PackageDescription

// Deliberately independent of the rowflow package: the harness drives the release binary as a child process,
// so it measures exactly what a user runs and builds in seconds without the engine's dependencies.
let package = Package(
    name: "rowflow-benchmarks",
    targets: [
        .executableTarget(name: "rowflow-bench", path: "Sources/rowflow-bench"),
    ]
)

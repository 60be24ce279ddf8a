// swift-tools-version: 6.0
// libFuzzer targets for rowflow's decoders. Built only by `make fuzz` with -sanitize=fuzzer,address (which
// supplies main), never by `swift build` of the main package.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which depends on where the repo was cloned.
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().deletingLastPathComponent()
let rootName = root.lastPathComponent.lowercased()

let package = Package(
    name: "rowflow-fuzz",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "rowflow-fuzz", dependencies: [.product(name: "RowflowFuzzHarness", package: rootName)]),
    ]
)

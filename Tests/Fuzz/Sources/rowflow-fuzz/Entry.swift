import FuzzHarness
#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer entry points; the target comes from ROWFLOW_FUZZ_TARGET (one of FuzzHarness.targets).
nonisolated(unsafe) var selectedTarget = "text"

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzHarness.run(selectedTarget, size == 0 ? [] : Array(UnsafeBufferPointer(start: data!, count: size)))
    return 0
}

/// libFuzzer's driver, from libclang_rt.fuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry as `<module>_main` (aliased to main); this one hands control to
/// libFuzzer's driver instead of libFuzzer's own main.
@_cdecl("rowflow_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    if let t = getenv("ROWFLOW_FUZZ_TARGET") { selectedTarget = String(cString: t) }
    guard FuzzHarness.targets.contains(selectedTarget) else {
        print("ROWFLOW_FUZZ_TARGET must be one of \(FuzzHarness.targets)")
        return 2
    }
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { data, size in testOneInput(data, size) }
}

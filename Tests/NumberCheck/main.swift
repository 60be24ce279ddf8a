// rowflow-numcheck [count] [seed]: NumberParser against strtod on `count` generated strings (default 10⁷),
// built in release by `make test-numbers`. Exit 1 on any disagreement.
#if canImport(Glibc)
import Glibc
#endif
import TestSupport

let args = CommandLine.arguments
let count = args.count > 1 ? UInt64(args[1]) ?? 10_000_000 : 10_000_000
let seed = args.count > 2 ? UInt64(args[2]) ?? 1 : 1
let result = NumberStrings.check(count: count, seed: seed)
for e in result.examples { print("mismatch: \(e)") }
print("rowflow-numcheck: \(count) strings (seed \(seed)), \(result.failures) disagreements with strtod")
exit(result.failures == 0 ? 0 : 1)

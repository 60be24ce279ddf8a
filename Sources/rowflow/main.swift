import ArgumentParser
import EngineCore
import LinearAlgebra
import Manifest
import Operators
import Report
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Thin commands: each parses its arguments and calls the library; `fail` maps every error to its exit code
/// in one place (docs/errors.md).
struct Rowflow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rowflow",
        abstract: "Streaming numerical linear algebra on row streams: one pass, bounded memory, honest error bounds.",
        version: RowflowVersion.string + "\nblas_core: \(BLASKernel.coreName)\ncpu: \(BLASKernel.machine.model)",
        subcommands: [Run.self, Validate.self, Operators.self, Merge.self, Inspect.self, Gen.self, ReportCommand.self])
}

func fail(_ e: EngineError) -> Never {
    Console.err(e.description + "\n")
    exit(e.status.rawValue)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a pipeline manifest over an input stream.")
    @Argument(help: "The pipeline manifest (YAML).") var manifest: String
    @Option(help: "Input: a file, a directory of shards, or - for stdin.") var input: String = "-"
    @Option(help: "Output directory (default rowflow-out; with --state-out and no --out, none is written).") var out: String?
    @Option(help: "Seed for every random choice.") var seed: UInt64 = 0
    @Option(help: "This run is shard k of a larger input (for merge).") var shard: Int64?
    @Option(name: .customLong("checkpoint-every"), help: "Write a checkpoint every n rows.") var checkpointEvery: Int64?
    @Flag(help: "Resume from the newest valid checkpoint in --out.") var resume = false
    @Option(name: .customLong("state-out"), help: "Write mergeable states as one blob (a path, or - for stdout).") var stateOut: String?
    @Option(name: .customLong("emit-every"), help: "Print a JSON line per operator every n source rows.") var emitEvery: Int64?
    @Option(help: "Progress on stderr: auto | always | never.") var progress: String = "auto"
    @Option(help: "Threads: 1 decodes and computes on one thread; 2 (default) overlaps them.") var threads: Int = 2

    func run() throws {
        var o = RunOptions(manifestPath: manifest)
        o.input = input == "-" ? nil : input
        o.out = out ?? "rowflow-out"
        o.writeOutputs = out != nil || stateOut == nil
        o.seed = seed
        o.shard = shard
        if let c = checkpointEvery, c <= 0 { fail(.usage("--checkpoint-every", "expected a positive row count, found \(c)")) }
        o.checkpointEvery = checkpointEvery
        o.resume = resume
        o.stateOut = stateOut
        guard emitEvery == nil || emitEvery! > 0 else { fail(.usage("--emit-every", "expected a positive row count")) }
        o.emitEvery = emitEvery
        guard let p = ProgressMode(rawValue: progress) else { fail(.usage("--progress", "expected auto | always | never, found '\(progress)'")) }
        o.progress = p
        guard threads >= 1 else { fail(.usage("--threads", "expected at least 1")) }
        o.threads = threads
        if let s = shard, s < 0 { fail(.usage("--shard", "expected a shard number ≥ 0")) }
        do { try Runner(options: o).run() } catch { fail(error) }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Parse and check a manifest, print its graph; read no data.")
    @Argument var manifest: String
    func run() throws {
        do { print(try ManifestParser.load(manifest, registry: .standard).describe()) } catch { fail(error) }
    }
}

struct Operators: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every operator: parameters, defaults, required, outputs.")
    @Flag(help: "Machine-readable JSON.") var json = false
    func run() throws {
        print(json ? Catalog.json().encoded(pretty: true) : Catalog.text())
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Combine shard runs into the output of one run.")
    @Argument var manifest: String
    @Argument(help: "Shard run directories, state blobs (binary or base64 lines), or - for base64 lines on stdin.") var inputs: [String]
    @Option(help: "Output directory.") var out: String?
    @Option(name: .customLong("state-out"), help: "Also (or only) write the merged states as one blob (a path, or - for stdout).") var stateOut: String?
    func run() throws {
        do { try Merger(manifestPath: manifest, inputs: inputs, out: out, stateOut: stateOut).run() } catch { fail(error) }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a run directory, a .npy file or a state blob.")
    @Argument var path: String
    func run() throws {
        do { print(try Inspector.describe(path)) } catch { fail(error) }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Write a self-contained HTML page (inline SVG plots) for a run directory.")
    @Argument(help: "The --out directory of a `rowflow run` (or merge).") var runDir: String
    @Option(help: "The HTML file to write (default <run-dir>/report.html).") var out: String?
    func run() throws {
        do { try ReportBuilder.write(runDirectory: runDir, out: out ?? runDir + "/report.html", registry: .standard) } catch { fail(error) }
    }
}

struct Gen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Seeded synthetic rows with known structure.",
        discussion: """
        Kinds: spectrum (rows with a chosen singular spectrum and gap), regression (target = Xβ + noise),
        legendre (x ~ U[-1, 1], --cols orthonormal Legendre features, then --target f(x) as the last column).
        The truth (spectrum, top directions, β) goes to --truth as JSON.
        """)
    @Argument(help: "spectrum | regression | legendre") var kind: String
    @Option var rows: Int = 10000
    @Option var cols: Int = 16
    @Option var seed: UInt64 = 0
    @Option(help: "csv | tsv | f32 | f64 | npy | libsvm") var format: String = "csv"
    @Flag(help: "Compress the output with zstd.") var zstd = false
    @Option(help: "σ₁²/σ₂² (spectrum).") var gap: Double = 4
    @Option(help: "Geometric decay of σⱼ after the second (spectrum).") var decay: Double = 0.9
    @Option(help: "Planted heavy rows along the second direction.") var heavy: Int = 0
    @Option(help: "Added to every feature (spectrum): column means far from zero, for PCA.") var offset: Double = 0
    @Option(help: "Noise standard deviation (regression: default 0.1; legendre: default 0).") var noise: Double?
    @Option(help: "Target function (legendre): runge 1/(1+25x²) | abs | exp | step | none.") var target: String = "runge"
    @Option(help: "Output file (default stdout).") var out: String?
    @Option(help: "Write the known structure here as JSON.") var truth: String?

    func run() throws {
        var g = GenOptions()
        g.rows = rows; g.cols = cols; g.seed = seed; g.zstd = zstd; g.gap = gap; g.decay = decay
        g.heavy = heavy; g.offset = offset; g.noise = noise; g.out = out; g.truth = truth
        guard let k = GenOptions.Kind(rawValue: kind) else { fail(.usage("gen", "unknown kind '\(kind)'; expected spectrum | regression | legendre")) }
        g.kind = k
        guard let t = GenOptions.Target(rawValue: target) else {
            fail(.usage("--target", "expected " + GenOptions.Target.allCases.map(\.rawValue).joined(separator: " | ") + ", found '\(target)'"))
        }
        g.target = t
        if let n = noise, !(n >= 0) { fail(.usage("--noise", "expected a standard deviation ≥ 0")) }
        guard let f = GenOptions.Format(rawValue: format) else { fail(.usage("--format", "expected csv | tsv | f32 | f64 | npy | libsvm")) }
        g.format = f
        guard rows >= 0, cols >= 1 else { fail(.usage("gen", "--rows must be ≥ 0 and --cols ≥ 1")) }
        do { try Generator(g).run() } catch { fail(error) }
    }
}

/// OpenBLAS reads its environment once, when the library loads — before any Swift code runs — so both
/// settings rowflow makes are applied by re-executing itself with them set (at most twice, never in a loop):
/// - one BLAS thread: idle pool threads spin on sched_yield and take a core from the decode thread, and two
///   BLAS threads beside a busy core are slower than one; the user's OPENBLAS_NUM_THREADS wins;
/// - the BLAS kernel (`BLASKernel`): when OpenBLAS fell back to a generic kernel on a CPU with AVX2/AVX-512,
///   the matching one, kept only if it passes `BLASKernel.selfCheck()` in the re-executed process; if it
///   fails, the process re-executes once more with OpenBLAS's own choice and warns. ROWFLOW_BLAS_CHOICE
///   carries the stage across the exec: `selected:<detected>` or `failed:<selected>`.
///
/// ROWFLOW_BLAS_SIMULATE (tests only) makes both paths testable on any machine: `detected=<name>` stands in
/// for OpenBLAS's detection, `selfcheck=fail` for a failed check.
func prepareBLAS() {
    let simulate = getenv("ROWFLOW_BLAS_SIMULATE").map { String(cString: $0) } ?? ""
    func simulated(_ key: String) -> String? {
        simulate.split(separator: ",").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
    var reexec = false
    if getenv("OPENBLAS_NUM_THREADS") == nil { setenv("OPENBLAS_NUM_THREADS", "1", 1); reexec = true }
    let stage = getenv("ROWFLOW_BLAS_CHOICE").map { String(cString: $0) }
    if stage == nil {
        let user = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        let detected = simulated("detected") ?? BLASKernel.coreName
        if case let .select(kernel) = BLASKernel.decide(detected: detected, flags: BLASKernel.machine.flags, userCoretype: user) {
            setenv("OPENBLAS_CORETYPE", kernel, 1)
            setenv("ROWFLOW_BLAS_CHOICE", "selected:" + detected, 1)
            reexec = true
        }
    } else if let s = stage, s.hasPrefix("selected:"), !BLASKernel.selfCheck() || simulated("selfcheck") == "fail" {
        let chosen = BLASKernel.coreName
        setenv("OPENBLAS_CORETYPE", String(s.dropFirst("selected:".count)), 1)
        setenv("ROWFLOW_BLAS_CHOICE", "failed:" + chosen, 1)
        reexec = true
    } else if let s = stage, s.hasPrefix("failed:") {
        Console.err("rowflow: warning: blas: the \(s.dropFirst("failed:".count)) kernel failed rowflow's numerical self-check on this CPU; running OpenBLAS's own choice, \(BLASKernel.coreName) (hint: set OPENBLAS_CORETYPE to choose a kernel yourself)\n")
    }
    if reexec {
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (no /proc?): carry on with what is loaded; it only costs speed, never correctness.
    }
}

prepareBLAS()
signal(SIGPIPE, SIG_IGN)
Rowflow.main()

/// Exit codes of the `rowflow` command (docs/errors.md). Mapped to the process status in one place, the
/// executable's entry point.
public enum ExitStatus: Int32, Sendable, CaseIterable {
    case success = 0
    case usage = 64          // usage or manifest error; resume refused; merge of a non-mergeable operator
    case dataError = 65      // bad input data, no rows, every checkpoint corrupt
    case noInput = 66        // input or manifest not found / unreadable
    case software = 70       // internal error
    case cantCreate = 73     // the output directory is being written by another live rowflow process
    case ioError = 74        // writing output, checkpoints or the row store failed
    case interrupted = 130   // SIGINT after a checkpoint
    case terminated = 143    // SIGTERM after a checkpoint
}

/// Every error rowflow reports: one line, `rowflow: error: <where>: <what>`, plus a hint when one helps.
/// `location` is `<file>:<line>:<column>` for manifests and text rows, `row <n>` or `byte <offset>` for
/// binary input (lines and rows 1-based), or the path/command concerned.
public struct EngineError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: ExitStatus
    public var location: String
    public var message: String
    public var hint: String?

    public init(_ status: ExitStatus, _ location: String, _ message: String, hint: String? = nil) {
        self.status = status
        self.location = location
        self.message = message
        self.hint = hint
    }

    /// The line printed on stderr.
    public var description: String { "rowflow: error: " + detail }

    /// `<where>: <what> (hint: …)`: the line without its `rowflow: error: ` prefix.
    public var detail: String {
        var s = location.isEmpty ? "" : location + ": "
        s += message
        if let hint { s += " (hint: \(hint))" }
        return s
    }

    public static func usage(_ location: String, _ message: String, hint: String? = nil) -> EngineError {
        EngineError(.usage, location, message, hint: hint)
    }
    public static func data(_ location: String, _ message: String, hint: String? = nil) -> EngineError {
        EngineError(.dataError, location, message, hint: hint)
    }
    public static func notFound(_ location: String, _ message: String, hint: String? = nil) -> EngineError {
        EngineError(.noInput, location, message, hint: hint)
    }
    public static func io(_ location: String, _ message: String, hint: String? = nil) -> EngineError {
        EngineError(.ioError, location, message, hint: hint)
    }
    public static func `internal`(_ location: String, _ message: String) -> EngineError {
        EngineError(.software, location, message)
    }
}

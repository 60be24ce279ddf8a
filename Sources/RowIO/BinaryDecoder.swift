import EngineCore

/// Element types of raw and npy input.
enum ElementType: Equatable, Sendable {
    case f4, f8, i1, i2, i4, i8, u1, u2, u4, u8
    var size: Int {
        switch self {
        case .i1, .u1: return 1
        case .i2, .u2: return 2
        case .f4, .i4, .u4: return 4
        case .f8, .i8, .u8: return 8
        }
    }
    var isFloat: Bool { self == .f4 || self == .f8 }
}

/// Decodes fixed-width little-endian rows (raw f32/f64, or the data section of an .npy file) straight into
/// batch buffers. A trailing partial row is an error naming its byte offset; non-finite values are bad
/// rows ("row n"), handled by `on_bad_row`.
final class BinaryDecoder: RowDecoder {
    let buf: ChunkBuffer
    let name: String
    let element: ElementType
    let config: SourceConfig
    let layout: RowLayout?
    let rowsKnown: Int64?

    /// For npy: rows the header promises (checked at the end).
    let expectedRows: Int64?
    private(set) var rowsConsumed: Int64
    private let firstRow: Int64
    private let rowBytes: Int
    /// Float rows whose raw fields are the features in order, perhaps then the target: converted (or staged)
    /// a row at a time by a loop the compiler vectorises rather than field by field.
    private let contiguousRows: Bool

    init(_ buf: ChunkBuffer, element: ElementType, rawColumns: Int, config: SourceConfig, firstRow: Int64,
         rowsKnown: Int64?, expectedRows: Int64?) throws(EngineError) {
        self.buf = buf
        self.name = buf.input.file.name
        self.element = element
        self.config = config
        if let n = config.names, n.count != rawColumns {
            throw .usage(name, "source.names lists \(n.count) names, but rows have \(rawColumns) fields")
        }
        if config.usesNames && config.names == nil {
            throw .data(name, "the manifest names columns, but \(element.size == 4 ? "f32" : "binary") input has no header", hint: "give source.names (one per field), or use 0-based column numbers")
        }
        self.layout = try RowLayout(rawColumns: rawColumns, config: config, names: config.names, location: name)
        self.rowsKnown = rowsKnown
        self.expectedRows = expectedRows
        self.rowsConsumed = firstRow
        self.firstRow = firstRow
        self.rowBytes = rawColumns * element.size
        self.contiguousRows = (element == .f4 || element == .f8) && (layout!.isIdentity || layout!.isFeaturesThenTarget) && isLittleEndianHost
    }

    func prime() throws(EngineError) {}

    /// Float32 rows that can go to a batch's staging area untouched: nothing to select or reorder, no value
    /// allowed to be non-finite and a bad row fails the run (so the check can wait for `materialize()`).
    var stagesFloat32: Bool {
        element == .f4 && contiguousRows && config.onBadRow == .fail && !config.allowNonfinite
    }
    /// Staged rows end with the target (features in order, then the target: `target: last`).
    var stagesTarget: Bool { layout!.isFeaturesThenTarget }

    func fill(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool {
        let layout = layout!
        if batch.staged != nil && stagesFloat32 { return try fillStaged(&batch) }
        while !batch.isFull {
            if buf.available < rowBytes {
                _ = try buf.ensure(rowBytes * min(batch.capacity - batch.count, max(1, (1 << 20) / max(1, rowBytes))))
                if buf.available < rowBytes {
                    if buf.available > 0 { throw truncatedRow() }
                    if let e = expectedRows, rowsConsumed - firstRow != e {
                        throw .data("\(name): byte \(buf.offset)", "the npy header promises \(e) rows, the data holds \(rowsConsumed - firstRow)")
                    }
                    return false
                }
            }
            if let e = expectedRows, rowsConsumed - firstRow >= e {
                throw .data("\(name): byte \(buf.offset)", "data continues past the \(e) rows the npy header promises")
            }
            let rowsHere = min(buf.available / rowBytes, batch.capacity - batch.count)
            try convert(rows: rowsHere, into: &batch, layout: layout, bad: bad)
        }
        return true
    }

    /// The staging fast path: buffered bytes are copied as they are; with the buffer empty the input is read
    /// (decompressed) straight into the batch's staging area, and a record cut by the read waits in the
    /// buffer. Conversion and the finiteness check happen in `RowBatch.materialize()`.
    private func fillStaged(_ batch: inout RowBatch) throws(EngineError) -> Bool {
        batch.stagedSource = name
        batch.stagedRowBase = firstRow
        while !batch.isFull {
            var room = batch.capacity - batch.count
            if let e = expectedRows {
                room = min(room, Int(e - (rowsConsumed - firstRow)))
                if room == 0 {
                    if batch.count > 0 { return true }
                    if try buf.ensure(1) { throw .data("\(name): byte \(buf.offset)", "data continues past the \(e) rows the npy header promises") }
                    return false
                }
            }
            if buf.available > 0 {
                if buf.available < rowBytes, !(try buf.ensure(rowBytes)) {
                    throw truncatedRow()
                }
                let n = min(buf.available / rowBytes, room)
                let src = UnsafeRawPointer(buf.base + buf.start), bytes = n * rowBytes
                try batch.withStaging(fromRow: batch.count) { (dst, _) throws(EngineError) in dst.copyMemory(from: src, byteCount: bytes) }
                batch.commitStaged(n, firstIndex: rowsConsumed)
                buf.start += bytes
                rowsConsumed += Int64(n)
                continue
            }
            let want = room * rowBytes, rb = rowBytes, input = buf.input, cb = buf
            let got = try batch.withStaging(fromRow: batch.count) { (dst, _) throws(EngineError) -> Int in
                var got = 0
                while got < rb {   // at least one whole record, unless the input ends
                    let n = try input.read(into: dst + got, count: want - got)
                    if n == 0 { break }
                    got += n
                }
                let tail = got % rb
                cb.afterDirectRead(consumed: got - tail, tail: UnsafeRawPointer(dst + (got - tail)), tailCount: tail)
                return got
            }
            let rows = got / rowBytes
            if rows > 0 {
                batch.commitStaged(rows, firstIndex: rowsConsumed)
                rowsConsumed += Int64(rows)
            } else if got == 0 {
                if let e = expectedRows, rowsConsumed - firstRow != e {
                    throw .data("\(name): byte \(buf.offset)", "the npy header promises \(e) rows, the data holds \(rowsConsumed - firstRow)")
                }
                return false
            } else {
                throw truncatedRow()   // the input ended inside a record
            }
        }
        return true
    }

    private func truncatedRow() -> EngineError {
        .data("\(name): byte \(buf.offset)",
              "truncated row \(rowsConsumed - firstRow + 1): expected \(rowBytes) bytes (\(layout!.rawColumns) × \(element.size)), found \(buf.available)",
              hint: "is source.columns right? The data length must be a multiple of the row size")
    }

    private func convert(rows: Int, into batch: inout RowBatch, layout: RowLayout, bad: BadRowHandler) throws(EngineError) {
        let src = UnsafeRawPointer(buf.base + buf.start)
        let d = batch.columns
        let c = layout.rawColumns
        var failures: [(Int64, EngineError, Int, Int)] = []   // row, error, slot offset, raw column
        let firstSlot = batch.count
        for k in 0..<rows { _ = batch.appendSlot(index: rowsConsumed + Int64(k)) }
        // One probe per contiguous row (Σ v·0 is NaN iff some v is not finite) in place of a branch per value.
        let contiguous = contiguousRows && Int(bitPattern: src) % element.size == 0
        let targetColumn = layout.isIdentity ? nil : Optional(d)
        batch.features.withUnsafeMutableBufferPointer { f in
            for k in 0..<rows {
                let row = rowsConsumed + Int64(k)
                let slot = firstSlot + k
                let out = f.baseAddress! + slot * d
                let rp = src + k * rowBytes
                if contiguous {
                    var probe: Double = 0
                    if element == .f4 {
                        let fp = rp.assumingMemoryBound(to: Float.self)
                        for j in 0..<d {
                            let v = Double(fp[j])
                            out[j] = v
                            probe += v * 0
                        }
                    } else {
                        let dp = rp.assumingMemoryBound(to: Double.self)
                        for j in 0..<d {
                            let v = dp[j]
                            out[j] = v
                            probe += v * 0
                        }
                    }
                    if let t = targetColumn {
                        let v = load(rp, t)
                        batch.targets![slot] = v
                        probe += v * 0
                    }
                    if probe.isNaN && !config.allowNonfinite {
                        let j = (0..<c).first { !load(rp, $0).isFinite }!
                        failures.append((row, .data("\(name): row \(row - firstRow + 1)", "non-finite value \(load(rp, j)) in column \(j + 1)\(layout.label(j))",
                                                    hint: "set source.allow_nonfinite: true, or on_bad_row: skip"), k, j))
                    }
                    continue
                }
                var failure: EngineError?, failedColumn = 0
                for j in 0..<c {
                    if case .drop = layout.roles[j] { continue }   // unused columns may hold anything
                    let v = load(rp, j)
                    failedColumn = j
                    if !v.isFinite && !config.allowNonfinite {
                        failure = .data("\(name): row \(row - firstRow + 1)", "non-finite value \(v) in column \(j + 1)\(layout.label(j))",
                                        hint: "set source.allow_nonfinite: true, or on_bad_row: skip")
                        break
                    }
                    switch layout.roles[j] {
                    case let .feature(i): out[i] = v
                    case .target: batch.targets![slot] = v
                    case .weight:
                        if !(v >= 0) { failure = .data("\(name): row \(row - firstRow + 1)", "bad weight \(v) in column \(j + 1): weights must be ≥ 0") }
                        else { batch.weights![slot] = v }
                    case .drop: break
                    }
                    if failure != nil { break }
                }
                if let failure { failures.append((row, failure, k, failedColumn)) }
            }
        }
        if !failures.isEmpty { batch.removeRows(failures.map { firstSlot + $0.2 }) }
        for (row, err, k, col) in failures {
            try bad.report(err, row: row, column: col, raw: { rawValues(k) })
        }
        rowsConsumed += Int64(rows)
        buf.start += rows * rowBytes
    }

    @inline(__always)
    private func load(_ rp: UnsafeRawPointer, _ j: Int) -> Double {
        let o = j * element.size
        switch element {
        case .f4: return Double(Float(bitPattern: rp.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian))
        case .f8: return Double(bitPattern: rp.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian)
        case .i1: return Double(rp.loadUnaligned(fromByteOffset: o, as: Int8.self))
        case .u1: return Double(rp.loadUnaligned(fromByteOffset: o, as: UInt8.self))
        case .i2: return Double(rp.loadUnaligned(fromByteOffset: o, as: Int16.self).littleEndian)
        case .u2: return Double(rp.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian)
        case .i4: return Double(rp.loadUnaligned(fromByteOffset: o, as: Int32.self).littleEndian)
        case .u4: return Double(rp.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian)
        case .i8: return Double(rp.loadUnaligned(fromByteOffset: o, as: Int64.self).littleEndian)
        case .u8: return Double(rp.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian)
        }
    }

    private func rawValues(_ k: Int) -> String {
        let rp = UnsafeRawPointer(buf.base + buf.start + k * rowBytes)
        return (0..<(layout?.rawColumns ?? 0)).map { "\(load(rp, $0))" }.joined(separator: ",")
    }
}

#if _endian(little)
let isLittleEndianHost = true
#else
let isLittleEndianHost = false
#endif

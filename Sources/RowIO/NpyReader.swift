import EngineCore

/// Reads a whole .npy file into float64 (for `rowflow inspect`, tests and merge); the streaming path for
/// data is the decoder, not this.
public enum NpyReader {
    public struct Array2D: Sendable, Equatable {
        public var shape: [Int]
        public var dtype: String
        public var values: [Double]
    }

    public static func read(_ path: String) throws(EngineError) -> Array2D {
        let file = try RawFile.open(path)
        let input = try ByteInput(file)
        let buf = ChunkBuffer(input)
        let h = try NpyHeader.parse(buf, name: path)
        var cfg = SourceConfig()
        cfg.columns = h.columns
        let dec = try BinaryDecoder(buf, element: h.element, rawColumns: h.columns, config: { var c = cfg; c.allowNonfinite = true; return c }(),
                                    firstRow: 0, rowsKnown: h.rows, expectedRows: h.rows)
        var values: [Double] = []
        var batch = RowBatch(columns: h.columns, capacity: RowBatch.capacity(batchRows: 4096, columns: h.columns), hasTarget: false, hasWeight: false)
        let bad = BadRowHandler(policy: .fail)
        while true {
            batch.reset()
            let more = try dec.fill(&batch, bad: bad)
            values += batch.features[0..<batch.count * h.columns]
            if !more { break }
        }
        let text = h.element
        let dtype: String
        switch text {
        case .f4: dtype = "<f4"
        case .f8: dtype = "<f8"
        case .i8: dtype = "<i8"
        default: dtype = "int"
        }
        return Array2D(shape: h.rows == Int64(values.count) && h.columns == 1 ? [Int(h.rows)] : [Int(h.rows), h.columns],
                       dtype: dtype, values: values)
    }
}

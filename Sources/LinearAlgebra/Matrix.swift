import COpenBLAS

/// A dense float64 matrix in **row-major** order: element (i, j) lives at `storage[i * cols + j]`.
///
/// Row-major matches how rows arrive from a stream (a batch of rows is already a row-major block), so
/// batches go to BLAS without a copy. LAPACK is column-major; the wrappers below document how each call
/// maps (a row-major m×n matrix is the column-major n×m transpose; symmetric matrices are the same both
/// ways).
public struct Matrix: Equatable, Sendable {
    public let rows: Int
    public let cols: Int
    public var storage: [Double]

    public init(rows: Int, cols: Int, repeating value: Double = 0) {
        precondition(rows >= 0 && cols >= 0)
        self.rows = rows
        self.cols = cols
        self.storage = [Double](repeating: value, count: rows * cols)
    }

    public init(rows: Int, cols: Int, storage: [Double]) {
        precondition(storage.count == rows * cols, "storage has \(storage.count) elements, expected \(rows * cols)")
        self.rows = rows
        self.cols = cols
        self.storage = storage
    }

    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, cols: n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }

    @inline(__always)
    public subscript(i: Int, j: Int) -> Double {
        get { storage[i * cols + j] }
        set { storage[i * cols + j] = newValue }
    }

    public var transposed: Matrix {
        var t = Matrix(rows: cols, cols: rows)
        for i in 0..<rows { for j in 0..<cols { t[j, i] = self[i, j] } }
        return t
    }

    /// Copies the upper triangle into the lower one (BLAS syrk fills only one triangle).
    public mutating func symmetrizeFromUpper() {
        precondition(rows == cols)
        for i in 0..<rows { for j in 0..<i { self[i, j] = self[j, i] } }
    }

    /// self · other, via dgemm.
    public func multiplied(by other: Matrix) -> Matrix {
        precondition(cols == other.rows, "inner dimensions differ: \(cols) vs \(other.rows)")
        var c = Matrix(rows: rows, cols: other.cols)
        if rows == 0 || other.cols == 0 || cols == 0 { return c }
        storage.withUnsafeBufferPointer { a in
            other.storage.withUnsafeBufferPointer { b in
                c.storage.withUnsafeMutableBufferPointer { cp in
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(other.cols),
                                Int32(cols), 1, a.baseAddress, Int32(cols), b.baseAddress, Int32(other.cols),
                                0, cp.baseAddress, Int32(other.cols))
                }
            }
        }
        return c
    }

    /// self · x, via dgemv.
    public func multiplied(by x: [Double]) -> [Double] {
        precondition(cols == x.count)
        var y = [Double](repeating: 0, count: rows)
        if rows == 0 || cols == 0 { return y }
        storage.withUnsafeBufferPointer { a in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, a.baseAddress,
                                Int32(cols), xp.baseAddress, 1, 0, yp.baseAddress, 1)
                }
            }
        }
        return y
    }
}

/// Sets the OpenBLAS thread count. rowflow sets it explicitly: 1 while a decode thread runs beside the
/// compute thread (two BLAS threads next to a busy core are slower than one: measured 2× slower for ssyrk with the other core busy).
public enum BLASThreads {
    public static func set(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var current: Int { Int(openblas_get_num_threads()) }
}

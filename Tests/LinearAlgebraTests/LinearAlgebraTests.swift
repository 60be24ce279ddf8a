import LinearAlgebra
import TestSupport
import Testing

@Suite struct LAPACKTests {
    /// [[2,1],[1,2]] has eigenvalues 3 and 1 with eigenvectors (1,1)/√2 and (1,−1)/√2 — exact answers.
    @Test func symmetricEigenOf2x2() throws {
        let (w, v) = try LAPACK.symmetricEigen(Matrix(rows: 2, cols: 2, storage: [2, 1, 1, 2]))
        #expect(abs(w[0] - 3) < 1e-14 && abs(w[1] - 1) < 1e-14)
        #expect(abs(abs(v[0, 0]) - 0.5.squareRoot()) < 1e-14 && abs(v[0, 0] - v[0, 1]) < 1e-14)
    }

    /// Reconstruction V diag(w) Vᵀ = S to ~n·ε·‖S‖ (backward stability of dsyevd).
    @Test func eigenReconstructs() throws {
        let a = gaussianMatrix(rows: 40, cols: 12, seed: 3)
        let s = a.transposed.multiplied(by: a)
        let (w, v) = try LAPACK.symmetricEigen(s)
        var r = Matrix(rows: 12, cols: 12)
        for k in 0..<12 { for i in 0..<12 { for j in 0..<12 { r[i, j] += w[k] * v[k, i] * v[k, j] } } }
        #expect(relativeError(r.storage, s.storage) < 1e-13)
        #expect(zip(w, w.dropFirst()).allSatisfy { $0 >= $1 })
    }

    /// Cholesky solve of an SPD system against the residual: ‖Sx − b‖ ≤ κ·ε scale.
    @Test func choleskySolve() throws {
        let a = gaussianMatrix(rows: 50, cols: 8, seed: 4)
        let s = a.transposed.multiplied(by: a)
        let b = (0..<8).map { Double($0) - 3.5 }
        let x = try LAPACK.choleskySolve(s, b)
        #expect(relativeError(s.multiplied(by: x), b) < 1e-12)
    }

    @Test func choleskyRejectsIndefinite() {
        #expect(throws: LinearAlgebraError.self) { try LAPACK.choleskySolve(Matrix(rows: 2, cols: 2, storage: [1, 2, 2, 1]), [1, 1]) }
    }

    /// diag(3, 2) padded with a zero row has singular values 3 and 2.
    @Test func singularValues() throws {
        let s = try LAPACK.singularValues(Matrix(rows: 3, cols: 2, storage: [0, 2, 3, 0, 0, 0]))
        #expect(abs(s[0] - 3) < 1e-15 && abs(s[1] - 2) < 1e-15)
    }

    /// dgels on an exactly consistent system recovers the coefficients.
    @Test func leastSquaresExact() throws {
        let a = gaussianMatrix(rows: 30, cols: 4, seed: 5)
        let x0 = [1.0, -2, 0.5, 3]
        let x = try LAPACK.leastSquares(a, a.multiplied(by: x0))
        #expect(relativeError(x, x0) < 1e-13)
    }

    @Test func orthonormalColumns() throws {
        let q = try LAPACK.orthonormalColumns(gaussianMatrix(rows: 20, cols: 6, seed: 6))
        let i = q.transposed.multiplied(by: q)
        #expect(relativeError(i.storage, Matrix.identity(6).storage) < 1e-14)
    }
}

import LinearAlgebra
import Foundation
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

@Suite struct DPPLinearAlgebraTests {
    /// Orthonormality against Gauss–Legendre quadrature (Golub–Welsch: nodes = eigenvalues of the Jacobi
    /// matrix with off-diagonal k/√(4k²−1), weights 2·v₀²), exact for degree ≤ 2·40 − 1: ½Σwφ_jφ_k = δ_jk to
    /// 1e-12; and the closed forms P₂ = (3x²−1)/2, P₃ = (5x³−3x)/2.
    @Test func legendreIsOrthonormal() throws {
        let n = 40, m = 30
        var j = Matrix(rows: n, cols: n)
        for k in 1..<n { let b = Double(k) / (4 * Double(k * k) - 1).squareRoot(); j[k - 1, k] = b; j[k, k - 1] = b }
        let e = try LAPACK.symmetricEigen(j)
        var g = Matrix(rows: m, cols: m)
        for q in 0..<n {
            let x = e.values[q], w = 2 * e.vectors[q, 0] * e.vectors[q, 0]
            let f = Legendre.orthonormal(x, count: m)
            for a in 0..<m { for b in 0..<m { g[a, b] += 0.5 * w * f[a] * f[b] } }
        }
        #expect(relativeError(g.storage, Matrix.identity(m).storage) < 1e-12)
        for x in [-1.0, -0.3, 0, 0.77, 1] {
            let f = Legendre.orthonormal(x, count: 4)
            #expect(abs(f[2] - 5.0.squareRoot() * (3 * x * x - 1) / 2) < 1e-15 && abs(f[3] - 7.0.squareRoot() * (5 * x * x * x - 3 * x) / 2) < 1e-14)
        }
    }

    /// The streamed QR's R against a Householder QR of the whole matrix: RᵀR equal to 1e-12 relative, R upper
    /// triangular, whatever the blocks (rows 1, 7, 300 and all at once) — and κ(R) = κ(A) at κ = 1e10, where
    /// a Gram matrix would have κ = 1e20 (singular values of R against dgesdd of A, 1e-5 relative on σ_min:
    /// the backward error ~ε·σ₁ over σ_min = 1e-10·σ₁).
    @Test func streamingQRMatchesWholeQR() throws {
        var a = gaussianMatrix(rows: 900, cols: 5, seed: 51)
        let v = try LAPACK.svd(a)
        // Rescale the singular values to 1 … 1e-10 (A = U diag(s) Vᵀ).
        var d = Matrix(rows: 5, cols: 5)
        for k in 0..<5 { d[k, k] = pow(1e-10, Double(k) / 4) }
        a = v.u.multiplied(by: d).multiplied(by: v.vt)
        let want = try LAPACK.singularValues(a)
        for block in [1, 7, 300, 900] {
            var qr = StreamingQR(columns: 5)
            var start = 0
            while start < 900 {
                let n = min(block, 900 - start)
                try a.storage.withUnsafeBufferPointer { p in try qr.absorb(p.baseAddress! + start * 5, rows: n) }
                start += n
            }
            let r = Matrix(rows: 5, cols: 5, storage: qr.r)
            for i in 0..<5 { for k in 0..<i { #expect(r[i, k] == 0) } }
            let got = try LAPACK.singularValues(r)
            for k in 0..<5 { #expect(abs(got[k] - want[k]) <= 1e-5 * want[k], "block \(block) σ\(k)") }
            #expect(relativeError(r.transposed.multiplied(by: r).storage, a.transposed.multiplied(by: a).storage) < 1e-12)
        }
    }

    /// dgelsd: full rank equals dgels; a rank-deficient system gives the minimum-norm solution (x ⟂ null space).
    @Test func minimumNormLeastSquares() throws {
        let a = gaussianMatrix(rows: 20, cols: 4, seed: 52)
        let b = (0..<20).map { Double($0 % 3) }
        let x = try LAPACK.leastSquaresMinNorm(a, b, rcond: 1e-12)
        let ref = try LAPACK.leastSquares(a, b)
        #expect(x.rank == 4 && relativeError(x.x, ref) < 1e-12)
        var dup = Matrix(rows: 20, cols: 5)
        for i in 0..<20 { for j in 0..<4 { dup[i, j] = a[i, j] }; dup[i, 4] = a[i, 0] }
        let y = try LAPACK.leastSquaresMinNorm(dup, b, rcond: 1e-12)
        #expect(y.rank == 4 && abs(y.x[0] - y.x[4]) < 1e-12)   // the null vector is e₀ − e₄
        #expect(abs(y.x[0] + y.x[4] - x.x[0]) < 1e-12)
    }
}

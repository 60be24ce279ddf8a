import Foundation
import TestSupport
import Testing

/// Real public data sets, as users have them (Fixtures/penguins, Fixtures/longley: see their READMEs), run
/// through their Pipelines/*.yaml and compared with what pandas, scikit-learn and NIST say
/// (Fixtures/*/reference.json, written by the reference.py beside it).
@Suite(.serialized) struct RealDataTests {
    func run(_ name: String) throws -> (out: String, ref: [String: Any], stderr: String) {
        let fixture = packageRoot + "/Fixtures/" + name
        let input = try FileManager.default.contentsOfDirectory(atPath: fixture).first { $0.hasPrefix("input.") }!
        let out = temporaryDirectory("real") + "/out"
        let r = rowflow(["run", packageRoot + "/Pipelines/\(name).yaml", "--input", fixture + "/" + input, "--out", out, "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        return (out, try loadJSON(fixture + "/reference.json"), r.stderr)
    }

    func doubles(_ v: Any?) -> [Double] { (v as? [Any] ?? []).compactMap { ($0 as? NSNumber)?.doubleValue } }
    func number(_ d: [String: Any], _ k: String) -> Double { (d[k] as? NSNumber)?.doubleValue ?? .nan }

    /// Palmer penguins (text columns, NA cells, features on scales −27…231, target in grams): the rows kept and
    /// the per-column skip counts against pandas' dropna; moments against pandas (two float64 sums of 330 values:
    /// 1e-12 relative); least squares with an intercept against LinearRegression and ridge against Ridge(10)
    /// (κ(centred X) = 39, so both sides are good to ≈ κ²·u ≈ 2e-13: 1e-9 asked); PCA against scikit-learn's
    /// (LAPACK SVD of the centred data, ddof = 1): explained variances to 1e-10, components (sign-normalised)
    /// to 1e-8 (gaps λ₁/λ₂ ≥ 1.5 make the vectors as well conditioned as the values).
    @Test func penguinsAgainstPandasAndScikitLearn() throws {
        let (out, ref, _) = try run("penguins")
        let runJSON = try loadJSON(out + "/run.json")
        #expect((runJSON["rows_read"] as? NSNumber)?.intValue == ref["rows"] as? Int)
        #expect((runJSON["rows_skipped"] as? NSNumber)?.intValue == ref["skipped"] as? Int)
        #expect(canonical(runJSON["bad_by_column"] ?? [:]) == canonical(ref["bad_by_column"]!))
        let names = ref["feature_names"] as! [String]
        for op in ["stats", "ols", "ridge", "pca"] {
            #expect(try loadJSON(out + "/\(op)/summary.json")["feature_names"] as? [String] == names, "\(op)")
        }
        #expect(relativeError(try loadNpy(out + "/stats/mean.npy"), doubles(ref["mean"])) < 1e-12)
        #expect(relativeError(try loadNpy(out + "/stats/variance.npy"), doubles(ref["variance"])) < 1e-12)
        for (op, key) in [("ols", "ols"), ("ridge", "ridge")] {
            let s = try loadJSON(out + "/\(op)/summary.json")
            #expect(relativeError(try loadNpy(out + "/\(op)/solution.npy"), doubles(ref[key + "_coef"])) < 1e-9, "\(op)")
            let b = number(s, "intercept"), rb = number(ref, key + "_intercept")
            #expect(abs(b - rb) <= 1e-9 * abs(rb), "\(op) intercept \(b) vs \(rb)")
        }
        let ols = try loadJSON(out + "/ols/summary.json")
        #expect(abs(number(ols, "condition_number") - number(ref, "condition_number")) <= 1e-9 * number(ref, "condition_number"))
        #expect((ols["rank"] as? NSNumber)?.intValue == 5)
        let ev = try loadNpy(out + "/pca/explained_variance.npy"), refEV = doubles(ref["pca_explained_variance"])
        let vectors = try loadNpy(out + "/pca/right_vectors.npy")
        let comps = (ref["pca_components"] as! [[Any]]).flatMap { doubles($0) }
        try #require(ev.count == refEV.count && vectors.count == comps.count)
        #expect(relativeError(ev, refEV) < 1e-10)
        #expect(relativeError(vectors, comps) < 1e-8)
    }

    /// Longley against NIST's certified coefficients. The normal equations lose κ² digits: κ(centred X) =
    /// 5.8·10⁵, so the coefficients are good to ≈ κ²·u ≈ 4e-5 relative in the worst direction (scikit-learn's
    /// QR-based solve does better; NIST certifies 15 digits). Asked: every coefficient and the intercept
    /// within 1e-4 relative; the residual sum of squares (well conditioned) within 1e-8; rank 6 — the near
    /// collinearity must not be mistaken for rank deficiency — and no warning.
    @Test func longleyAgainstNISTCertifiedValues() throws {
        let (out, ref, stderr) = try run("longley")
        let s = try loadJSON(out + "/ols/summary.json")
        let x = try loadNpy(out + "/ols/solution.npy"), cert = doubles(ref["certified_coef"])
        for j in 0..<6 { #expect(abs(x[j] - cert[j]) <= 1e-4 * abs(cert[j]), "coefficient \(j): \(x[j]) vs \(cert[j])") }
        print("longley: largest relative coefficient error against NIST \((0..<6).map { abs(x[$0] - cert[$0]) / abs(cert[$0]) }.max()!)")
        let b = number(s, "intercept"), rb = number(ref, "certified_intercept")
        #expect(abs(b - rb) <= 1e-4 * abs(rb))
        #expect(abs(2 * number(s, "objective") - number(ref, "certified_residual_ss")) <= 1e-8 * number(ref, "certified_residual_ss"))
        #expect((s["rank"] as? NSNumber)?.intValue == 6)
        #expect(abs(number(s, "condition_number") - number(ref, "condition_number")) <= 1e-6 * number(ref, "condition_number"))
        #expect(!stderr.contains("warning"), "\(stderr)")
        #expect(relativeError(try loadNpy(out + "/stats/mean.npy"), doubles(ref["mean"])) < 1e-12)
    }
}

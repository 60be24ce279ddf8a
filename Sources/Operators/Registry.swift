import EngineCore

extension OperatorRegistry {
    /// Every operator shipped with rowflow, in the order `rowflow operators` lists them. Adding an operator
    /// is its folder (the operator, its `OperatorKind` declaration, its state) and one line here; the
    /// manifest validator, `rowflow operators`, merge, the report and the shared law tests
    /// (Tests/OperatorsTests/OperatorLawTests.swift) take it from there.
    public static let standard = OperatorRegistry([
        MomentsOperator.self,
        GramOperator.self,
        TruncatedSVD.self,
        SensitivitySampleOperator.self,
        DPPSampleOperator.self,
        HalpernSolver.self,
        TopEigenvector.self,
    ])
}

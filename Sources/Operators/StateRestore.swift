import EngineCore

extension OperatorDescriptor {
    /// Restores a state the engine wrote — from a checkpoint, a `state.bin` or a blob — after refusing one of
    /// another kind or of a state version this build does not read, each with its own error naming the
    /// location (exit 65: the bytes are intact but not this build's). Every path that restores a state goes
    /// through here, so the refusals read the same wherever the state came from.
    public func restore(kind: String, version: UInt16, payload: [UInt8], params: ParamValues, context: OperatorContext,
                        location: String) throws(EngineError) -> any StreamOperator {
        guard kind == self.kind else {
            throw .usage(location, "state is of operator kind '\(kind)', expected '\(self.kind)'")
        }
        guard version == stateVersion else {
            throw .data(location, "\(self.kind) state version \(version); this rowflow reads version \(stateVersion)",
                        hint: version < stateVersion ? "re-run the shard or resume with the rowflow that wrote it" : "use a newer rowflow")
        }
        return try restore(params, context, payload, location)
    }
}

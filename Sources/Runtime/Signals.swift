import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The signal a run was asked to stop with (0 = none). Set from the signal handler (a lock-free atomic store
/// is async-signal-safe), read by the compute thread between batches and steps.
let pendingSignal = Atomic<Int32>(0)

/// SIGINT/SIGTERM handling for `rowflow run`: the first signal asks the run to finish its current batch or
/// step, write a checkpoint and exit 130/143; a second one exits at once (the previous checkpoint stands).
public enum Signals {
    public static func install() {
        let handler: @convention(c) (Int32) -> Void = { sig in
            if pendingSignal.load(ordering: .relaxed) != 0 { _exit(128 + sig) }
            pendingSignal.store(sig, ordering: .relaxed)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        // A parent may have spawned us with these blocked (some runtimes block SIGINT in their spawning
        // threads): blocked, they would stay pending forever and the run could never be stopped cleanly.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    static var pending: Int32 { pendingSignal.load(ordering: .relaxed) }
}

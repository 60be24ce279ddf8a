#if canImport(Glibc)
import Glibc
#endif

/// A blocking FIFO of bounded capacity between two threads (decode → compute), so a fast producer cannot
/// run ahead by more than `capacity` batches: memory stays bounded whatever the input size.
final class BoundedQueue<T>: @unchecked Sendable {
    private var items: [T] = []
    private let capacity: Int
    private var mutex = pthread_mutex_t()
    private var notEmpty = pthread_cond_t()
    private var notFull = pthread_cond_t()
    private var closed = false

    init(capacity: Int) {
        self.capacity = capacity
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&notEmpty, nil)
        pthread_cond_init(&notFull, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&notEmpty)
        pthread_cond_destroy(&notFull)
    }

    /// Blocks while full; returns false if the queue was closed (the consumer gave up).
    @discardableResult
    func push(_ item: T) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while items.count >= capacity && !closed { pthread_cond_wait(&notFull, &mutex) }
        if closed { return false }
        items.append(item)
        pthread_cond_signal(&notEmpty)
        return true
    }

    /// Items waiting now (a snapshot: the other thread may change it right after).
    var count: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return items.count
    }

    /// Blocks while empty; nil once closed and drained.
    func pop() -> T? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while items.isEmpty && !closed { pthread_cond_wait(&notEmpty, &mutex) }
        if items.isEmpty { return nil }
        let item = items.removeFirst()
        pthread_cond_signal(&notFull)
        return item
    }

    enum Pop { case item(T), timedOut, closed }

    /// Blocks while empty for at most `milliseconds` (so the caller can look at pending signals).
    func pop(milliseconds: Int) -> Pop {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if items.isEmpty && !closed {
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            var deadline = now
            let ns = Int(now.tv_nsec) + milliseconds * 1_000_000
            deadline.tv_sec += ns / 1_000_000_000
            deadline.tv_nsec = ns % 1_000_000_000
            while items.isEmpty && !closed {
                if pthread_cond_timedwait(&notEmpty, &mutex, &deadline) == ETIMEDOUT { break }
            }
        }
        if items.isEmpty { return closed ? .closed : .timedOut }
        let item = items.removeFirst()
        pthread_cond_signal(&notFull)
        return .item(item)
    }

    func close() {
        pthread_mutex_lock(&mutex)
        closed = true
        pthread_cond_broadcast(&notEmpty)
        pthread_cond_broadcast(&notFull)
        pthread_mutex_unlock(&mutex)
    }
}

/// A joinable thread running one closure.
final class WorkerThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let unmanaged = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<WorkerThread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, unmanaged.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() { pthread_join(thread, nil) }
}

//! [`Handoff`]: how one thread hands items to an async task with one wake-up per burst.
//!
//! The writer's `Done` callbacks push acknowledgements (UDP) and answers (HTTP) here, on
//! the writer thread; the edge's task takes them all at once on the runtime's thread.

/// What `Done` callbacks hand from the writer thread to an edge's task: the writer only
/// pushes (a lock and a vector push), and only the first push into an empty queue wakes
/// the task, so a commit of thousands of reports costs one wake-up, not one system call
/// and one thread switch per report.
pub struct Handoff<T> {
    pending: std::sync::Mutex<Vec<T>>,
    ready: tokio::sync::Notify,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Handoff {
            pending: std::sync::Mutex::new(Vec::new()),
            ready: tokio::sync::Notify::new(),
        }
    }
}

impl<T> Handoff<T> {
    pub fn push(&self, item: T) {
        let was_empty = {
            let mut pending = self.lock();
            pending.push(item);
            pending.len() == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Moves every queued item to the end of `into`.
    pub fn take(&self, into: &mut Vec<T>) {
        into.append(&mut self.lock());
    }

    /// Resolves once something was pushed since the last wait (a push while nobody waits
    /// is kept for the next one).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        super::lock(&self.pending)
    }
}

//! What the sinks' threads hand back to the writer: [`Settlements`], the deliveries they
//! finished, which the writer writes down in its next turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::model::event::Settlement;
use crate::state::lock;

/// Finished deliveries waiting for the writer's next turn.
#[derive(Debug, Default)]
pub struct Settlements {
    queue: Mutex<Vec<Settlement>>,
    /// Whether `queue` holds anything: the writer looks at it every turn without the lock.
    waiting: AtomicBool,
}

impl Settlements {
    pub fn push(&self, settled: impl IntoIterator<Item = Settlement>) {
        let mut queue = lock(&self.queue);
        queue.extend(settled);
        self.waiting.store(!queue.is_empty(), Ordering::Release);
    }

    /// Everything waiting, oldest first.
    pub fn take(&self) -> Vec<Settlement> {
        if !self.waiting.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut queue = lock(&self.queue);
        self.waiting.store(false, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    /// Puts back what a failed commit did not write, ahead of what came since.
    pub fn put_back(&self, settled: Vec<Settlement>) {
        if settled.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        let newer = std::mem::replace(&mut *queue, settled);
        queue.extend(newer);
        self.waiting.store(true, Ordering::Release);
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }
}

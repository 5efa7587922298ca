//! Crash points: the steps of a writer's turn where a test stops it as a crash would, to
//! check that the store holds, after a restart, every report that was acknowledged and
//! nothing of a commit that did not happen.
//!
//! The store's commit and the writer's turn call [`crash_point`] at each step. Outside
//! tests it is an empty inline function: no cost, no state. In tests it calls the hook
//! that the test set on its own thread (it drives the writer's turns there), which may
//! check what readers see at that step, and unwind as a crash would.

/// A step of a writer's turn, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum CrashPoint {
    /// The batch decided and the turn built; nothing written yet.
    BeforeCommit,
    /// In the commit's transaction: its journal entry appended.
    JournalAppended,
    /// In the transaction: the sweep chunk's changes settled into `history`.
    HistorySettled,
    /// In the transaction: the reports counted.
    ReportsCounted,
    /// In the transaction: the sweep chunk written into the snapshot.
    SnapshotWritten,
    /// In the transaction: journal entries from before the sweep dropped.
    JournalDropped,
    /// In the transaction: the history's oldest changes pruned; not yet committed.
    HistoryPruned,
    /// The turn's events and settled deliveries are written.
    OutboxWritten,
    /// The turn's TXT records and acme-dns accounts are written; not yet committed.
    TxtWritten,
    /// The transaction committed; neither the writer's own state nor the table updated.
    Committed,
    /// The table shows the batch and the sweep moved on; no report answered yet.
    TableUpdated,
    /// Every report of the batch answered: the turn is over.
    Answered,
}

impl CrashPoint {
    /// Whether the turn's commit happened by this step.
    #[cfg(test)]
    pub(crate) fn is_committed(self) -> bool {
        self >= CrashPoint::Committed
    }
}

/// Where a turn reaches `point`.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn crash_point(_point: CrashPoint) {}

/// Where a turn reaches `point`: calls the thread's hook, if one is set.
#[cfg(test)]
pub(crate) fn crash_point(point: CrashPoint) {
    HOOK.with(|hook| {
        if let Some(hook) = hook.borrow_mut().as_mut() {
            hook(point);
        }
    });
}

/// What a test does at each crash point of the turns it drives on this thread.
#[cfg(test)]
pub(crate) type Hook = Box<dyn FnMut(CrashPoint)>;

#[cfg(test)]
thread_local! {
    static HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// Sets (or with `None` removes) this thread's hook; returns the one it replaces.
#[cfg(test)]
pub(crate) fn set_hook(hook: Option<Hook>) -> Option<Hook> {
    HOOK.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), hook))
}

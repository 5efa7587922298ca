//! The checkpointer: copies the write-ahead log into the database on a thread and
//! connection of its own, so that no commit waits for a checkpoint.

use std::path::Path;
use std::time::Duration;

use rusqlite::OpenFlags;

use super::{Store, StoreError};

/// How often the checkpointer copies the write-ahead log into the database. Checkpoints
/// run on their own connection and thread, so a commit never waits for one (on the
/// writer's connection SQLite's automatic checkpoint held commits for 10–20 ms at a time).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Checkpoints the store's write-ahead log every `CHECKPOINT_INTERVAL` on a connection
/// of its own (`PASSIVE`: it never blocks the writer), until `stop` is dropped.
///
/// # Errors
/// When the store cannot be opened; a failed checkpoint is only logged (the writer's
/// fallback checkpoint still bounds the log).
pub fn keep_checkpointed(
    path: &Path,
    stop: &std::sync::mpsc::Receiver<()>,
) -> Result<(), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let store = Store::connect(path, flags)?;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        let res = store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(0)
            });
        if let Err(e) = res {
            tracing::warn!(store = %path.display(), error = %e, "checkpoint failed");
        }
    }
    Ok(())
}

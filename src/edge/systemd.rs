//! The service manager's side of the server: readiness, status, the watchdog, and the
//! journal's log format.
//!
//! Owns the `sd_notify` messages (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`) and
//! the test of whether stderr is the journal. Outside systemd (no `NOTIFY_SOCKET`, no
//! `WATCHDOG_USEC`, no `JOURNAL_STREAM`) every function here does nothing. Must not decide
//! anything about reports: it only reads the writer's [`Liveness`] and the counters.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::edge::net;
use crate::state::metrics::Metrics;
use crate::state::table::Table;
use crate::writer::Liveness;

/// How often `STATUS=` is refreshed without a watchdog: often enough that
/// `systemctl status` is current when someone looks, rarely enough to cost nothing.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Tells the service manager the server is ready: the store is open and every listener
/// is bound. Sent once, after which connections to any listener are served.
pub fn ready(table: &Table, metrics: &Metrics) {
    let status = status_line(table, metrics);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells the service manager the server is shutting down (after SIGINT or SIGTERM, while
/// it commits what it received).
fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("shutting down: committing what was received"),
    ]);
}

/// Keeps `STATUS=` current and, when the unit sets `WatchdogSec=`, sends `WATCHDOG=1` at
/// half that interval (as `sd_watchdog_enabled(3)` advises) for as long as the writer
/// makes progress: a writer idle for lack of reports is alive, one stuck inside a commit
/// for half the interval is not, and the missing keep-alives get the service restarted.
/// When `shutdown` is cancelled, sends `STOPPING=1` and returns.
pub async fn keep_alive(
    liveness: Arc<Liveness>,
    table: Arc<Table>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |interval| (interval / 2).min(STATUS_EVERY));
    let mut ticks = net::every(every, &shutdown);
    let mut was_stuck = false;
    while ticks.tick().await {
        let status = status_line(&table, &metrics);
        let Some(interval) = watchdog else {
            send(&[NotifyState::Status(&status)]);
            continue;
        };
        match liveness.busy_for() {
            Some(busy) if busy >= interval / 2 => {
                if !was_stuck {
                    warn!(
                        busy_ms = busy.as_millis() as u64,
                        "the writer has been inside one commit for half the watchdog interval: keep-alives stop until it finishes"
                    );
                }
                was_stuck = true;
            }
            _ => {
                was_stuck = false;
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            }
        }
    }
    stopping();
}

/// What `systemctl status` shows under the unit's name.
fn status_line(table: &Table, metrics: &Metrics) -> String {
    format!(
        "{} hosts known, {} reports accepted",
        table.len(),
        metrics.n_accepted()
    )
}

/// Sends `states`; a failure is logged and otherwise ignored (a service manager that went
/// away must not stop the server).
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` names its device and
/// inode (`DEV:INO`), as systemd sets it for a unit's standard error. A redirected stderr
/// (`dynip server ... 2>file` in a unit) no longer matches, so only lines that really go
/// to the journal get priority prefixes.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|text| text.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|meta| meta.dev() == dev && meta.ino() == ino)
}

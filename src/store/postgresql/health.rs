//! Whether the database answers, as `/healthz` and `/metrics` show it.

use super::*;

/// Whether the database answers, for `/healthz` and `/metrics`; shared by the threads
/// that hold a connection.
#[derive(Debug)]
pub struct DatabaseHealth {
    up: AtomicBool,
    /// When it stopped answering (µs since the Unix epoch), while it does not.
    down_since: AtomicI64,
    /// Failed connections and statements.
    errors: AtomicU64,
    /// Records and TXT sets learned from other servers' commits.
    remote_changes: AtomicU64,
}

impl Default for DatabaseHealth {
    fn default() -> DatabaseHealth {
        DatabaseHealth {
            up: AtomicBool::new(true),
            down_since: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            remote_changes: AtomicU64::new(0),
        }
    }
}

impl DatabaseHealth {
    /// `None` while the database answers; else since when it has not.
    pub fn down_since(&self) -> Option<Time> {
        (!self.up.load(Ordering::Acquire))
            .then(|| Time::from_micros(self.down_since.load(Ordering::Acquire)))
    }

    pub(super) fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            self.down_since
                .store(Time::now().as_micros(), Ordering::Release);
        }
    }

    pub(super) fn answered(&self) {
        self.up.store(true, Ordering::Release);
    }

    /// Counts records learned from other servers.
    pub fn learned(&self, n: usize) {
        self.remote_changes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus families, appended to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let up = u8::from(self.up.load(Ordering::Acquire));
        let _ = write!(
            out,
            "# HELP dynip_database_up Whether the PostgreSQL database answered the last statement (1) or not (0).\n\
             # TYPE dynip_database_up gauge\n\
             dynip_database_up {up}\n\
             # HELP dynip_database_errors_total Connections and statements to the PostgreSQL database that failed.\n\
             # TYPE dynip_database_errors_total counter\n\
             dynip_database_errors_total {}\n\
             # HELP dynip_database_remote_changes_total Records and TXT sets learned from other servers' commits.\n\
             # TYPE dynip_database_remote_changes_total counter\n\
             dynip_database_remote_changes_total {}\n",
            self.errors.load(Ordering::Relaxed),
            self.remote_changes.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_goes_down_and_up() {
        let health = DatabaseHealth::default();
        assert_eq!(health.down_since(), None);
        health.failed();
        assert!(health.down_since().is_some());
        let mut out = String::new();
        health.render_prometheus(&mut out);
        assert!(out.contains("dynip_database_up 0\n"), "{out}");
        assert!(out.contains("dynip_database_errors_total 1\n"), "{out}");
        health.answered();
        assert_eq!(health.down_since(), None);
    }
}

//! The zone's empty non-terminals, and the task that keeps them current and notes
//! addresses going stale.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{all_hosts, NOTIFY_EVERY};
use crate::edge::net;
use crate::model::record::Time;
use crate::state;
use crate::state::table::Table;

/// The zone's empty non-terminals: `garage` while `pi.garage` is a host, `pc` while
/// `_acme-challenge.pc` has a TXT record. Rebuilt when a host is added or a TXT name
/// comes or goes, at most once per [`NOTIFY_EVERY`]; read only for names that are not
/// hosts.
#[derive(Debug, Default)]
pub(super) struct Interior(std::sync::RwLock<std::collections::HashSet<String>>);

impl Interior {
    pub(super) fn contains(&self, relative: &str) -> bool {
        let names = state::read(&self.0);
        !names.is_empty() && names.contains(relative)
    }

    pub(super) fn rebuild(&self, table: &Table) {
        let mut names = std::collections::HashSet::new();
        let txt_names = table.all_txt().into_iter().map(|(name, _)| name);
        for name in all_hosts(table)
            .into_iter()
            .map(|(name, _)| name)
            .chain(txt_names)
        {
            let folded = name.folded();
            for (idx, _) in folded.match_indices('.') {
                names.insert(folded[idx + 1..].to_owned());
            }
        }
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = names;
    }
}

/// Keeps the interior up to date (rebuilt when hosts were added) and, with
/// `dns_hide_stale`, notes addresses going stale as changes, so the serial rises when
/// one does. Looks once per [`NOTIFY_EVERY`]; walks the table only when one is due.
pub(super) async fn keep_interior_and_note_stale(
    interior: Arc<Interior>,
    table: Arc<Table>,
    shutdown: CancellationToken,
) {
    let mut n_hosts = table.len();
    let mut txt_generation = table.txt_generation();
    // When the next address goes stale, as of the last walk, and the table then.
    let mut next_stale = Some(Time::from_micros(i64::MIN));
    let mut generation = table.generation();
    let mut ticks = net::every(NOTIFY_EVERY, &shutdown);
    while ticks.tick().await {
        // Hosts are never removed: a new count is a new host.
        if table.len() != n_hosts || table.txt_generation() != txt_generation {
            n_hosts = table.len();
            txt_generation = table.txt_generation();
            let (interior, table) = (Arc::clone(&interior), Arc::clone(&table));
            // A walk of the whole table: not on the runtime's one thread.
            let _ = tokio::task::spawn_blocking(move || interior.rebuild(&table)).await;
        }
        let now = Time::now();
        // A report only makes an address go stale later than the earliest one known;
        // when none was fresh, it may have made one.
        let due = match next_stale {
            Some(next) => next <= now,
            None => table.generation() != generation,
        };
        if due {
            generation = table.generation();
            let walked = Arc::clone(&table);
            if let Ok(next) = tokio::task::spawn_blocking(move || walked.note_stale(now)).await {
                next_stale = next;
            }
        }
    }
}

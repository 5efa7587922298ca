//! Logging set-up: stderr at WARN by default, as the original did, and the journal's
//! priorities when stderr is the journal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::Verbosity;

/// Whether stderr is the journal (only under systemd, on Unix).
pub(super) fn stderr_is_journal() -> bool {
    #[cfg(feature = "server")]
    return crate::edge::systemd::stderr_is_journal();
    #[cfg(not(feature = "server"))]
    return false;
}

/// Logs to stderr at WARN by default, as the original did; `RUST_LOG` overrides the flags.
/// Into the journal, each line starts with its syslog priority (`<3>` for an error) and
/// has no time of its own (the journal keeps one), so `journalctl -p err` finds errors.
pub(super) fn init_logging(verbosity: Verbosity, journal: bool) {
    let default = if verbosity.quiet {
        "error"
    } else if verbosity.debug {
        "debug"
    } else if verbosity.verbose {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journal {
        let format = tracing_subscriber::fmt::format().without_time();
        subscriber
            .with_ansi(false)
            .event_format(Prioritized(format))
            .init();
    } else {
        subscriber.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// A log line format with the syslog priority of the event's level in front (`<3>`
/// error, `<4>` warning, `<6>` info, `<7>` debug and trace), as systemd reads lines on a
/// unit's stderr (sd-daemon(3)).
struct Prioritized<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prioritized<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

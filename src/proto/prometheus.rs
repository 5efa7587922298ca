//! Prometheus's text exposition format (version 0.0.4), written: the one writer behind
//! `/metrics`, for the server's own counters (`state::metrics`) and DNS's.
//!
//! Owns the syntax: a family's `# HELP` and `# TYPE` lines, samples with their labels,
//! the escaping of help text and label values, and a histogram's cumulative buckets,
//! `_sum` and `_count`. Pure: the caller loads its counters and passes the numbers in;
//! no atomics, locks or I/O. Writing into a `String` cannot fail.

use std::fmt::Write as _;

/// A family's type, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Starts a family: its `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: MetricType, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape(out, help, false);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// One sample of `name`, with `labels` (name, value) in order.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (idx, (label, label_value)) in labels.iter().enumerate() {
            if idx > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape(out, label_value, true);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family of one sample without labels.
pub fn single(out: &mut String, name: &str, kind: MetricType, help: &str, value: u64) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

/// A whole histogram family: `buckets` are (upper bound, observations in that bucket
/// alone), ascending; `above` counts those above the last bound; `sum` is their total.
pub fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: impl IntoIterator<Item = (f64, u64)>,
    above: u64,
    sum: f64,
) {
    family(out, name, MetricType::Histogram, help);
    let mut cumulative = 0;
    for (bound, count) in buckets {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += above;
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// Appends `text` escaped as the format asks: a backslash and a line feed in help text,
/// and a double quote too in a label value.
fn escape(out: &mut String, text: &str, is_label_value: bool) {
    if !text.contains(['\\', '\n', '"']) {
        out.push_str(text);
        return;
    }
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if is_label_value => out.push_str("\\\""),
            ch => out.push(ch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(write: impl FnOnce(&mut String), expect: &str) {
        let mut out = String::new();
        write(&mut out);
        assert_eq!(out, expect);
    }

    #[test]
    fn families_and_samples() {
        check(
            |out| {
                family(out, "x_total", MetricType::Counter, "Things done.");
                sample(out, "x_total", &[("path", "udp")], 3);
                sample(out, "x_total", &[("path", "http"), ("reason", "skew")], 0);
            },
            "# HELP x_total Things done.\n# TYPE x_total counter\n\
             x_total{path=\"udp\"} 3\nx_total{path=\"http\",reason=\"skew\"} 0\n",
        );
        check(
            |out| single(out, "hosts", MetricType::Gauge, "Hosts known.", 42),
            "# HELP hosts Hosts known.\n# TYPE hosts gauge\nhosts 42\n",
        );
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        check(
            |out| family(out, "x", MetricType::Gauge, "a \\ b\nc \"d\""),
            "# HELP x a \\\\ b\\nc \"d\"\n# TYPE x gauge\n",
        );
        check(
            |out| sample(out, "x", &[("name", "a\\b\n\"c\"")], 1),
            "x{name=\"a\\\\b\\n\\\"c\\\"\"} 1\n",
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        check(
            |out| {
                histogram(
                    out,
                    "h",
                    "Sizes.",
                    [(1.0, 2), (0.5e1, 0), (10.0, 3)],
                    1,
                    41.5,
                )
            },
            "# HELP h Sizes.\n# TYPE h histogram\n\
             h_bucket{le=\"1\"} 2\nh_bucket{le=\"5\"} 2\nh_bucket{le=\"10\"} 5\n\
             h_bucket{le=\"+Inf\"} 6\nh_sum 41.5\nh_count 6\n",
        );
        check(
            |out| histogram(out, "h", "Latency.", [(0.00025, 0)], 0, 0.0),
            "# HELP h Latency.\n# TYPE h histogram\n\
             h_bucket{le=\"0.00025\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n",
        );
    }
}

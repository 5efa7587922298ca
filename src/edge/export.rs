//! The original's JSON file (`client_log_path`): read once to import, written as a live
//! export.
//!
//! Owns the format, `{"host": ["address", "YYYY-MM-DD HH:MM:SS.ffffff"], ...}` with naive
//! local times, and the atomic replacement of the file (temporary file in the same
//! directory, fsync, rename, fsync of the directory), so a reader never sees half a file
//! and a crash never leaves one. Never writes over a file it could not read as this
//! format: the caller checks with [`read`] first.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::{Deserializer, MapAccess, Visitor};
use tracing::{debug, error};

use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::state::table::Table;

/// Entries copied out of the table per read lock while exporting: small enough that the
/// writer never waits long for the lock, large enough that locking costs nothing.
const EXPORT_CHUNK: usize = 4096;
/// The export is written at most this often ("about once a second", as DESIGN 3 asks)...
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// ...and no more often than this many times its own duration, so that a large table's
/// export (about 0.5 s at 1,000,000 hosts) takes at most a tenth of a core.
const DUTY_FACTOR: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read client log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "client log {path} is not a DynIP JSON file ({detail}); it was left as it is: \
         repair it, or move it away to start without it"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write client log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the original's file held, checked.
#[derive(Debug, Default)]
pub struct Imported {
    /// The entries that make valid records.
    pub hosts: Vec<(Name, Record)>,
    /// Why each other entry was skipped.
    pub skipped: Vec<String>,
    /// Whether the file existed with any entry at all.
    pub n_entries: usize,
}

/// Reads and checks the file at `path`; a missing or blank file holds nothing.
///
/// An entry of the right shape whose name, address or time is not valid is skipped with a
/// reason (the original stored names with a trailing newline: those are trimmed, as the
/// server trims datagrams). A file not of the shape is an error.
///
/// # Errors
/// When the file cannot be read, or is not a JSON object of `name → [address, time]`.
pub fn read(path: &Path) -> Result<Imported, ExportError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Imported::default()),
        Err(source) => {
            return Err(ExportError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim_ascii().is_empty() {
        return Ok(Imported::default());
    }
    decode(&text).map_err(|detail| ExportError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })
}

/// Decodes the file's bytes. Entries stream through one at a time, so a file of a
/// million hosts costs no more memory than its records.
///
/// # Errors
/// The reason the bytes are not the format.
pub fn decode(text: &[u8]) -> Result<Imported, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let imported = deserializer
        .deserialize_map(FileVisitor)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(imported)
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = Imported;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of host name → [address, time]")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Imported, M::Error> {
        let mut imported = Imported::default();
        while let Some((name, (address, time))) = map.next_entry::<String, (String, String)>()? {
            imported.n_entries += 1;
            match entry(&name, &address, &time) {
                Ok(host) => imported.hosts.push(host),
                Err(reason) => imported.skipped.push(format!("{name:?}: {reason}")),
            }
        }
        Ok(imported)
    }
}

fn entry(name: &str, address: &str, time: &str) -> Result<(Name, Record), String> {
    let name = Name::parse(name.trim_end()).map_err(|e| e.to_string())?;
    let addr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    let at = Time::parse_original(time)
        .ok_or_else(|| format!("{time:?} is not a time like \"2011-08-22 22:57:01.123456\""))?;
    Ok((name, Record::new(addr, at)))
}

/// Writes the table to `path` in the original's format, atomically.
///
/// # Errors
/// When any step of writing, syncing or renaming fails; the old file is then untouched.
pub fn write(path: &Path, table: &Table) -> Result<(), ExportError> {
    let failed = |source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let res = write_temp(&temp, table)
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if res.is_err() {
        let _ = fs::remove_file(&temp);
    }
    res.map_err(failed)
}

fn write_temp(temp: &Path, table: &Table) -> std::io::Result<()> {
    let file = File::create(temp)?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    out.write_all(b"{")?;
    let mut first = true;
    for chunk in table.chunks(EXPORT_CHUNK) {
        for (name, entry) in &chunk {
            let Some((addr, at)) = entry.record.latest() else {
                continue;
            };
            if !first {
                out.write_all(b", ")?;
            }
            first = false;
            serde_json::to_writer(&mut out, name.as_str())?;
            write!(out, ": [\"{addr}\", \"{}\"]", at.original())?;
        }
    }
    out.write_all(b"}")?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Keeps the export current: writes it when the table changed, at most every
/// `MIN_INTERVAL` (longer for a large table), and once more when `stop` is dropped.
///
/// # Errors
/// The last write's failure, if the final export failed.
pub fn keep_current(
    path: &Path,
    table: &Arc<Table>,
    stop: &Receiver<()>,
    mut written_generation: u64,
) -> Result<(), ExportError> {
    let mut interval = MIN_INTERVAL;
    loop {
        let stopping = match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let generation = table.generation();
        if generation != written_generation {
            let started = Instant::now();
            match write(path, table) {
                Ok(()) => {
                    written_generation = generation;
                    let took = started.elapsed();
                    interval = MIN_INTERVAL.max(took * DUTY_FACTOR);
                    debug!(path = %path.display(), ?took, "client log written");
                }
                Err(e) if stopping => return Err(e),
                Err(e) => error!(error = %e, "export failed; retrying"),
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<(Vec<&str>, usize), &str>) {
        let res = decode(input.as_bytes()).map(|imported| {
            let names = imported
                .hosts
                .iter()
                .map(|(name, _)| name.as_str().to_string());
            (names.collect::<Vec<_>>(), imported.skipped.len())
        });
        match (res, expect) {
            (Ok((names, n_skipped)), Ok((expect_names, expect_skipped))) => {
                assert_eq!(names, expect_names, "input {input:?}");
                assert_eq!(n_skipped, expect_skipped, "input {input:?}");
            }
            (Err(detail), Err(expect)) => assert!(detail.contains(expect), "{detail}"),
            (res, expect) => panic!("input {input:?}: got {res:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn reads_the_original_format() {
        check(
            r#"{"kitchen-pc": ["203.0.113.7", "2011-08-22 22:57:01.123456"]}"#,
            Ok((vec!["kitchen-pc"], 0)),
        );
        check(
            r#"{"pc\n": ["203.0.113.7", "2011-08-22 22:57:01"], "bad name": ["203.0.113.7", "2011-08-22 22:57:01"], "x": ["nope", "2011-08-22 22:57:01"], "y": ["::1", "then"]}"#,
            Ok((vec!["pc"], 3)),
        );
        check("{}", Ok((vec![], 0)));
    }

    #[test]
    fn refuses_other_shapes() {
        check("[]", Err("expected an object"));
        check(r#"{"a": "203.0.113.7"}"#, Err("invalid type"));
        check(r#"{"a": ["203.0.113.7"]}"#, Err("invalid length"));
        check(
            r#"{"a": ["203.0.113.7", "2011-08-22 22:57:01"]"#,
            Err("EOF"),
        );
        check(r#"{} {}"#, Err("trailing characters"));
    }

    #[test]
    fn writes_what_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.json");
        let text = r#"{"b": ["2001:db8::1", "2011-08-22 22:57:01.000001"], "A": ["203.0.113.7", "2011-08-22 22:57:01.123456"]}"#;
        let imported = decode(text.as_bytes()).unwrap();
        let table = Table::default();
        table.update(imported.hosts.iter().map(|&(ref name, record)| {
            let entry = crate::state::table::Entry {
                record,
                seq: 0,
                dirty: false,
            };
            (name.clone(), entry)
        }));
        write(&path, &table).unwrap();
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            r#"{"A": ["203.0.113.7", "2011-08-22 22:57:01.123456"], "b": ["2001:db8::1", "2011-08-22 22:57:01.000001"]}"#
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }
}

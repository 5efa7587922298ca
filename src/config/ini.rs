//! The INI layer: Python 2.7 `RawConfigParser._read`, knowing no key. The module doc of
//! `config` specifies the dialect rule by rule.

use std::collections::HashMap;

use super::{ConfigError, DEFAULT_SECTION, MAX_QUOTED_CHARS};

/// A parsed INI file: string options by section, merged, in file order.
#[derive(Debug, Default)]
pub(super) struct Ini {
    /// `[DEFAULT]`: fallbacks for every other section.
    pub(super) defaults: Options,
    /// Every other section, by exact name.
    pub(super) sections: OrderedMap<Options>,
}

/// One section's options: lowercased key -> value.
pub(super) type Options = OrderedMap<String>;

/// A value found by [`Ini::get`].
pub(super) struct Found<'a> {
    pub(super) value: &'a str,
    /// It came from `[DEFAULT]`.
    pub(super) from_default: bool,
}

/// The section options go to.
#[derive(Clone, Copy)]
pub(super) enum Target {
    Defaults,
    Section(usize),
}

/// What one line is, before the parser's state is considered.
pub(super) enum Line<'a> {
    /// Blank or a comment.
    Skip,
    /// Starts with whitespace: a continuation if an option is open. Holds the stripped text.
    Indented(&'a str),
    Header(&'a str),
    Option {
        key: String,
        value: String,
    },
    Garbage,
}

impl Ini {
    /// # Errors
    ///
    /// The first line that is not a header, option, continuation, comment or blank.
    pub(super) fn parse(text: &str) -> Result<Ini, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ini = Ini::default();
        let mut current: Option<Target> = None;
        // The option an indented line continues: its index in `current`'s options.
        let mut open: Option<usize> = None;
        for (idx, raw) in text.split('\n').enumerate() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let error_text = || quoted(line);
            match (classify(line), current) {
                (Line::Skip, _) => {}
                (Line::Header(name), _) => {
                    current = Some(if name == DEFAULT_SECTION {
                        Target::Defaults
                    } else {
                        Target::Section(ini.sections.entry(name, Options::default))
                    });
                    open = None;
                }
                (_, None) => {
                    return Err(ConfigError::MissingSectionHeader {
                        line: line_no,
                        text: error_text(),
                    })
                }
                (Line::Indented(more), Some(target)) => {
                    let Some(option_idx) = open else {
                        return Err(ConfigError::NothingToContinue {
                            line: line_no,
                            text: error_text(),
                        });
                    };
                    if let Some(value) = ini.options_mut(target).value_mut(option_idx) {
                        value.push('\n');
                        value.push_str(more);
                    }
                }
                (Line::Option { key, value }, Some(target)) => {
                    open = Some(ini.options_mut(target).insert(key, value));
                }
                (Line::Garbage, Some(_)) => {
                    return Err(ConfigError::Syntax {
                        line: line_no,
                        text: error_text(),
                    })
                }
            }
        }
        Ok(ini)
    }

    pub(super) fn options_mut(&mut self, target: Target) -> &mut Options {
        match target {
            Target::Defaults => &mut self.defaults,
            Target::Section(idx) => self
                .sections
                .value_mut(idx)
                // `Section(idx)` is only made from an index `entry` just returned, and
                // sections are never removed.
                .expect("section index from OrderedMap::entry"),
        }
    }

    /// `key` in `section`, else in `[DEFAULT]` (even when `section` is missing).
    pub(super) fn get(&self, section: &str, key: &str) -> Option<Found<'_>> {
        if let Some(value) = self
            .sections
            .get(section)
            .and_then(|options| options.get(key))
        {
            return Some(Found {
                value,
                from_default: false,
            });
        }
        self.defaults.get(key).map(|value| Found {
            value,
            from_default: true,
        })
    }
}

/// Sorts one line (without its `\n` or `\r\n`) into a [`Line`], in Python's order:
/// blank or comment, `rem`, indented, header, option.
pub(super) fn classify(line: &str) -> Line<'_> {
    let Some(first) = line.chars().next() else {
        return Line::Skip;
    };
    if strip(line).is_empty() || first == '#' || first == ';' {
        return Line::Skip;
    }
    if matches!(first, 'r' | 'R')
        && line
            .split(is_space)
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("rem"))
    {
        return Line::Skip;
    }
    if is_space(first) {
        return Line::Indented(strip(line));
    }
    if let Some(name) = header(line) {
        return Line::Header(name);
    }
    match option(line) {
        Some((key, value)) => Line::Option { key, value },
        None => Line::Garbage,
    }
}

/// `\[(?P<header>[^]]+)\]` matched at the start of the line.
pub(super) fn header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    (end > 0).then(|| &rest[..end])
}

/// `(?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$`, then the inline comment,
/// the strip and the `""` rule. The caller has ruled out a leading space.
pub(super) fn option(line: &str) -> Option<(String, String)> {
    let delimiter = line.find([':', '='])?;
    if delimiter == 0 {
        return None;
    }
    let key = line[..delimiter].trim_end_matches(is_space);
    let after = &line[delimiter + 1..];
    let mut value = after.trim_start_matches(is_space);
    if let Some(semicolon) = value.find(';') {
        let after_space = if semicolon == 0 {
            value.len() < after.len()
        } else {
            value[..semicolon].ends_with(is_space)
        };
        if after_space {
            value = &value[..semicolon];
        }
    }
    let value = match strip(value) {
        "\"\"" => "",
        value => value,
    };
    Some((key.to_ascii_lowercase(), value.to_owned()))
}

/// Python 2's byte-string whitespace (`str.isspace`, `str.strip`, `re`'s `\s`). Not
/// `char::is_ascii_whitespace`, which lacks `\v`, nor Unicode's, which adds NBSP.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Python 2's `str.strip()`.
pub(super) fn strip(text: &str) -> &str {
    text.trim_matches(is_space)
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters for a message (then shown with `{:?}`,
/// which escapes control characters).
pub(super) fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A map that keeps first-insertion order, as Python 2.7's `OrderedDict` does:
/// replacing a value keeps its place.
#[derive(Debug)]
pub(super) struct OrderedMap<V> {
    pub(super) entries: Vec<(String, V)>,
    pub(super) index: HashMap<String, usize>,
}

impl<V> Default for OrderedMap<V> {
    fn default() -> OrderedMap<V> {
        OrderedMap {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> OrderedMap<V> {
    pub(super) fn get(&self, key: &str) -> Option<&V> {
        let idx = *self.index.get(key)?;
        self.entries.get(idx).map(|(_, value)| value)
    }

    pub(super) fn value_mut(&mut self, idx: usize) -> Option<&mut V> {
        self.entries.get_mut(idx).map(|(_, value)| value)
    }

    /// The index of `key`, inserting `make()` first if it is missing.
    pub(super) fn entry(&mut self, key: &str, make: impl FnOnce() -> V) -> usize {
        match self.index.get(key) {
            Some(&idx) => idx,
            None => self.push(key.to_owned(), make()),
        }
    }

    /// Sets `key` to `value` (in its old place if present) and returns its index.
    pub(super) fn insert(&mut self, key: String, value: V) -> usize {
        match self.index.get(&key) {
            Some(&idx) => {
                if let Some(slot) = self.value_mut(idx) {
                    *slot = value;
                }
                idx
            }
            None => self.push(key, value),
        }
    }

    pub(super) fn push(&mut self, key: String, value: V) -> usize {
        let idx = self.entries.len();
        self.index.insert(key.clone(), idx);
        self.entries.push((key, value));
        idx
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }
}

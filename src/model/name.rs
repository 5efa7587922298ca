//! Host names: what a report may call a machine.
//!
//! Owns the one rule for names (DESIGN 5): 1–253 bytes of UTF-8 made of letters, digits,
//! `-`, `_` and `.`, in non-empty labels of at most 63 bytes, compared case-insensitively.
//! A [`Name`] that exists is valid. Pure: no I/O.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;

/// The longest name DNS can carry (RFC 1035: 255 bytes on the wire, 253 as text).
pub const MAX_LEN: usize = 253;
/// The longest label DNS can carry (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// A valid host name, kept as first spelled; equality, ordering and hashing ignore case.
///
/// Holds the name folded to lowercase, which equality, ordering and hashing use as plain
/// bytes (the table's lookups compare with `memcmp`: folding at every comparison cost a
/// quarter of the writer's time at 1,000,000 hosts), and the spelling only when it
/// differs. Stored inline up to 24 bytes (`CompactString`), so the usual names cost no
/// heap allocation: the in-memory table holds one per host.
#[derive(Clone)]
pub struct Name {
    folded: CompactString,
    /// The name as spelled, when that is not `folded` (a name with capitals).
    spelling: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name is {0} bytes long, longer than {MAX_LEN}")]
    TooLong(usize),
    #[error("name has an empty label (leading, trailing or doubled \".\")")]
    EmptyLabel,
    #[error("label \"{0}\" is longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong(String),
    #[error("character {0:?} is not allowed (letters, digits, \"-\", \"_\", \".\")")]
    BadChar(char),
}

impl Name {
    /// Parses a host name.
    ///
    /// # Errors
    /// Returns the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Name, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(NameError::TooLong(text.len()));
        }
        if let Some(bad) = text
            .chars()
            .find(|&c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
        {
            return Err(NameError::BadChar(bad));
        }
        for label in text.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong(label.to_string()));
            }
        }
        let folded: CompactString = if text.is_ascii() {
            text.to_ascii_lowercase().into()
        } else {
            text.chars().flat_map(char::to_lowercase).collect()
        };
        let spelling = (folded != text).then(|| Box::from(text));
        Ok(Name { folded, spelling })
    }

    /// The name as first spelled.
    pub fn as_str(&self) -> &str {
        self.spelling.as_deref().unwrap_or(&self.folded)
    }

    /// The name as compared: lowercased (full Unicode lowercase). Two names are equal
    /// exactly when their folded forms are.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.folded == other.folded
    }
}

impl Eq for Name {}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.folded.as_bytes().cmp(other.folded.as_bytes())
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.folded.as_bytes().hash(state);
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Name, NameError> {
        Name::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expect: Result<&str, NameError>) {
        let res = Name::parse(input).map(|name| name.as_str().to_string());
        assert_eq!(res, expect.map(str::to_string), "input {input:?}");
    }

    #[test]
    fn accepts_dns_label_names() {
        check("kitchen-pc", Ok("kitchen-pc"));
        check("Kitchen-PC", Ok("Kitchen-PC"));
        check("a", Ok("a"));
        check("router_1.home.example", Ok("router_1.home.example"));
        check("küche", Ok("küche"));
        check("123", Ok("123"));
        check(&"a".repeat(63), Ok(&"a".repeat(63)));
        let longest = ["a".repeat(63).as_str(); 3].join(".") + "." + &"a".repeat(61);
        assert_eq!(longest.len(), 253);
        check(&longest, Ok(&longest));
    }

    #[test]
    fn refuses_everything_else() {
        check("", Err(NameError::Empty));
        check(&"a".repeat(254), Err(NameError::TooLong(254)));
        check("kitchen pc", Err(NameError::BadChar(' ')));
        check("kitchen-pc\n", Err(NameError::BadChar('\n')));
        check("a\0b", Err(NameError::BadChar('\0')));
        check("a/b", Err(NameError::BadChar('/')));
        check("\u{202e}evil", Err(NameError::BadChar('\u{202e}')));
        check(".a", Err(NameError::EmptyLabel));
        check("a.", Err(NameError::EmptyLabel));
        check("a..b", Err(NameError::EmptyLabel));
        check(
            &"a".repeat(64),
            Err(NameError::LabelTooLong("a".repeat(64))),
        );
    }

    #[test]
    fn compares_without_case() {
        let upper = Name::parse("Kitchen-PC").unwrap();
        let lower = Name::parse("kitchen-pc").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(Name::parse("KÜCHE").unwrap(), Name::parse("küche").unwrap());
        assert!(Name::parse("a").unwrap() < Name::parse("B").unwrap());
        let hash = |name: &Name| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut hasher);
            hasher.finish()
        };
        assert_eq!(hash(&upper), hash(&lower));
        // Kelvin sign: a non-ASCII name equal to an ASCII one hashes alike.
        let kelvin = Name::parse("\u{212a}itchen-pc").unwrap();
        assert_eq!(kelvin, lower);
        assert_eq!(hash(&kelvin), hash(&lower));
        assert_eq!(upper.to_string(), "Kitchen-PC");
    }

    proptest! {
        #[test]
        fn order_agrees_with_folded_text(left in "[a-zA-Z0-9äÄİß_-]{1,12}", right in "[a-zA-Z0-9äÄİß_-]{1,12}") {
            let (left, right) = (Name::parse(&left).unwrap(), Name::parse(&right).unwrap());
            prop_assert_eq!(left.cmp(&right), left.folded().cmp(right.folded()));
        }

        #[test]
        fn parse_never_panics(text in ".{0,300}") {
            let _ = Name::parse(&text);
        }

        #[test]
        fn order_agrees_with_ascii_lowercase(left in "[a-zA-Z0-9_-]{1,20}", right in "[a-zA-Z0-9_-]{1,20}") {
            let by_name = Name::parse(&left).unwrap().cmp(&Name::parse(&right).unwrap());
            prop_assert_eq!(by_name, left.to_ascii_lowercase().cmp(&right.to_ascii_lowercase()));
        }
    }
}

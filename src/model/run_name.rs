//! [`RunName`]: the name a run or an attachment goes by on its network
//! (`run --name NAME`), which other runs on that network resolve.
//!
//! A name is one DNS label (RFC 1123): letters, digits and `-`, at most 63
//! bytes, not starting or ending with `-`. Two more refusals keep lookups
//! unambiguous: a name of digits only (a resolver reads `1234` as an IPv4
//! address) and a name shaped like a run id (twelve hex digits), since a
//! run's id resolves too. Names are matched without regard to case, as
//! DNS matches them; they are kept as given.

use std::fmt;

/// Longest name: one DNS label.
pub const RUN_NAME_MAX: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNameError {
    /// Empty.
    #[error("--name: a name cannot be empty")]
    Empty,
    /// Longer than a DNS label.
    #[error("--name '{name}' is {len} bytes; a name is one DNS label, at most {RUN_NAME_MAX}")]
    TooLong {
        /// The name (escaped).
        name: String,
        /// Its length.
        len: usize,
    },
    /// A character a DNS label cannot hold.
    #[error("--name '{name}' contains {what}; a name is one DNS label: letters, digits and '-'")]
    BadChar {
        /// The name (escaped).
        name: String,
        /// The character.
        what: String,
    },
    /// Starts or ends with `-`.
    #[error("--name '{0}' starts or ends with '-'; a DNS label cannot")]
    Hyphen(String),
    /// Digits only.
    #[error("--name '{0}' is all digits, which resolvers read as an address; add a letter")]
    Numeric(String),
    /// Twelve hex digits: a run id.
    #[error("--name '{0}' looks like a run id (twelve hex digits), and run ids resolve too; choose another")]
    LooksLikeId(String),
}

/// A validated run name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunName(String);

impl RunName {
    /// Validate `s`.
    pub fn new(s: &str) -> Result<Self, RunNameError> {
        if s.is_empty() {
            return Err(RunNameError::Empty);
        }
        let shown = || s.escape_debug().to_string();
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            let what = match c {
                '.' => "'.' (a name is a single label)".to_owned(),
                c if c.is_whitespace() => "whitespace".to_owned(),
                c if !c.is_ascii() => format!("the non-ASCII character {c:?}"),
                c => format!("{:?}", c),
            };
            return Err(RunNameError::BadChar { name: shown(), what });
        }
        if s.len() > RUN_NAME_MAX {
            return Err(RunNameError::TooLong { name: shown(), len: s.len() });
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(RunNameError::Hyphen(s.to_owned()));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RunNameError::Numeric(s.to_owned()));
        }
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RunNameError::LooksLikeId(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as DNS matches it (lowercase).
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// Whether `other` is the same name to DNS.
    pub fn same(&self, other: &RunName) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl TryFrom<String> for RunName {
    type Error = RunNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<RunName> for String {
    fn from(n: RunName) -> String {
        n.0
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RunName {
    type Err = RunNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_accepted_as_given() {
        for ok in ["db", "Web-1", "a", "x2", &"a".repeat(63), "cafe", "deadbeef00zz"] {
            assert_eq!(RunName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_that_are_not_one_dns_label_are_refused_with_the_reason() {
        let cases: [(&str, &str); 9] = [
            ("", "cannot be empty"),
            ("a.b", "single label"),
            ("my_db", "'_'"),
            ("a b", "whitespace"),
            ("dé", "non-ASCII"),
            ("-db", "starts or ends with '-'"),
            ("db-", "starts or ends with '-'"),
            ("1234", "all digits"),
            ("0123456789ab", "run id"),
        ];
        for (name, why) in cases {
            let err = RunName::new(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
        let err = RunName::new(&"a".repeat(64)).unwrap_err().to_string();
        assert!(err.contains("64 bytes") && err.contains("at most 63"), "{err}");
    }

    #[test]
    fn names_compare_without_regard_to_case_and_round_trip_through_json() {
        let (a, b) = (RunName::new("DB").unwrap(), RunName::new("db").unwrap());
        assert!(a.same(&b));
        assert_eq!(a.key(), "db");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"DB\"");
        assert_eq!(serde_json::from_str::<RunName>(&json).unwrap(), a);
        assert!(serde_json::from_str::<RunName>("\"a.b\"").is_err());
    }
}

//! Errors of loading a configuration. Every message names what is wrong and where: the file and
//! line for a YAML problem, the key for a bad value, so `svcnet check-config` output is enough
//! to fix the file without reading the code.

use std::{fmt, io, path::PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` (or `check-config FILE`) could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not YAML, not a mapping, or a key is unknown or holds the wrong type.
    /// `message` names the key when the problem is in its value.
    #[error("{}{}: {message}", path.display(), location_suffix(*line, *column))]
    Parse {
        path: PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<u64>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<u64>,
        message: String,
    },
    /// The file parsed, but values (from the file or the flags) are not allowed.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

/// `:LINE:COLUMN`, the prefix compilers use, so editors can jump to it.
fn location_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// One bad value: the key it belongs to and what is wrong with it, including what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    /// The kebab-case key, which is also the flag name without `--`.
    pub key: &'static str,
    pub message: String,
}

impl KeyError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every bad value found, not only the first, so one run of `check-config` shows them all.
/// Never empty when returned as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<KeyError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, KeyError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

// Display is written by hand above (one error per line), so the trait impl is empty.
impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a KeyError;
    type IntoIter = std::slice::Iter<'a, KeyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

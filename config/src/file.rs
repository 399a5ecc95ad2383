//! Reading the YAML file into [`Settings`]. serde names an unknown key and the allowed ones, but
//! a value of the wrong type ("invalid u32") names neither the key nor what it wants; since the
//! file is one flat mapping, the key is the last one before the error's position, and what it
//! wants is its flag's help.

use std::path::Path;

use clap::{ArgAction, Args, Command};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_saphyr::{SnippetMode, Spanned, render_options};

use crate::{Settings, error::ConfigError};

pub(crate) fn read(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// `text`, the contents of `path`, as settings. An empty file (or one of only comments) sets
/// nothing.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let error = match serde_saphyr::from_str::<Option<Settings>>(text) {
        Ok(settings) => return Ok(settings.unwrap_or_default()),
        Err(error) => error,
    };
    let location = error.location().filter(|l| l.line() > 0);
    let (line, column) = (location.map(|l| l.line()), location.map(|l| l.column()));
    let mut message = error.render_with_options(render_options! { snippets: SnippetMode::Off });
    // The location goes in front, compiler-style, so drop saphyr's own suffix.
    if let (Some(line), Some(column)) = (line, column) {
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    let key = (line.zip(column)).and_then(|at| key_before(text, at));
    if let Some(key) = key {
        message = match expected(&key) {
            // serde already lists an enum's variants; saying it twice is noise.
            Some(expected) if !message.contains(&expected) => {
                format!("{key}: {message}; expected {expected}")
            }
            _ => format!("{key}: {message}"),
        };
    }
    Err(ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    })
}

/// The top-level key whose value holds position `at` (line, column), if `at` is inside a value
/// rather than on a key (an unknown or repeated key is named by the message already).
fn key_before(text: &str, at: (u64, u64)) -> Option<String> {
    let KeyPositions(keys) = serde_saphyr::from_str::<Option<KeyPositions>>(text).ok()??;
    keys.into_iter()
        .filter(|(_, key_at)| *key_at < at)
        .map(|(key, _)| key)
        .next_back()
}

/// What a key's value must be, from its flag: the possible values, or the value name and help.
fn expected(key: &str) -> Option<String> {
    let command = Settings::augment_args(Command::new("svcnet"));
    let arg = command.get_arguments().find(|arg| arg.get_long() == Some(key))?;
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|value| value.get_name().to_owned())
        .collect();
    if !possible.is_empty() {
        return Some(format!("one of {}", possible.join(", ")));
    }
    let value_name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(ToString::to_string);
    let value_name = value_name.unwrap_or_else(|| "a value".to_owned());
    let what = match arg.get_action() {
        ArgAction::Append => format!("a list of {value_name}"),
        _ => value_name,
    };
    Some(match arg.get_help() {
        Some(help) => format!("{what}: {help}"),
        None => what,
    })
}

/// The top-level keys of the file with their (line, column), in order.
struct KeyPositions(Vec<(String, (u64, u64))>);

impl<'de> Deserialize<'de> for KeyPositions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;

        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = KeyPositions;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyPositions, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push((key.value, (key.referenced.line(), key.referenced.column())));
                }
                Ok(KeyPositions(keys))
            }
        }

        deserializer.deserialize_map(KeysVisitor)
    }
}

//! svcnet's configuration: one YAML file (`--config FILE`) whose every key is also a flag.
//! Flags win over the file. The result is one validated, typed [`Config`].
//!
//! [`Settings`] holds the keys, as both `clap` flags and YAML keys of the same kebab-case
//! names; [`Settings::validate`] fills the defaults and checks them; [`Config::to_yaml`]
//! writes the result back in the file's syntax for `svcnet check-config`.

mod addrs;
mod admin;
mod effective;
mod error;
mod file;
mod names;
mod settings;
mod stub_domains;
mod types;
mod validate;
mod zones;

use std::path::Path;

pub use addrs::is_self;
pub use error::{ConfigError, ConfigErrors, KeyError};
pub use settings::Settings;
pub use stub_domains::StubDomainSetting;
pub use types::{AdminConfig, Config, DnsConfig, PodsMode, ProxyConfig, ProxyMode, Source, StubDomain};

/// The configuration of `config_file` (if given) overridden by `flags`, validated.
pub fn load(config_file: Option<&Path>, flags: Settings) -> Result<Config, ConfigError> {
    let file = match config_file {
        Some(path) => file::read(path)?,
        None => Settings::default(),
    };
    Ok(Settings::merge(file, flags).validate()?)
}

/// The configuration `path` gives on its own, without flags: what `svcnet check-config FILE`
/// prints with [`Config::to_yaml`], or the errors it prints instead.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    load(Some(path), Settings::default())
}

#[cfg(test)]
mod tests;

//! Configuration reload while serving: when the `--config` file changes, or on SIGHUP, the
//! configuration is loaded again (flags still win) and what can change live is applied to the
//! DNS server; an invalid configuration is logged and the running one kept.
//!
//! The directory is watched rather than the file: a ConfigMap volume replaces its files by
//! swapping a `..data` symlink, which a watch on the old file never sees.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use svcnet_config::{Config, DnsConfig, PodsMode, Settings};
use svcnet_dns::DnsReloader;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

/// Events closer together than this are one change: writers truncate, write and rename in
/// steps, and the file is read once they are done.
const SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// What reloads need: the sources of the configuration, the one serving now, and the server.
pub struct Reloader {
    file: Option<PathBuf>,
    flags: Settings,
    /// The configuration svcnet started with: keys that need a restart are compared to it.
    started: Config,
    applied: DnsConfig,
    dns: DnsReloader,
}

impl Reloader {
    pub fn new(file: Option<PathBuf>, flags: Settings, started: Config, dns: DnsReloader) -> Self {
        let applied = started.dns.clone();
        Self {
            file,
            flags,
            started,
            applied,
            dns,
        }
    }

    /// Reloads on every change of the file's directory and every SIGHUP, until the process ends.
    pub async fn run(mut self) -> Result<(), ReloadError> {
        let mut hangup = signal(SignalKind::hangup()).map_err(ReloadError::Signal)?;
        let (changed, mut changes) = mpsc::unbounded_channel();
        // Kept alive for as long as the loop runs; dropping it ends the watch.
        let _watcher = match &self.file {
            Some(file) => Some(watch(file, changed)?),
            None => None,
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => info!("SIGHUP received: reloading the configuration"),
                Some(()) = changes.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                }
            }
            self.reload();
        }
    }

    fn reload(&mut self) {
        let config = match svcnet_config::load(self.file.as_deref(), self.flags.clone()) {
            Ok(config) => config,
            Err(errors) => {
                error!("invalid configuration, keeping the running one:\n{errors}");
                return;
            }
        };
        let dns = self.live_part(&config);
        if dns == self.applied {
            debug!("configuration unchanged");
            return;
        }
        match self.dns.apply(&dns) {
            Ok(()) => self.applied = dns,
            Err(error) => error!(%error, "configuration not applied, keeping the running one"),
        }
    }

    /// `config`'s DNS settings, with those that need a restart kept as svcnet started, each
    /// logged when it differs.
    fn live_part(&self, config: &Config) -> DnsConfig {
        let started = &self.started;
        let restart = |key: &str, differs: bool| {
            if differs {
                warn!(key, "changed, but needs a restart; keeping the running value");
            }
        };
        restart("source (manifests, kubeconfig)", config.source != started.source);
        restart("node-name", config.node_name != started.node_name);
        restart("admin endpoints, lameduck", config.admin != started.admin);
        restart("proxy settings", config.proxy != started.proxy);
        let mut dns = config.dns.clone();
        let old = &started.dns;
        restart("dns-listen", dns.listen != old.listen);
        restart("dns-workers", dns.workers != old.workers);
        restart("startup-timeout", dns.startup_timeout != old.startup_timeout);
        // Both decide what the cluster source watches (EndpointSlices; every Pod or this node's).
        restart("noendpoints", dns.noendpoints != old.noendpoints);
        let verified = |pods| pods == PodsMode::Verified;
        let pods_watch_changed = verified(dns.pods) != verified(old.pods);
        restart("pods (to or from verified)", pods_watch_changed);
        dns.listen.clone_from(&old.listen);
        dns.workers = old.workers;
        dns.startup_timeout = old.startup_timeout;
        dns.noendpoints = old.noendpoints;
        if pods_watch_changed {
            dns.pods = old.pods;
        }
        dns
    }
}

/// Watches the directory of `file`, sending on `changed` for every event in it.
fn watch(file: &Path, changed: mpsc::UnboundedSender<()>) -> Result<notify::RecommendedWatcher, ReloadError> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let error = |source| ReloadError::Watch {
        dir: dir.clone(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Access events (a reader opening the file) change nothing.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // The receiver is gone only when the reload loop is.
            let _ = changed.send(());
        }
    })
    .map_err(error)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(error)?;
    Ok(watcher)
}

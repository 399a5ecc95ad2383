//! The sync loop: turn each new snapshot into a transaction and apply it.
//!
//! The first sync after start is a full replace, and so is the first after a failed
//! transaction and one every full-sync period; the rest send only the element changes since the
//! last applied state. Syncs are at least the minimum sync period apart, so a burst of changes
//! arriving within it is applied as one transaction.

use std::{sync::Arc, time::Duration};

use svcnet_cluster::Reader;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::{
    apply::NftCommand,
    conntrack::{self, ConntrackCommand},
    desired::{Desired, desired},
    diff::diff,
    error::NftError,
    health::{self, ProxyHealth},
    metrics::ProxyMetrics,
    node::NodeContext,
    ruleset,
    service_health::{self, ServiceHealthServers},
};

/// The first retry after a failed sync waits this long, then twice as long each time.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a sync does with its transaction.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Load it with nft.
    Apply(NftCommand),
    /// Only log it (`proxy: dry-run`).
    DryRun,
}

#[derive(Clone, Copy, Debug)]
pub struct SyncPeriods {
    /// The least time between the starts of two syncs.
    pub min: Duration,
    /// How often the tables are replaced whole even without a failure, which repairs any
    /// change made to them behind svcnet's back.
    pub full: Duration,
}

/// Keeps the svcnet tables in step with the cluster.
pub struct Proxy {
    node: NodeContext,
    backend: Backend,
    periods: SyncPeriods,
    /// What the tables hold, as far as svcnet knows; `None` before the first sync and after a
    /// failed one, when only a full replace is safe.
    applied: Option<Desired>,
    last_full: Instant,
    health: Arc<ProxyHealth>,
    metrics: ProxyMetrics,
    service_health: Option<ServiceHealthServers>,
    /// Deletes the conntrack entries of UDP/SCTP flows each sync leaves stale.
    conntrack: Option<conntrack::Cleanup>,
}

impl Proxy {
    pub fn new(node: NodeContext, backend: Backend, periods: SyncPeriods) -> Self {
        Self {
            node,
            backend,
            periods,
            applied: None,
            last_full: Instant::now(),
            health: Arc::default(),
            metrics: ProxyMetrics::default(),
            service_health: None,
            conntrack: None,
        }
    }

    /// After each sync, deletes with `conntrack` the flows whose endpoint went away.
    #[must_use]
    pub fn with_conntrack(mut self, command: ConntrackCommand) -> Self {
        self.conntrack = Some(conntrack::Cleanup::new(command));
        self
    }

    /// Reports to `health` (served as `/healthz` and `/livez`).
    #[must_use]
    pub fn with_health(mut self, health: Arc<ProxyHealth>) -> Self {
        self.health = health;
        self
    }

    /// Records into `metrics` (registered by the caller).
    #[must_use]
    pub fn with_metrics(mut self, metrics: ProxyMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs the healthCheckNodePort servers, reconciled after every successful sync.
    #[must_use]
    pub fn with_service_health(mut self, servers: ServiceHealthServers) -> Self {
        self.service_health = Some(servers);
        self
    }

    /// Syncs on every change published through `reader`, starting with the first synced
    /// snapshot (an unsynced one would reject Services not listed yet). Returns when the
    /// publisher is gone. The rules are never removed here: traffic keeps flowing while svcnet
    /// restarts or is upgraded.
    pub async fn run(mut self, mut reader: Reader) {
        // Timestamps changes as they are published, also while a sync runs: /healthz and the
        // network-programming latency count from then.
        let _watcher = health::watch_changes(reader.clone(), self.health.clone(), self.metrics.clone());
        while !reader.load().synced {
            if !reader.changed().await {
                return;
            }
        }
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            let (snapshot, loaded_at) = self.health.load(&reader);
            let want = desired(&snapshot, &self.node);
            // From the same snapshot as the rules, and served only once they are applied.
            let health_checks =
                (self.service_health.as_ref()).map(|_| service_health::targets(&snapshot, &self.node));
            drop(snapshot);
            let retry_at = match self.sync(want, loaded_at).await {
                Ok(()) => {
                    failures = 0;
                    if let (Some(servers), Some(targets)) = (&mut self.service_health, health_checks) {
                        servers.reconcile(targets);
                    }
                    None
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = RETRY_BASE
                        .saturating_mul(1 << (failures - 1).min(8))
                        .min(RETRY_MAX)
                        .max(self.periods.min);
                    warn!(
                        %error,
                        retry_in = ?delay,
                        "proxy sync failed; the previous rules stay in place and the next sync \
                         replaces them whole"
                    );
                    Some(Instant::now() + delay)
                }
            };

            let full_at = self.last_full + self.periods.full;
            tokio::select! {
                changed = reader.changed() => {
                    if !changed {
                        return;
                    }
                    // Changes that arrive while waiting are picked up by the next load. After a
                    // failure, a change does not cut the back-off short.
                    let not_before = started + self.periods.min;
                    sleep_until(retry_at.map_or(not_before, |retry| retry.max(not_before))).await;
                }
                () = sleep_until(full_at) => {}
                () = sleep_until(retry_at.unwrap_or(full_at)), if retry_at.is_some() => {}
            }
        }
    }

    /// One sync towards `want`: a full replace when due, the diff from the applied state
    /// otherwise.
    /// `loaded_at` is when its snapshot was loaded, which [`ProxyHealth::load`] gave.
    async fn sync(&mut self, want: Desired, loaded_at: Instant) -> Result<(), NftError> {
        let due = self.last_full.elapsed() >= self.periods.full;
        let partial = match &self.applied {
            Some(applied) if !due => diff(applied, &want),
            _ => None,
        };
        let full = partial.is_none();
        let tx = partial.unwrap_or_else(|| ruleset::full(&want));
        if tx.is_empty() {
            debug!("proxy sync: nothing changed");
            self.record_sync(full, false, loaded_at);
            return Ok(());
        }
        let (added, removed) = tx.element_counts();
        let started = Instant::now();
        // Derived from what the tables held: unknown before the first sync and after a failed
        // one, when flows that went stale meanwhile are left to time out.
        let stale = match (&self.conntrack, &self.applied) {
            (Some(_), Some(applied)) => conntrack::stale_flows(applied, &want),
            _ => Default::default(),
        };
        // Until this transaction succeeds svcnet cannot be sure what the tables hold: if it
        // fails, `applied` stays empty and the next sync is a full replace.
        let next = match self.applied.take() {
            Some(previous) if !full => want.keeping_chains_of(&previous),
            _ => want,
        };
        match &self.backend {
            Backend::Apply(nft) => {
                nft.apply(&tx).await.inspect_err(|_| {
                    self.metrics.sync_failed();
                    self.metrics.sync_ran(full, loaded_at.elapsed());
                })?;
                info!(full, added, removed, duration = ?started.elapsed(), "proxy sync");
            }
            Backend::DryRun => info!(
                full,
                added,
                removed,
                dry_run = true,
                "proxy sync (dry run), would apply:\n{tx}"
            ),
        }
        self.applied = Some(next);
        if full {
            self.last_full = Instant::now();
        }
        if let Some(cleanup) = &mut self.conntrack {
            cleanup.run(&stale).await;
        }
        self.record_sync(full, true, loaded_at);
        Ok(())
    }

    /// The health state and metrics after a successful sync; `changed`: it loaded a
    /// transaction. Only such a sync observes the network-programming latency: a change that
    /// needed no rule (a Pod for DNS) would otherwise count as programmed in no time.
    fn record_sync(&self, full: bool, changed: bool, loaded_at: Instant) {
        let oldest_change = self.health.applied(loaded_at);
        if let Some(applied) = &self.applied {
            let programming = oldest_change.filter(|_| changed).map(|t| t.elapsed());
            self.metrics.synced(applied, programming);
        }
        self.metrics.sync_ran(full, loaded_at.elapsed());
        // Last, so that a reader who sees the count sees the rest of this sync too.
        if changed {
            self.metrics.transaction(full);
        }
    }
}

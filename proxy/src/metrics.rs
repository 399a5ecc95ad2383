//! The proxy's Prometheus metrics: kube-proxy's names where svcnet does the same thing, so its
//! dashboards and alerts carry over, and a few of svcnet's own (`svcnet_proxy_*`).
//!
//! kube-proxy labels most of its metrics with `ip_family`; svcnet syncs both families in one
//! transaction, so the sync metrics have no family label. The per-map element gauge has one,
//! since each family has its own table.

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};

use crate::{
    desired::Desired,
    nft::Family as IpFamily,
    ruleset::{self, PROTOCOLS},
};

/// `code` of the healthz and livez counters, as kube-proxy labels them ("200", "503").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
    ip_family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Every proxy metric. Cloning shares the underlying values, so the sync loop, the change
/// watcher and the HTTP handlers each hold a clone. A value that was never registered still
/// counts, unseen (the tests and `render-rules` need no registry).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    sync_duration: Histogram,
    full_sync_duration: Histogram,
    partial_sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    network_programming: Histogram,
    sync_failures: Counter,
    pub(crate) healthz: Family<CodeLabels, Counter>,
    pub(crate) livez: Family<CodeLabels, Counter>,
    map_elements: Family<MapLabels, Gauge>,
    transactions: Family<KindLabels, Counter>,
}

/// kube-proxy's sync-duration buckets: 1 ms to about 16 s.
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        // kube-proxy's network-programming buckets: 0.25 s and 0.5 s, every second to 59 s,
        // every 5 s to 115 s, every 30 s from 2 to 5 minutes.
        let network_programming = Histogram::new(
            linear_buckets(0.25, 0.25, 2)
                .chain(linear_buckets(1.0, 1.0, 59))
                .chain(linear_buckets(60.0, 5.0, 12))
                .chain(linear_buckets(120.0, 30.0, 7)),
        );
        Self {
            sync_duration: sync_histogram(),
            full_sync_duration: sync_histogram(),
            partial_sync_duration: sync_histogram(),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            network_programming,
            sync_failures: Counter::default(),
            healthz: Family::default(),
            livez: Family::default(),
            map_elements: Family::default(),
            transactions: Family::default(),
        }
    }
}

impl ProxyMetrics {
    /// New metrics, registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let m = metrics.clone();
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration,
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration,
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration,
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync,
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued,
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In-cluster network programming latency in seconds: from the cluster change being \
             published to svcnet to its rules being in the kernel",
            m.network_programming,
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Number of failed nftables syncs",
            m.sync_failures,
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz,
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez,
        );
        registry.register(
            "svcnet_proxy_map_elements",
            "Elements in each set and map of the svcnet tables after the last sync",
            m.map_elements,
        );
        registry.register(
            "svcnet_proxy_transactions",
            "nft transactions loaded, by kind (full replace or partial)",
            m.transactions,
        );
        metrics
    }

    /// A change was published and waits for a sync.
    pub(crate) fn queued(&self, at: SystemTime) {
        self.last_queued.set(unix_seconds(at));
    }

    /// One sync ran, successful or not, taking `duration`.
    pub(crate) fn sync_ran(&self, full: bool, duration: Duration) {
        let seconds = duration.as_secs_f64();
        self.sync_duration.observe(seconds);
        let by_kind = if full {
            &self.full_sync_duration
        } else {
            &self.partial_sync_duration
        };
        by_kind.observe(seconds);
    }

    pub(crate) fn sync_failed(&self) {
        self.sync_failures.inc();
    }

    /// A transaction was loaded.
    pub(crate) fn transaction(&self, full: bool) {
        let kind = if full { "full" } else { "partial" };
        self.transactions.get_or_create(&KindLabels { kind }).inc();
    }

    /// A sync succeeded and the tables now hold `applied`; `programming` is the time from the
    /// oldest change it carried to now, when it carried one.
    pub(crate) fn synced(&self, applied: &Desired, programming: Option<Duration>) {
        self.last_sync.set(unix_seconds(SystemTime::now()));
        if let Some(latency) = programming {
            self.network_programming.observe(latency.as_secs_f64());
        }
        for (family, map, count) in element_counts(applied) {
            let labels = MapLabels {
                map,
                ip_family: match family {
                    IpFamily::Ipv4 => "IPv4",
                    IpFamily::Ipv6 => "IPv6",
                },
            };
            self.map_elements
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// The number of elements each set and map of each family's table holds in `state`.
pub(crate) fn element_counts(state: &Desired) -> Vec<(IpFamily, &'static str, usize)> {
    let mut counts = Vec::new();
    for family in IpFamily::ALL {
        let s = state.family(family);
        counts.push((family, ruleset::CLUSTER_CIDRS, s.cluster_cidrs.len()));
        counts.push((family, ruleset::SERVICE_IPS, s.service_ips.len()));
        counts.push((family, ruleset::NO_ENDPOINTS, s.no_endpoints.len()));
        for protocol in PROTOCOLS {
            let n = s.endpoints.keys().filter(|(e, _)| e.protocol == protocol).count();
            counts.push((family, ruleset::endpoints_map(protocol), n));
        }
        counts.push((family, ruleset::HAIRPIN, s.hairpin.len()));
    }
    counts
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

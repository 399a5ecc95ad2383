//! Metrics of the API server source.

use std::{
    sync::atomic::AtomicU64,
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::watched::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// How the API server source is doing. Cheap to clone; clones share the values.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    up: Gauge,
    watch_errors: Family<ResourceLabels, Counter>,
    rejected: Family<KindLabels, Counter>,
    last_sync: Gauge<f64, AtomicU64>,
}

impl SourceMetrics {
    /// Metrics with a zero series per watched kind, so that `rate()` and alerts see 0 rather
    /// than nothing until the first error.
    pub(crate) fn new(kinds: impl IntoIterator<Item = Kind>) -> Self {
        let metrics = Self::default();
        for kind in kinds {
            // Creating the series is all that is needed; release the family's lock at once.
            drop(metrics.watch_errors.get_or_create(&ResourceLabels {
                resource: kind.resource(),
            }));
            drop(metrics.rejected.get_or_create(&KindLabels { kind: kind.name() }));
        }
        metrics
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "svcnet_apiserver_up",
            "Whether the API server answered (1) or cannot be reached (0); 0 until it first answers",
            self.up.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "svcnet_apiserver_watch_errors",
            "Errors of the list and watch requests, by resource",
            self.watch_errors.clone(),
        );
        registry.register(
            "svcnet_cluster_objects_rejected",
            "Objects skipped because they could not be converted, by kind",
            self.rejected.clone(),
        );
        registry.register(
            "svcnet_cluster_last_sync_timestamp_seconds",
            "Unix time at which events from the API server were last applied",
            self.last_sync.clone(),
        );
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub(crate) fn watch_error(&self, kind: Kind) {
        self.watch_errors
            .get_or_create(&ResourceLabels {
                resource: kind.resource(),
            })
            .inc();
    }

    pub(crate) fn rejected(&self, kind: Kind) {
        self.rejected
            .get_or_create(&KindLabels { kind: kind.name() })
            .inc();
    }

    pub(crate) fn synced_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.set(now);
    }
}

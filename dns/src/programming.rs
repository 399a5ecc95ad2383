//! CoreDNS's `coredns_kubernetes_dns_programming_duration_seconds`: the sig-scalability DNS
//! programming latency SLI, from the change that caused an EndpointSlice's current version
//! (its `endpoints.kubernetes.io/last-change-trigger-time` annotation) to when DNS serves it.
//!
//! DNS answers from the snapshot the moment it is published, so a slice is observed when the
//! first snapshot holding its new version is published. A version that differs only in the
//! annotation is not a new version (the model ignores it in equality), as nothing DNS serves
//! changed. Unlike CoreDNS, which observes headless Services only (as
//! `headless_with_selector`), every kind is observed under its own label: svcnet serves
//! endpoint names for ClusterIP Services too, so their slices change DNS as well.
//! `headless_with_selector` means the same as CoreDNS's series.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use svcnet_cluster::{
    Reader, Snapshot,
    model::{EndpointSlice, Service, ServiceAddressing},
};

/// CoreDNS's `ExponentialBuckets(0.001, 2, 20)`: 1 ms to ~9 minutes.
fn programming_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    service_kind: &'static str,
}

/// The `service_kind` label of a Service's slices; `None` for ExternalName Services, whose
/// slices (if any) DNS does not serve.
pub(crate) fn service_kind(service: &Service) -> Option<&'static str> {
    match (&service.addressing, &service.selector) {
        (ServiceAddressing::ClusterIp(_), _) => Some("cluster_ip"),
        (ServiceAddressing::Headless, Some(_)) => Some("headless_with_selector"),
        (ServiceAddressing::Headless, None) => Some("headless_without_selector"),
        (ServiceAddressing::ExternalName(_), _) => None,
    }
}

/// The histogram, and when svcnet started: changes from before then were programmed by
/// whatever ran before (or by a previous svcnet), and measuring them would only report how
/// long svcnet was not running (kube-proxy skips them for the same reason).
#[derive(Clone, Debug)]
pub(crate) struct ProgrammingLatency {
    histogram: Family<KindLabels, Histogram, fn() -> Histogram>,
    started: SystemTime,
}

impl Default for ProgrammingLatency {
    fn default() -> Self {
        Self {
            histogram: Family::new_with_constructor(programming_histogram),
            started: whole_second(SystemTime::now()),
        }
    }
}

/// `time` rounded down to the second: the controller's trigger times are Kubernetes times
/// (whole seconds, from the Pod's Ready transition or the Service's creation), so a change
/// made in svcnet's first second reads as earlier than its start.
fn whole_second(time: SystemTime) -> SystemTime {
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs())
}

impl ProgrammingLatency {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.",
            self.histogram.clone(),
        );
    }

    /// Observes every slice that is new or changed in `next` relative to `previous`, as
    /// served at `now`.
    pub(crate) fn observe_changes(&self, previous: &Snapshot, next: &Snapshot, now: SystemTime) {
        for (kind, slice) in changed_slices(previous, next) {
            let Some(trigger) = slice.last_change_trigger_time else {
                continue;
            };
            if trigger < self.started {
                continue;
            }
            // A trigger time ahead of this node's clock (skew) counts as instant.
            let latency = now.duration_since(trigger).unwrap_or(Duration::ZERO);
            self.histogram
                .get_or_create(&KindLabels { service_kind: kind })
                .observe(latency.as_secs_f64());
        }
    }

    /// Observes the snapshots published after this call, until the publisher is gone. The
    /// current snapshot is taken now, not when the future first runs, so that one published
    /// in between still counts as a change.
    pub(crate) fn watch(self, mut reader: Reader) -> impl Future<Output = ()> + Send + 'static {
        let mut previous = reader.load_full();
        async move {
            while reader.changed().await {
                let next = reader.load_full();
                self.observe_changes(&previous, &next, SystemTime::now());
                previous = next;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn started_at(started: SystemTime) -> Self {
        Self {
            started,
            ..Self::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn count(&self, kind: &'static str) -> u64 {
        let mut text = String::new();
        let mut registry = Registry::default();
        self.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let prefix =
            format!("coredns_kubernetes_dns_programming_duration_seconds_count{{service_kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }
}

/// The slices of `next`'s Services (with their kind) that `previous` did not serve as they
/// are: new slices, changed slices, and slices of Services that are new.
fn changed_slices<'a>(
    previous: &'a Snapshot,
    next: &'a Snapshot,
) -> impl Iterator<Item = (&'static str, &'a Arc<EndpointSlice>)> + 'a {
    next.services().flat_map(move |entry| {
        let service = &entry.service;
        let kind = service_kind(service);
        let before = previous
            .service(&service.key.namespace, &service.key.name)
            .map_or(&[][..], |e| e.slices.as_slice());
        entry
            .slices
            .iter()
            .filter(move |slice| {
                !before
                    .iter()
                    .any(|old| Arc::ptr_eq(old, slice) || (old.key == slice.key && **old == ***slice))
            })
            .filter_map(move |slice| Some((kind?, slice)))
    })
}

#[cfg(test)]
mod tests;

//! CoreDNS's metrics, by CoreDNS's names and labels (`prometheus`, `cache` and `forward`
//! plugins), so that the dashboards and alerts written for CoreDNS (the kube-prometheus mixin,
//! cloud add-ons) keep working when svcnet replaces it.
//!
//! Label values are built once (per listen address, zone and upstream) and shared: recording a
//! query clones a few `Arc`s and looks its series up, it never formats a string.

use std::{
    borrow::Cow,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::Registry,
};
use svcnet_cluster::Reader;

use crate::programming::ProgrammingLatency;

/// A label value shared by every series that carries it.
type Label = Arc<String>;

/// CoreDNS's view label: svcnet has no views, CoreDNS leaves it empty without them too.
const NO_VIEW: &str = "";
/// The zone of a name outside every served zone: CoreDNS's root server block.
const ROOT_ZONE: &str = ".";

/// CoreDNS's `ExponentialBuckets(0.00025, 2, 16)`: 250 µs to 8 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// CoreDNS's size buckets, in bytes: the UDP limits (512, 1232, 4096) and TCP sizes.
fn size_histogram() -> Histogram {
    Histogram::new([
        0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3, 64e3,
    ])
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Label,
    zone: Label,
    view: &'static str,
    proto: &'static str,
    family: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: Label,
    zone: Label,
    view: &'static str,
    rcode: Cow<'static, str>,
    plugin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: Label,
    zone: Label,
    view: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SizeLabels {
    server: Label,
    zone: Label,
    view: &'static str,
    proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheTypeLabels {
    server: Label,
    r#type: &'static str,
    zones: &'static str,
    view: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    server: Label,
    zones: &'static str,
    view: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabels {
    to: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToRcodeLabels {
    to: Label,
    rcode: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
    goversion: &'static str,
}

/// Every DNS metric. Cheap to clone; clones share the values. Register once with
/// [`DnsMetrics::register`] and hand to [`crate::DnsServer::bind`].
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: HistogramFamily<DurationLabels>,
    request_size: HistogramFamily<SizeLabels>,
    cache_entries: Family<CacheTypeLabels, Gauge>,
    cache_hits: Family<CacheTypeLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    forward: ForwardMetrics,
    autopath_success: Family<ServerLabels, Counter>,
    panics: Counter,
    programming: ProgrammingLatency,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_size: Family::new_with_constructor(size_histogram),
            cache_entries: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            forward: ForwardMetrics::default(),
            autopath_success: Family::default(),
            panics: Counter::default(),
            programming: ProgrammingLatency::default(),
        }
    }
}

impl DnsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // Counters get their `_total` suffix, and the info metric its `_info`, from the encoder.
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            self.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes.",
            self.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            self.duration.clone(),
        );
        registry.register(
            "coredns_dns_request_size_bytes",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
            self.request_size.clone(),
        );
        registry.register(
            "coredns_cache_entries",
            "The number of elements in the cache.",
            self.cache_entries.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "The count of cache hits.",
            self.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.",
            self.cache_misses.clone(),
        );
        self.forward.register(registry);
        registry.register(
            "coredns_autopath_success",
            "Counter of requests that did autopath.",
            self.autopath_success.clone(),
        );
        registry.register(
            "coredns_panics",
            "A metrics that counts the number of panics.",
            self.panics.clone(),
        );
        self.programming.register(registry);
        registry.register(
            "coredns_build",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                // Neither is known without a build script; CoreDNS's dashboards only show them.
                revision: "",
                goversion: "rust",
            }),
        );
    }

    /// Counts every panic of the process from now on (CoreDNS counts the panics its servers
    /// recover from; hickory's tasks are recovered by tokio). The previous hook still runs.
    pub fn count_panics(&self) {
        let panics = self.panics.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panics.inc();
            previous(info);
        }));
    }

    /// Observes `coredns_kubernetes_dns_programming_duration_seconds` for the snapshots
    /// `reader` sees from now on; spawn it before the cluster source starts publishing.
    pub fn watch_programming_latency(&self, reader: Reader) -> impl Future<Output = ()> + Send + 'static {
        self.programming.clone().watch(reader)
    }

    pub(crate) fn forward(&self) -> &ForwardMetrics {
        &self.forward
    }
}

/// Where an answer came from: CoreDNS's `plugin` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plugin {
    /// svcnet itself, for malformed or unsupported requests (CoreDNS's server: empty).
    Server,
    Kubernetes,
    Cache,
    Forward,
    /// A completed search walk.
    Autopath,
}

impl Plugin {
    fn label(self) -> &'static str {
        match self {
            Self::Server => "",
            Self::Kubernetes => "kubernetes",
            Self::Cache => "cache",
            Self::Forward => "forward",
            Self::Autopath => "autopath",
        }
    }
}

/// What a forwarded question found in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheResult {
    /// A live entry with data.
    HitSuccess,
    /// A live entry for a denial (NXDOMAIN, NODATA) or a server failure.
    HitDenial,
    Miss,
}

/// The metrics of one listening address: the server label and the zone labels built once.
#[derive(Clone, Debug)]
pub(crate) struct ServerMetrics {
    metrics: DnsMetrics,
    server: Label,
    /// Served zones and stub domains, for the `zone` label: the longest match wins.
    zones: Vec<(Name, Label)>,
    root: Label,
}

/// One answered request, as the handler saw it.
pub(crate) struct Report<'a> {
    pub qname: Option<&'a Name>,
    pub qtype: Option<RecordType>,
    pub datagram: bool,
    pub ipv4: bool,
    pub request_len: usize,
    pub rcode: ResponseCode,
    pub plugin: Plugin,
    pub started: Instant,
}

impl ServerMetrics {
    /// The metrics of the server at `addr` answering `zones` (fully qualified names).
    pub(crate) fn new(metrics: DnsMetrics, addr: SocketAddr, zones: &[Name]) -> Self {
        let zones = zones
            .iter()
            .map(|zone| (zone.clone(), Arc::new(zone.to_ascii().to_lowercase())))
            .collect();
        Self {
            metrics,
            server: Arc::new(server_label(addr)),
            zones,
            root: Arc::new(ROOT_ZONE.to_owned()),
        }
    }

    pub(crate) fn report(&self, report: &Report<'_>) {
        let zone = self.zone(report.qname);
        let qtype = report.qtype.map_or("other", qtype_label);
        let proto = if report.datagram { "udp" } else { "tcp" };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                server: self.server.clone(),
                zone: zone.clone(),
                view: NO_VIEW,
                proto,
                family: if report.ipv4 { "1" } else { "2" },
                r#type: qtype,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&DurationLabels {
                server: self.server.clone(),
                zone: zone.clone(),
                view: NO_VIEW,
                r#type: qtype,
            })
            .observe(report.started.elapsed().as_secs_f64());
        self.metrics
            .request_size
            .get_or_create(&SizeLabels {
                server: self.server.clone(),
                zone: zone.clone(),
                view: NO_VIEW,
                proto,
            })
            .observe(report.request_len as f64);
        self.metrics
            .responses
            .get_or_create(&ResponseLabels {
                server: self.server.clone(),
                zone,
                view: NO_VIEW,
                rcode: rcode_label(report.rcode),
                plugin: report.plugin.label(),
            })
            .inc();
    }

    /// Counts a query answered through search completion (CoreDNS `autopath`).
    pub(crate) fn autopath_success(&self) {
        self.metrics
            .autopath_success
            .get_or_create(&ServerLabels {
                server: self.server.clone(),
            })
            .inc();
    }

    /// Counts a forwarded question's cache lookup, and the cache's size after it.
    pub(crate) fn cache(&self, result: CacheResult, entries: (u64, u64)) {
        // kubeadm's `cache 30` sits in the root server block.
        let zones = ROOT_ZONE;
        let hit = |r#type| {
            self.metrics
                .cache_hits
                .get_or_create(&CacheTypeLabels {
                    server: self.server.clone(),
                    r#type,
                    zones,
                    view: NO_VIEW,
                })
                .inc();
        };
        match result {
            CacheResult::HitSuccess => hit("success"),
            CacheResult::HitDenial => hit("denial"),
            CacheResult::Miss => {
                self.metrics
                    .cache_misses
                    .get_or_create(&CacheLabels {
                        server: self.server.clone(),
                        zones,
                        view: NO_VIEW,
                    })
                    .inc();
            }
        }
        for (r#type, count) in [("success", entries.0), ("denial", entries.1)] {
            self.metrics
                .cache_entries
                .get_or_create(&CacheTypeLabels {
                    server: self.server.clone(),
                    r#type,
                    zones,
                    view: NO_VIEW,
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The longest served zone (or stub domain) containing `qname`, else the root.
    fn zone(&self, qname: Option<&Name>) -> Label {
        qname
            .and_then(|qname| {
                self.zones
                    .iter()
                    .filter(|(zone, _)| zone.zone_of(qname))
                    .max_by_key(|(zone, _)| zone.num_labels())
            })
            .map_or_else(|| self.root.clone(), |(_, label)| label.clone())
    }
}

/// CoreDNS's `server` label: `dns://` and the listen address, the host left out for a wildcard
/// address as in CoreDNS's `.:53` (`dns://:53`).
fn server_label(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("dns://:{}", addr.port())
    } else {
        format!("dns://{addr}")
    }
}

/// The question types CoreDNS counts by name; every other type is `other`, which bounds the
/// number of series whatever clients ask.
fn qtype_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::CNAME => "CNAME",
        RecordType::DNSKEY => "DNSKEY",
        RecordType::DS => "DS",
        RecordType::MX => "MX",
        RecordType::NSEC3 => "NSEC3",
        RecordType::NSEC => "NSEC",
        RecordType::NS => "NS",
        RecordType::PTR => "PTR",
        RecordType::RRSIG => "RRSIG",
        RecordType::SOA => "SOA",
        RecordType::SRV => "SRV",
        RecordType::TXT => "TXT",
        RecordType::HTTPS => "HTTPS",
        RecordType::IXFR => "IXFR",
        RecordType::AXFR => "AXFR",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

/// The rcode as CoreDNS's DNS library spells it; codes it has no name for are numbers.
fn rcode_label(rcode: ResponseCode) -> Cow<'static, str> {
    Cow::Borrowed(match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        // miekg/dns names 16 after TSIG's BADSIG, which shares it with EDNS's BADVERS.
        ResponseCode::BADVERS => "BADSIG",
        other => return Cow::Owned(u16::from(other).to_string()),
    })
}

/// CoreDNS `forward`'s metrics.
#[derive(Clone, Debug)]
pub(crate) struct ForwardMetrics {
    requests: Family<ToLabels, Counter>,
    responses: Family<ToRcodeLabels, Counter>,
    duration: HistogramFamily<ToRcodeLabels>,
    healthcheck_failures: Family<ToLabels, Counter>,
    max_concurrent_rejects: Counter,
}

impl Default for ForwardMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            healthcheck_failures: Family::default(),
            max_concurrent_rejects: Counter::default(),
        }
    }
}

impl ForwardMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "coredns_forward_requests",
            "Counter of requests made per upstream.",
            self.requests.clone(),
        );
        registry.register(
            "coredns_forward_responses",
            "Counter of responses received per upstream.",
            self.responses.clone(),
        );
        registry.register(
            "coredns_forward_request_duration_seconds",
            "Histogram of the time each request took.",
            self.duration.clone(),
        );
        registry.register(
            "coredns_forward_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            self.healthcheck_failures.clone(),
        );
        registry.register(
            "coredns_forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries were at maximum.",
            self.max_concurrent_rejects.clone(),
        );
    }

    /// The series of the upstream at `addr`, created now so that they show 0 from the start.
    pub(crate) fn upstream(&self, addr: SocketAddr) -> UpstreamMetrics {
        let to = Arc::new(addr.to_string());
        let labels = ToLabels { to: to.clone() };
        UpstreamMetrics {
            requests: self.requests.get_or_create_owned(&labels),
            healthcheck_failures: self.healthcheck_failures.get_or_create_owned(&labels),
            responses: self.responses.clone(),
            duration: self.duration.clone(),
            to,
        }
    }

    pub(crate) fn rejected(&self) {
        self.max_concurrent_rejects.inc();
    }
}

/// One upstream's forward metrics, its label built once.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamMetrics {
    requests: Counter,
    healthcheck_failures: Counter,
    responses: Family<ToRcodeLabels, Counter>,
    duration: HistogramFamily<ToRcodeLabels>,
    to: Label,
}

impl UpstreamMetrics {
    pub(crate) fn request(&self) {
        self.requests.inc();
    }

    pub(crate) fn response(&self, rcode: ResponseCode, took: Duration) {
        let labels = ToRcodeLabels {
            to: self.to.clone(),
            rcode: rcode_label(rcode),
        };
        self.responses.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub(crate) fn healthcheck_failed(&self) {
        self.healthcheck_failures.inc();
    }
}

#[cfg(test)]
mod tests;

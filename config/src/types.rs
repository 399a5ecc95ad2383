//! The validated configuration every other crate reads. Built only by [`crate::load`] from the
//! file and the flags, so a value here has already been checked.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    /// This node's name (`spec.nodeName` of its Pods); the Pod watch is limited to it.
    pub node_name: Option<String>,
    pub dns: DnsConfig,
    pub admin: AdminConfig,
    pub proxy: ProxyConfig,
}

/// Where the cluster state comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A directory of YAML/JSON manifests, re-read when it changes.
    Manifests(PathBuf),
    /// The API server, through this kubeconfig or, when `None`, the in-cluster configuration
    /// (falling back to `$KUBECONFIG`/`~/.kube/config` as kube-rs does).
    ApiServer { kubeconfig: Option<PathBuf> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Addresses to serve on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// Zones served authoritatively, lowercase and fully qualified (trailing dot). The first is
    /// the cluster domain, the zone PTR targets are written in; reverse zones
    /// (`in-addr.arpa.`, `0.10.in-addr.arpa.`, `ip6.arpa.`) follow.
    pub zones: Vec<String>,
    /// Reverse zones whose names the cluster does not know go to the upstreams instead of
    /// getting NXDOMAIN (CoreDNS `fallthrough`), lowercase and fully qualified. Only reverse
    /// zones: the cluster's own names never fall through.
    pub fallthrough: Vec<String>,
    /// TTL of every record, and the SOA minimum (negative-caching TTL).
    pub ttl: u32,
    pub pods: PodsMode,
    /// Name endpoints after their Pod when they have no hostname (CoreDNS `endpoint_pod_names`).
    pub endpoint_pod_names: bool,
    /// Only these namespaces are visible to DNS; empty means all.
    pub namespaces: Vec<String>,
    /// A ClusterIP Service without ready endpoints answers NXDOMAIN (CoreDNS `ignore empty_service`).
    pub ignore_empty_service: bool,
    /// Do not watch EndpointSlices: headless and endpoint names answer NXDOMAIN.
    pub noendpoints: bool,
    /// How long to wait for the first complete sync before serving anyway.
    pub startup_timeout: Duration,
    /// Resolvers for every name outside the served zones (and ExternalName targets there).
    pub upstreams: Vec<SocketAddr>,
    /// Resolvers for the names under particular domains, in place of `upstreams`.
    pub stub_domains: Vec<StubDomain>,
    /// Forwarded queries in flight at once; more are answered REFUSED.
    pub forward_max_concurrent: usize,
    /// How long forwarded answers are cached at most (whole seconds); zero disables the cache.
    pub cache_ttl: Duration,
    /// How long past expiry a cached answer may stand in when no upstream answers; zero: never.
    pub cache_serve_stale: Duration,
    /// Worker threads serving DNS, each with its own sockets; 0: one per usable CPU.
    pub workers: usize,
    /// Complete the search walk of this node's Pods server-side (CoreDNS `autopath`).
    pub autopath: bool,
}

/// The operator's HTTP endpoints (CoreDNS `health`, `ready`, `prometheus`) and the drain at
/// shutdown. An endpoint without an address is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub health_listen: Option<SocketAddr>,
    pub ready_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    /// How long DNS keeps answering after SIGTERM, with `/ready` failing (CoreDNS `lameduck`).
    pub lameduck: Duration,
}

/// Resolvers for the names under one domain (CoreDNS `forward example.corp 10.0.0.53`, the
/// `stubDomains` of kube-dns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubDomain {
    /// Lowercase, fully qualified.
    pub domain: String,
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub mode: ProxyMode,
    /// The Pod CIDRs, any family; sources outside them are masqueraded on the way to a
    /// ClusterIP. Empty: no source is masqueraded for that reason.
    pub cluster_cidrs: Vec<IpNet>,
    /// NodePorts are served on the node's addresses inside these; empty means every
    /// non-loopback address of the node.
    pub nodeport_addresses: Vec<IpNet>,
    /// The least time between two syncs.
    pub min_sync_period: Duration,
    /// How often the rules are replaced whole.
    pub full_sync_period: Duration,
    /// kube-proxy's `syncPeriod`: `/healthz` fails when a change waits twice this long.
    pub sync_period: Duration,
    /// Where `/healthz` and `/livez` are served; `None`: not served.
    pub healthz_listen: Option<SocketAddr>,
}

/// Pod records `a-b-c-d.<ns>.pod.<zone>` (CoreDNS `pods`).
// The value names (`disabled`, ...) are the flag and YAML spelling, hence the derives.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PodsMode {
    /// No pod records: NXDOMAIN.
    Disabled,
    /// Any well-formed address in an existing namespace (kubeadm's default).
    #[default]
    Insecure,
    /// Only an address that a Pod in that namespace has.
    Verified,
}

/// What the Service proxy does.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// Program the node's Service rules in nftables.
    Apply,
    /// Compute the rules and log them without applying them.
    DryRun,
    /// No Service proxy: another one (kube-proxy) handles Service traffic.
    #[default]
    Off,
}

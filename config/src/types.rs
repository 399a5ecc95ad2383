//! The validated configuration every other crate reads. Built only by [`crate::load`] from the
//! file and the flags, so a value here has already been checked.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    /// This node's name (`spec.nodeName` of its Pods); the Pod watch is limited to it.
    pub node_name: Option<String>,
    pub dns: DnsConfig,
    pub proxy: ProxyMode,
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
    /// Resolvers asked for the targets of ExternalName Services outside the served zones.
    pub upstreams: Vec<SocketAddr>,
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

/// What the Service proxy does. Only `Off` passes validation until the proxy is built; the
/// other variants stay so the flag and file syntax are settled.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// Program the node's Service rules (not built yet).
    Apply,
    /// Compute the rules without applying them (not built yet).
    DryRun,
    /// No Service proxy: another one (kube-proxy) handles Service traffic.
    #[default]
    Off,
}

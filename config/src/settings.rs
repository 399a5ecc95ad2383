//! The raw settings: every configuration key once, as both a YAML key and a flag of the same
//! kebab-case name, so the file and the command line cannot drift apart. Nothing here is
//! checked yet; [`Settings::validate`](crate::Settings::validate) does that and fills defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    StubDomainSetting,
    types::{PodsMode, ProxyMode},
};

/// Every configuration key. `None` means "not given here", so a flag that was not passed does
/// not hide the file's value. Lists given as flags may repeat the flag or separate values by
/// commas; an empty value (`--upstreams=`) gives an empty list.
//
// Each field is `Option` for the merge, and skipped when `None` on output so `Config::to_yaml`
// writes only what it knows.
#[derive(clap::Args, Deserialize, Serialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Serve the cluster described by the Kubernetes manifests (YAML/JSON) in this directory
    /// instead of an API server. Excludes `kubeconfig`.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<PathBuf>,

    /// Reach the API server through this kubeconfig. Without it and without `manifests`,
    /// the in-cluster configuration is used.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name; the Pod watch is limited to the Pods on it.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// The cluster's DNS domain [default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,

    /// More zones to serve besides the cluster domain: domain names, or CIDRs that stand for
    /// their reverse zone (`10.0.0.0/16` is `0.10.in-addr.arpa.`)
    /// [default: in-addr.arpa, ip6.arpa].
    #[arg(long, value_name = "ZONE|CIDR", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_zones: Option<Vec<String>>,

    /// Reverse zones whose names the cluster does not know are asked of the upstreams instead
    /// of answered NXDOMAIN: zone names or CIDRs, as in `dns-zones`; empty turns it off
    /// [default: in-addr.arpa, ip6.arpa].
    #[arg(long, value_name = "ZONE|CIDR", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_fallthrough: Option<Vec<String>>,

    /// Addresses to serve DNS on, UDP and TCP [default: 127.0.0.1:5353 with `manifests`,
    /// 0.0.0.0:53 otherwise].
    #[arg(long, value_name = "ADDR:PORT", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_listen: Option<Vec<String>>,

    /// TTL in seconds of every answer, and of cached negative answers, 0..=3600 [default: 30].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ttl: Option<u32>,

    /// Pod records `a-b-c-d.NS.pod.DOMAIN` [default: insecure].
    #[arg(long, value_name = "MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMode>,

    /// Name endpoints without a hostname after their Pod [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_pod_names: Option<bool>,

    /// Answer NXDOMAIN for a ClusterIP Service without ready endpoints [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_empty_service: Option<bool>,

    /// Do not watch EndpointSlices; headless and endpoint names answer NXDOMAIN
    /// [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noendpoints: Option<bool>,

    /// Only these namespaces are visible to DNS [default: all].
    #[arg(long, value_name = "NAMESPACE", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,

    /// How long to wait for the first complete sync before serving anyway, e.g. 5s, 500ms, 1m
    /// [default: 5s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<String>,

    /// Resolvers for every name outside the served zones, IP or IP:PORT (port 53 if left out)
    /// [default: the nameservers of /etc/resolv.conf that are not svcnet itself].
    #[arg(long, value_name = "IP[:PORT]", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Vec<String>>,

    /// Resolvers for the names under a domain instead of `upstreams`, the longest matching
    /// domain winning: DOMAIN=IP[:PORT],... (repeat the flag for more domains); in the file a
    /// mapping, `example.corp: [10.0.0.53, 10.0.0.54:5353]` [default: none].
    #[arg(long, value_name = "DOMAIN=IP[:PORT],...", value_parser = StubDomainSetting::from_flag)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::stub_domains::as_map"
    )]
    pub stub_domains: Option<Vec<StubDomainSetting>>,

    /// Forwarded queries in flight at once; more are answered REFUSED [default: 1000].
    #[arg(long, value_name = "COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_max_concurrent: Option<usize>,

    /// How long forwarded answers are cached at most, whole seconds up to 7d, e.g. 30s, 5m;
    /// 0 disables the cache [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,

    /// How long past its expiry a cached answer may still be given when no upstream answers
    /// (RFC 8767), up to 7d; 0 disables [default: 1h].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_serve_stale: Option<String>,

    /// DNS worker threads, each with its own SO_REUSEPORT sockets on every listen address;
    /// 0 sizes them to the CPUs this process may use (its cgroup's CPU limit) [default: 0].
    #[arg(long, value_name = "COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_workers: Option<usize>,

    /// Complete the search walk of this node's Pods on the server (CoreDNS `autopath`): a
    /// query under a Pod's first search domain is answered with the first search candidate
    /// that exists, behind a CNAME, so an external name costs one round trip instead of one
    /// per search domain [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autopath: Option<bool>,

    /// Where to serve `/health`, 200 while the process lives (CoreDNS `health`); empty
    /// disables [default: 0.0.0.0:8080, disabled with `manifests`].
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<String>,

    /// Where to serve `/ready`, 200 once the cluster state has synced and until shutdown
    /// begins (CoreDNS `ready`); empty disables [default: 0.0.0.0:8181, disabled with
    /// `manifests`].
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_listen: Option<String>,

    /// Where to serve Prometheus `/metrics` (CoreDNS `prometheus`); empty disables
    /// [default: 0.0.0.0:9153, disabled with `manifests`].
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,

    /// How long DNS keeps answering after SIGTERM while `/ready` fails, so that clients move
    /// away before it stops (CoreDNS `health { lameduck }`) [default: 5s, 0s with `manifests`].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lameduck: Option<String>,

    /// What to do with Service traffic: `apply` programs this node's Service rules in
    /// nftables (needs `node-name`), `dry-run` logs the rules it would program, `off` leaves
    /// Service traffic to another proxy [default: off].
    #[arg(long, value_name = "MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMode>,

    /// The Pod CIDRs; traffic to a ClusterIP from outside them is masqueraded so that replies
    /// return through this node [default: none, nothing is masqueraded by source].
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<Vec<String>>,

    /// The node addresses NodePorts are served on: the node's addresses inside these CIDRs
    /// [default: every non-loopback address of the node, found at start].
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodeport_addresses: Option<Vec<String>>,

    /// The least time between two proxy syncs; changes within it are applied together
    /// [default: 250ms].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_min_sync_period: Option<String>,

    /// How often the proxy rules are replaced whole rather than changed element by element
    /// [default: 1h].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_full_sync_period: Option<String>,

    /// kube-proxy's `syncPeriod`: the proxy's `/healthz` fails once a cluster change has
    /// waited twice this long without being applied; a port of a healthCheckNodePort server
    /// that cannot be bound is tried again this often [default: 30s].
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_sync_period: Option<String>,

    /// Where to serve the proxy's `/healthz` and `/livez` (kube-proxy's
    /// `healthzBindAddress`), with `proxy` apply or dry-run; empty disables
    /// [default: 0.0.0.0:10256, disabled with `manifests`].
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_healthz_listen: Option<String>,
}

impl Settings {
    /// `file` overridden by `flags`, key by key: a flag that was given wins, one that was not
    /// leaves the file's value. Lists are replaced whole, not appended, so a flag can shorten one.
    #[must_use]
    pub fn merge(file: Settings, flags: Settings) -> Settings {
        // Destructured so that a new key that is not merged here fails to compile.
        let Settings {
            manifests,
            kubeconfig,
            node_name,
            cluster_domain,
            dns_zones,
            dns_fallthrough,
            dns_listen,
            dns_ttl,
            pods,
            endpoint_pod_names,
            ignore_empty_service,
            noendpoints,
            namespaces,
            startup_timeout,
            upstreams,
            stub_domains,
            forward_max_concurrent,
            cache_ttl,
            cache_serve_stale,
            dns_workers,
            autopath,
            health_listen,
            ready_listen,
            metrics_listen,
            lameduck,
            proxy,
            cluster_cidr,
            nodeport_addresses,
            proxy_min_sync_period,
            proxy_full_sync_period,
            proxy_sync_period,
            proxy_healthz_listen,
        } = flags;
        Settings {
            manifests: manifests.or(file.manifests),
            kubeconfig: kubeconfig.or(file.kubeconfig),
            node_name: node_name.or(file.node_name),
            cluster_domain: cluster_domain.or(file.cluster_domain),
            dns_zones: dns_zones.or(file.dns_zones),
            dns_fallthrough: dns_fallthrough.or(file.dns_fallthrough),
            dns_listen: dns_listen.or(file.dns_listen),
            dns_ttl: dns_ttl.or(file.dns_ttl),
            pods: pods.or(file.pods),
            endpoint_pod_names: endpoint_pod_names.or(file.endpoint_pod_names),
            ignore_empty_service: ignore_empty_service.or(file.ignore_empty_service),
            noendpoints: noendpoints.or(file.noendpoints),
            namespaces: namespaces.or(file.namespaces),
            startup_timeout: startup_timeout.or(file.startup_timeout),
            upstreams: upstreams.or(file.upstreams),
            stub_domains: stub_domains.or(file.stub_domains),
            forward_max_concurrent: forward_max_concurrent.or(file.forward_max_concurrent),
            cache_ttl: cache_ttl.or(file.cache_ttl),
            cache_serve_stale: cache_serve_stale.or(file.cache_serve_stale),
            dns_workers: dns_workers.or(file.dns_workers),
            autopath: autopath.or(file.autopath),
            health_listen: health_listen.or(file.health_listen),
            ready_listen: ready_listen.or(file.ready_listen),
            metrics_listen: metrics_listen.or(file.metrics_listen),
            lameduck: lameduck.or(file.lameduck),
            proxy: proxy.or(file.proxy),
            cluster_cidr: cluster_cidr.or(file.cluster_cidr),
            nodeport_addresses: nodeport_addresses.or(file.nodeport_addresses),
            proxy_min_sync_period: proxy_min_sync_period.or(file.proxy_min_sync_period),
            proxy_full_sync_period: proxy_full_sync_period.or(file.proxy_full_sync_period),
            proxy_sync_period: proxy_sync_period.or(file.proxy_sync_period),
            proxy_healthz_listen: proxy_healthz_listen.or(file.proxy_healthz_listen),
        }
    }
}

//! From raw [`Settings`] to a checked [`Config`]: fill the defaults (kubeadm's Corefile, so
//! svcnet answers as the CoreDNS it replaces) and check every value, collecting every error.

use std::{path::Path, time::Duration};

use clap::ValueEnum;
use ipnet::IpNet;

use crate::{
    Settings,
    addrs::{self, LISTEN_ALLOWED},
    admin,
    error::{ConfigErrors, KeyError},
    names, stub_domains,
    types::{AdminConfig, Config, DnsConfig, PodsMode, ProxyConfig, ProxyMode, Source},
    zones,
};

/// kubeadm's `kubernetes cluster.local in-addr.arpa ip6.arpa`.
const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
const DEFAULT_DNS_ZONES: [&str; 2] = ["in-addr.arpa", "ip6.arpa"];
/// kubeadm's `fallthrough in-addr.arpa ip6.arpa`.
const DEFAULT_DNS_FALLTHROUGH: [&str; 2] = ["in-addr.arpa", "ip6.arpa"];
/// kubeadm's `ttl 30`.
const DEFAULT_DNS_TTL: u32 = 30;
/// CoreDNS's own limit for `ttl`.
const MAX_DNS_TTL: u32 = 3600;
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Short enough that a change is programmed within a blink, long enough that a rollout's
/// burst of endpoint changes costs a few nft runs rather than hundreds.
const DEFAULT_PROXY_MIN_SYNC_PERIOD: Duration = Duration::from_millis(250);
/// kube-proxy's `syncPeriod` default.
const DEFAULT_PROXY_SYNC_PERIOD: Duration = Duration::from_secs(30);
/// kube-proxy's `healthzBindAddress` default.
const DEFAULT_PROXY_HEALTHZ_LISTEN: &str = "0.0.0.0:10256";
/// kube-proxy's full-sync period.
const DEFAULT_PROXY_FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
/// CoreDNS `forward`'s `max_concurrent 1000` in kubeadm's Corefile.
const DEFAULT_FORWARD_MAX_CONCURRENT: usize = 1000;
/// kubeadm's `cache 30`.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// CoreDNS `serve_stale`'s default.
const DEFAULT_CACHE_SERVE_STALE: Duration = Duration::from_secs(3600);
/// RFC 8767 §4 caps cached TTLs at 7 days (604,800 s); the stale window, for which it
/// suggests 1 to 3 days, gets the same ceiling.
const MAX_CACHE_TIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Far more than any node's CPUs: a bigger number is a typo.
const MAX_DNS_WORKERS: usize = 256;
/// With manifests svcnet runs beside a developer's own resolver, unprivileged: a high port on
/// loopback. Against a cluster it is the node's resolver: port 53 everywhere.
const DEFAULT_LISTEN_MANIFESTS: &str = "127.0.0.1:5353";
const DEFAULT_LISTEN_CLUSTER: &str = "0.0.0.0:53";
/// kubeadm's `forward . /etc/resolv.conf`.
pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";

impl Settings {
    /// The configuration these settings describe, with defaults for what is not set, or every
    /// bad value. Default upstreams are read from `/etc/resolv.conf` now.
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        self.validate_with(Path::new(RESOLV_CONF))
    }

    /// [`Settings::validate`] with the default upstreams read from `resolv_conf`, for tests.
    pub(crate) fn validate_with(self, resolv_conf: &Path) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut fail = |key, message: String| errors.push(KeyError::new(key, message));

        let manifests_given = self.manifests.is_some();
        let source = match (self.manifests, self.kubeconfig) {
            (Some(_), Some(_)) => {
                fail(
                    "manifests",
                    "cannot be combined with kubeconfig; allowed: manifests (a directory), \
                     kubeconfig (an API server), or neither (in-cluster API server)"
                        .to_owned(),
                );
                None
            }
            (Some(dir), None) if dir.as_os_str().is_empty() => {
                fail("manifests", "is empty; allowed a directory path".to_owned());
                None
            }
            (Some(dir), None) => Some(Source::Manifests(dir)),
            (None, Some(file)) if file.as_os_str().is_empty() => {
                fail("kubeconfig", "is empty; allowed a file path".to_owned());
                None
            }
            (None, kubeconfig) => Some(Source::ApiServer { kubeconfig }),
        };

        if let Some(name) = &self.node_name
            && !names::is_dns1123_subdomain(name)
        {
            fail(
                "node-name",
                format!(
                    "{name:?} is not a DNS-1123 subdomain; allowed lowercase letters, digits, '-' \
                     and '.', starting and ending with a letter or digit, at most 253 characters"
                ),
            );
        }

        let domain = self.cluster_domain.as_deref().unwrap_or(DEFAULT_CLUSTER_DOMAIN);
        let mut zones = Vec::new();
        match names::fqdn(domain) {
            Some(zone) => zones.push(zone),
            None => fail(
                "cluster-domain",
                format!(
                    "{domain:?} is not a domain name; allowed dot-separated labels of letters, \
                     digits and '-', each 1 to 63 characters, not starting or ending with '-'"
                ),
            ),
        }
        let extra_zones = self
            .dns_zones
            .unwrap_or_else(|| DEFAULT_DNS_ZONES.map(String::from).into());
        for entry in entries(&extra_zones) {
            match zones::zone(entry) {
                // The cluster domain stays first: PTR targets are written in it.
                Ok(zone) => push_new(&mut zones, zone),
                Err(message) => fail("dns-zones", message),
            }
        }
        let fallthrough_entries = self
            .dns_fallthrough
            .unwrap_or_else(|| DEFAULT_DNS_FALLTHROUGH.map(String::from).into());
        let mut fallthrough = Vec::new();
        for entry in entries(&fallthrough_entries) {
            match zones::zone(entry) {
                Ok(zone) if zones::is_reverse(&zone) => push_new(&mut fallthrough, zone),
                Ok(_) => fail(
                    "dns-fallthrough",
                    format!(
                        "{entry:?} is not a reverse zone; allowed in-addr.arpa, ip6.arpa, zones \
                         below them or CIDRs (the cluster's own names never fall through)"
                    ),
                ),
                Err(message) => fail("dns-fallthrough", message),
            }
        }

        let default_listen = if manifests_given {
            DEFAULT_LISTEN_MANIFESTS
        } else {
            DEFAULT_LISTEN_CLUSTER
        };
        let listen_entries = self.dns_listen.unwrap_or_else(|| vec![default_listen.to_owned()]);
        let mut listen = Vec::new();
        for entry in entries(&listen_entries) {
            match addrs::listen(entry) {
                Ok(addr) => push_new(&mut listen, addr),
                Err(message) => fail("dns-listen", message),
            }
        }
        if listen_entries.iter().all(|entry| entry.trim().is_empty()) {
            fail(
                "dns-listen",
                format!("is empty; allowed one or more {LISTEN_ALLOWED}"),
            );
        }

        let ttl = self.dns_ttl.unwrap_or(DEFAULT_DNS_TTL);
        if ttl > MAX_DNS_TTL {
            fail(
                "dns-ttl",
                format!("{ttl} is out of range; allowed 0..={MAX_DNS_TTL}"),
            );
        }

        let mut namespaces = Vec::new();
        for entry in entries(self.namespaces.as_deref().unwrap_or_default()) {
            if names::is_dns1123_label(entry) {
                push_new(&mut namespaces, entry.to_owned());
            } else {
                fail(
                    "namespaces",
                    format!(
                        "{entry:?} is not a namespace name; allowed DNS-1123 labels: 1 to 63 \
                         lowercase letters, digits and '-', starting and ending with a letter or digit"
                    ),
                );
            }
        }

        let startup_timeout = duration(
            &mut fail,
            "startup-timeout",
            self.startup_timeout.as_deref(),
            DEFAULT_STARTUP_TIMEOUT,
        );

        let mut upstreams = Vec::new();
        match &self.upstreams {
            Some(given) => {
                for entry in entries(given) {
                    match addrs::forward_target(entry, &listen) {
                        Ok(addr) => push_new(&mut upstreams, addr),
                        Err(message) => fail("upstreams", message),
                    }
                }
            }
            // On a node whose resolv.conf names a local stub (127.0.0.53) while svcnet listens
            // on 0.0.0.0:53, the stub is svcnet itself: leave it out rather than loop.
            None => addrs::resolv_conf_nameservers(resolv_conf)
                .into_iter()
                .filter(|addr| !addrs::is_self(*addr, &listen))
                .for_each(|addr| push_new(&mut upstreams, addr)),
        }

        let given_stubs = self.stub_domains.as_deref().unwrap_or_default();
        let (stub_domains, stub_errors) = stub_domains::validate(given_stubs, &zones, &listen);
        stub_errors
            .into_iter()
            .for_each(|message| fail("stub-domains", message));

        let forward_max_concurrent = self
            .forward_max_concurrent
            .unwrap_or(DEFAULT_FORWARD_MAX_CONCURRENT);
        if forward_max_concurrent == 0 {
            fail(
                "forward-max-concurrent",
                "0 would refuse every forwarded query; allowed 1 or more".to_owned(),
            );
        }

        let cache_ttl = duration(
            &mut fail,
            "cache-ttl",
            self.cache_ttl.as_deref(),
            DEFAULT_CACHE_TTL,
        );
        if cache_ttl.subsec_nanos() != 0 || cache_ttl > MAX_CACHE_TIME {
            fail(
                "cache-ttl",
                format!(
                    "{} is not whole seconds up to 7d; allowed 0 (no cache) to 7d, e.g. 30s, 5m",
                    humantime::format_duration(cache_ttl)
                ),
            );
        }
        let cache_serve_stale = duration(
            &mut fail,
            "cache-serve-stale",
            self.cache_serve_stale.as_deref(),
            DEFAULT_CACHE_SERVE_STALE,
        );
        if cache_serve_stale > MAX_CACHE_TIME {
            fail(
                "cache-serve-stale",
                format!(
                    "{} is more than 7d; allowed 0 (never) to 7d, e.g. 1h",
                    humantime::format_duration(cache_serve_stale)
                ),
            );
        }

        let workers = self.dns_workers.unwrap_or(0);
        if workers > MAX_DNS_WORKERS {
            fail(
                "dns-workers",
                format!("{workers} is out of range; allowed 0 (one per CPU) to {MAX_DNS_WORKERS}"),
            );
        }

        // A developer's Ctrl-C should stop svcnet at once.
        let default_lameduck = if manifests_given {
            Duration::ZERO
        } else {
            admin::DEFAULT_LAMEDUCK
        };
        let admin = AdminConfig {
            health_listen: admin::listen(
                &mut fail,
                "health-listen",
                self.health_listen.as_deref(),
                admin::DEFAULT_HEALTH_LISTEN,
                manifests_given,
            ),
            ready_listen: admin::listen(
                &mut fail,
                "ready-listen",
                self.ready_listen.as_deref(),
                admin::DEFAULT_READY_LISTEN,
                manifests_given,
            ),
            metrics_listen: admin::listen(
                &mut fail,
                "metrics-listen",
                self.metrics_listen.as_deref(),
                admin::DEFAULT_METRICS_LISTEN,
                manifests_given,
            ),
            lameduck: duration(&mut fail, "lameduck", self.lameduck.as_deref(), default_lameduck),
        };
        let healthz_listen = admin::listen(
            &mut fail,
            "proxy-healthz-listen",
            self.proxy_healthz_listen.as_deref(),
            DEFAULT_PROXY_HEALTHZ_LISTEN,
            manifests_given,
        );
        admin::check_distinct(
            &mut fail,
            &[
                ("health-listen", admin.health_listen),
                ("ready-listen", admin.ready_listen),
                ("metrics-listen", admin.metrics_listen),
                ("proxy-healthz-listen", healthz_listen),
            ],
        );

        let mode = self.proxy.unwrap_or_default();
        if mode == ProxyMode::Apply && self.node_name.is_none() {
            fail(
                "proxy",
                format!(
                    "{} needs node-name (which endpoints are local to this node); allowed \
                     apply with node-name, dry-run, off",
                    value_name(mode)
                ),
            );
        }
        if mode != ProxyMode::Off && self.noendpoints == Some(true) {
            fail(
                "noendpoints",
                format!(
                    "true hides every endpoint from the Service proxy (proxy {}); allowed false \
                     while proxy is not off",
                    value_name(mode)
                ),
            );
        }
        let mut cidr_list = |key, list: &Option<Vec<String>>| {
            let mut nets = Vec::new();
            for entry in entries(list.as_deref().unwrap_or_default()) {
                match entry.parse::<IpNet>() {
                    // Host bits are ignored, as Kubernetes does for these flags.
                    Ok(net) => push_new(&mut nets, net.trunc()),
                    Err(_) => fail(
                        key,
                        format!(
                            "{entry:?} is not a CIDR; allowed e.g. 10.244.0.0/16 or \
                             fd00:10:244::/56"
                        ),
                    ),
                }
            }
            nets
        };
        let cluster_cidrs = cidr_list("cluster-cidr", &self.cluster_cidr);
        let nodeport_addresses = cidr_list("nodeport-addresses", &self.nodeport_addresses);
        let min_sync_period = duration(
            &mut fail,
            "proxy-min-sync-period",
            self.proxy_min_sync_period.as_deref(),
            DEFAULT_PROXY_MIN_SYNC_PERIOD,
        );
        let full_sync_period = duration(
            &mut fail,
            "proxy-full-sync-period",
            self.proxy_full_sync_period.as_deref(),
            DEFAULT_PROXY_FULL_SYNC_PERIOD,
        );
        let sync_period = duration(
            &mut fail,
            "proxy-sync-period",
            self.proxy_sync_period.as_deref(),
            DEFAULT_PROXY_SYNC_PERIOD,
        );
        if sync_period.is_zero() {
            fail(
                "proxy-sync-period",
                "is zero; allowed a duration above zero, e.g. 30s".to_owned(),
            );
        }
        if full_sync_period.is_zero() {
            fail(
                "proxy-full-sync-period",
                "is zero; allowed a duration above zero, e.g. 1h".to_owned(),
            );
        }

        let pods: PodsMode = self.pods.unwrap_or_default();
        match source {
            Some(source) if errors.is_empty() => Ok(Config {
                source,
                node_name: self.node_name,
                dns: DnsConfig {
                    listen,
                    zones,
                    fallthrough,
                    ttl,
                    pods,
                    endpoint_pod_names: self.endpoint_pod_names.unwrap_or(false),
                    namespaces,
                    ignore_empty_service: self.ignore_empty_service.unwrap_or(false),
                    noendpoints: self.noendpoints.unwrap_or(false),
                    startup_timeout,
                    upstreams,
                    stub_domains,
                    forward_max_concurrent,
                    cache_ttl,
                    cache_serve_stale,
                    workers,
                    // Safe by default here, unlike CoreDNS's: only this node's Pods are asked
                    // about, an ambiguous source address is not completed, and A and AAAA of
                    // one lookup always reach the same instance.
                    autopath: self.autopath.unwrap_or(true),
                },
                admin,
                proxy: ProxyConfig {
                    mode,
                    cluster_cidrs,
                    nodeport_addresses,
                    min_sync_period,
                    full_sync_period,
                    sync_period,
                    healthz_listen,
                },
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// The non-blank entries of a list, trimmed: `--upstreams=` (one empty value) is an empty
/// list, and `--dns-zones 'a, b'` means `a` and `b`.
fn entries(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
}

/// The duration `key` gives as `text`, or `default` when not given (or not a duration, which
/// is reported).
fn duration(
    fail: &mut impl FnMut(&'static str, String),
    key: &'static str,
    text: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    humantime::parse_duration(text.trim()).unwrap_or_else(|_| {
        fail(
            key,
            format!("{text:?} is not a duration; allowed e.g. 5s, 500ms, 1m, 1m 30s"),
        );
        default
    })
}

/// Repeats would bind twice or answer twice; the first occurrence keeps its place.
fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// How a value is spelled in the file and on the command line.
pub(crate) fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

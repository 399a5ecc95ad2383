//! The effective configuration written back as a config file: every key explicit, so what
//! `svcnet check-config` prints can be loaded again and gives the same [`Config`], whatever the
//! defaults or `/etc/resolv.conf` say by then.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{
    Settings, StubDomainSetting,
    types::{Config, Source},
};

impl Config {
    /// This configuration as YAML in the config file's own keys.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.to_settings())
            .expect("settings of strings, numbers, booleans and unit enums always serialize")
    }

    fn to_settings(&self) -> Settings {
        let (manifests, kubeconfig) = match &self.source {
            Source::Manifests(dir) => (Some(utf8(dir)), None),
            Source::ApiServer { kubeconfig } => (None, kubeconfig.as_deref().map(utf8)),
        };
        let dns = &self.dns;
        let proxy = &self.proxy;
        fn strings(items: &[impl ToString]) -> Option<Vec<String>> {
            Some(items.iter().map(ToString::to_string).collect())
        }
        Settings {
            manifests,
            kubeconfig,
            node_name: self.node_name.clone(),
            cluster_domain: dns.zones.first().cloned(),
            dns_zones: Some(dns.zones.iter().skip(1).cloned().collect()),
            dns_fallthrough: Some(dns.fallthrough.clone()),
            dns_listen: strings(&dns.listen),
            dns_ttl: Some(dns.ttl),
            pods: Some(dns.pods),
            endpoint_pod_names: Some(dns.endpoint_pod_names),
            ignore_empty_service: Some(dns.ignore_empty_service),
            noendpoints: Some(dns.noendpoints),
            namespaces: Some(dns.namespaces.clone()),
            startup_timeout: Some(humantime::format_duration(dns.startup_timeout).to_string()),
            upstreams: strings(&dns.upstreams),
            stub_domains: Some(
                dns.stub_domains
                    .iter()
                    .map(|stub| StubDomainSetting {
                        domain: stub.domain.clone(),
                        upstreams: stub.upstreams.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            ),
            forward_max_concurrent: Some(dns.forward_max_concurrent),
            cache_ttl: Some(humantime::format_duration(dns.cache_ttl).to_string()),
            cache_serve_stale: Some(humantime::format_duration(dns.cache_serve_stale).to_string()),
            dns_workers: Some(dns.workers),
            autopath: Some(dns.autopath),
            health_listen: Some(listen_or_empty(self.admin.health_listen)),
            ready_listen: Some(listen_or_empty(self.admin.ready_listen)),
            metrics_listen: Some(listen_or_empty(self.admin.metrics_listen)),
            lameduck: Some(humantime::format_duration(self.admin.lameduck).to_string()),
            proxy: Some(proxy.mode),
            cluster_cidr: strings(&proxy.cluster_cidrs),
            nodeport_addresses: strings(&proxy.nodeport_addresses),
            proxy_min_sync_period: Some(humantime::format_duration(proxy.min_sync_period).to_string()),
            proxy_full_sync_period: Some(humantime::format_duration(proxy.full_sync_period).to_string()),
            proxy_sync_period: Some(humantime::format_duration(proxy.sync_period).to_string()),
            proxy_healthz_listen: Some(listen_or_empty(proxy.healthz_listen)),
        }
    }
}

/// A disabled endpoint is written as the empty address that disables it.
fn listen_or_empty(addr: Option<SocketAddr>) -> String {
    addr.map(|addr| addr.to_string()).unwrap_or_default()
}

/// YAML holds only text: a path that is not UTF-8 (possible only from a flag) is shown lossily.
fn utf8(path: &Path) -> PathBuf {
    PathBuf::from(path.to_string_lossy().into_owned())
}

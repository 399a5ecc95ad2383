//! The effective configuration written back as a config file: every key explicit, so what
//! `svcnet check-config` prints can be loaded again and gives the same [`Config`], whatever the
//! defaults or `/etc/resolv.conf` say by then.

use std::path::{Path, PathBuf};

use crate::{
    Settings,
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
        let strings = |items: &[_]| Some(items.iter().map(ToString::to_string).collect());
        Settings {
            manifests,
            kubeconfig,
            node_name: self.node_name.clone(),
            cluster_domain: dns.zones.first().cloned(),
            dns_zones: Some(dns.zones.iter().skip(1).cloned().collect()),
            dns_listen: strings(&dns.listen),
            dns_ttl: Some(dns.ttl),
            pods: Some(dns.pods),
            endpoint_pod_names: Some(dns.endpoint_pod_names),
            ignore_empty_service: Some(dns.ignore_empty_service),
            noendpoints: Some(dns.noendpoints),
            namespaces: Some(dns.namespaces.clone()),
            startup_timeout: Some(humantime::format_duration(dns.startup_timeout).to_string()),
            upstreams: strings(&dns.upstreams),
            proxy: Some(self.proxy),
        }
    }
}

/// YAML holds only text: a path that is not UTF-8 (possible only from a flag) is shown lossily.
fn utf8(path: &Path) -> PathBuf {
    PathBuf::from(path.to_string_lossy().into_owned())
}

//! The resolv.conf kubelet writes for a Pod, following `pkg/kubelet/network/dns/dns.go`
//! (`GetPodDNS`, `getPodDNSType`, `appendDNSConfig`, `formDNSConfigFitsLimits`).

use k8s_openapi::api::core::v1::Pod;

use crate::ResolvConf;

/// Kubelet keeps at most this many nameservers (`validation.MaxDNSNameservers`).
pub const MAX_NAMESERVERS: usize = 3;
/// And at most this many search domains (`MaxDNSSearchPaths`, since Kubernetes 1.28)...
pub const MAX_SEARCHES: usize = 32;
/// ...in a search line of at most this many characters (`MaxDNSSearchListChars`).
pub const MAX_SEARCH_CHARS: usize = 2048;
/// A longer search domain makes some glibc versions abort; kubelet drops it.
const MAX_DOMAIN_LEN: usize = 253;

/// What kubelet knows about cluster DNS (its `--cluster-dns` and `--cluster-domain` flags).
#[derive(Clone, Debug)]
pub struct ClusterDns {
    pub servers: Vec<String>,
    pub domain: String,
}

/// A pod resolv.conf, and what kubelet would have warned about while writing it.
#[derive(Debug, PartialEq, Eq)]
pub struct PodResolvConf {
    pub conf: ResolvConf,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("dnsPolicy `{0}` is not ClusterFirst, ClusterFirstWithHostNet, Default or None")]
    Unknown(String),
    #[error("dnsPolicy None needs spec.dnsConfig with at least one nameserver")]
    NoneWithoutNameservers,
}

/// How a Pod's DNS is set up, after kubelet's fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cluster,
    Host,
    None,
}

/// The resolv.conf kubelet writes for `pod` on a node whose own resolv.conf is `node`.
pub fn pod_resolv_conf(
    pod: &Pod,
    cluster: &ClusterDns,
    node: &ResolvConf,
) -> Result<PodResolvConf, PolicyError> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let mut warnings = Vec::new();

    let kind = match policy {
        "None" => Kind::None,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        // A host-network Pod asking for ClusterFirst silently gets the node's DNS.
        "ClusterFirst" if host_network => Kind::Host,
        "ClusterFirst" => Kind::Cluster,
        "Default" => Kind::Host,
        other => return Err(PolicyError::Unknown(other.to_owned())),
    };
    let mut conf = match kind {
        Kind::None => ResolvConf::default(),
        Kind::Cluster if cluster.servers.is_empty() => {
            warnings
                .push("ClusterFirst without cluster DNS servers: kubelet falls back to Default".to_owned());
            node.clone()
        }
        Kind::Cluster => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = cluster.domain.trim_end_matches('.');
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_owned(),
            ];
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: cluster.servers.clone(),
                searches: without_duplicates(searches),
                // The node's own options do not carry over to ClusterFirst Pods.
                options: vec!["ndots:5".to_owned()],
            }
        }
        Kind::Host => node.clone(),
    };

    if let Some(dns_config) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(dns_config.nameservers.iter().flatten().cloned());
        conf.nameservers = without_duplicates(std::mem::take(&mut conf.nameservers));
        conf.searches
            .extend(dns_config.searches.iter().flatten().cloned());
        conf.searches = without_duplicates(std::mem::take(&mut conf.searches));
        for option in dns_config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            set_option(&mut conf.options, name, option.value.as_deref());
        }
    }
    if kind == Kind::None && conf.nameservers.is_empty() {
        return Err(PolicyError::NoneWithoutNameservers);
    }
    fit_limits(&mut conf, &mut warnings);
    Ok(PodResolvConf { conf, warnings })
}

/// A Pod's option replaces the one of the same name (`mergeDNSOptions`), in place.
fn set_option(options: &mut Vec<String>, name: &str, value: Option<&str>) {
    let rendered = match value {
        Some(v) if !v.is_empty() => format!("{name}:{v}"),
        _ => name.to_owned(),
    };
    match options.iter_mut().find(|o| o.split(':').next() == Some(name)) {
        Some(existing) => *existing = rendered,
        None => options.push(rendered),
    }
}

fn without_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// `formDNSConfigFitsLimits`: cut nameservers to 3; search domains to 32, drop over-long ones,
/// then cut from the end until the search line fits 2048 characters.
fn fit_limits(conf: &mut ResolvConf, warnings: &mut Vec<String>) {
    if conf.nameservers.len() > MAX_NAMESERVERS {
        warnings.push(format!(
            "{} nameservers: kubelet keeps the first {MAX_NAMESERVERS}",
            conf.nameservers.len()
        ));
        conf.nameservers.truncate(MAX_NAMESERVERS);
    }
    if conf.searches.len() > MAX_SEARCHES {
        warnings.push(format!(
            "{} search domains: kubelet keeps the first {MAX_SEARCHES}",
            conf.searches.len()
        ));
        conf.searches.truncate(MAX_SEARCHES);
    }
    let before = conf.searches.len();
    conf.searches.retain(|s| s.len() <= MAX_DOMAIN_LEN);
    if conf.searches.len() < before {
        warnings.push(format!(
            "search domains longer than {MAX_DOMAIN_LEN} characters dropped"
        ));
    }
    let mut line_len = conf.searches.join(" ").len();
    if line_len > MAX_SEARCH_CHARS {
        warnings.push(format!(
            "search line of {line_len} characters: kubelet cuts it to {MAX_SEARCH_CHARS}"
        ));
        while line_len > MAX_SEARCH_CHARS {
            let Some(last) = conf.searches.pop() else { break };
            line_len = line_len.saturating_sub(last.len() + 1);
        }
    }
}

#[cfg(test)]
mod tests;

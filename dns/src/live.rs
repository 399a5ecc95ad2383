//! The part of the DNS configuration that changes without a restart. Every query reads the
//! current [`Live`] once (an `ArcSwap` load: no lock) and keeps it to the end, so a reload
//! swaps it between queries; the sockets are never touched, so no query is dropped.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use svcnet_config::DnsConfig;
use tracing::{info, warn};

use crate::{
    autopath::Autopath,
    forward::Forwarder,
    lookup::{ClusterZone, ZoneOptions},
    metrics::DnsMetrics,
    server::DnsError,
    zone::Zones,
};

/// What svcnet knows about the node it serves, for search completion: kubelet builds a
/// ClusterFirst Pod's search list from the node's own resolv.conf.
#[derive(Clone, Debug, Default)]
pub struct NodeDns {
    /// This node's name; without one no Pod is known to be local, and nothing is completed.
    pub name: Option<String>,
    /// The node's search domains.
    pub searches: Vec<String>,
}

impl NodeDns {
    /// `name`, with the search domains of the resolv.conf at `path`; an unreadable file has
    /// none (as the upstreams' default treats it).
    pub fn read(name: Option<String>, path: &Path) -> Self {
        let searches = match std::fs::read_to_string(path) {
            Ok(text) => svcnet_resolv::ResolvConf::parse(&text).searches,
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot read the node's search domains");
                Vec::new()
            }
        };
        Self { name, searches }
    }
}

/// Everything a query reads that a reload may change.
pub(crate) struct Live {
    pub zone: ClusterZone,
    /// Reverse zones whose NXDOMAIN falls through to the upstreams (CoreDNS `fallthrough`).
    pub fallthrough: Vec<Name>,
    pub forwarder: Arc<Forwarder>,
    pub autopath: Option<Autopath>,
}

impl Live {
    /// The live state `config` describes; `forwarder` is reused when given (its cache and
    /// upstream health survive).
    fn build(
        config: &DnsConfig,
        node: &NodeDns,
        local_addrs: &[SocketAddr],
        metrics: &DnsMetrics,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Result<Self, DnsError> {
        let zone_error = |zone: &str| {
            let zone = zone.to_owned();
            move |source| DnsError::Zone { zone, source }
        };
        let zones = Zones::new(&config.zones).map_err(zone_error(&config.zones.join(" ")))?;
        let fallthrough = config
            .fallthrough
            .iter()
            .map(|zone| Name::from_ascii(zone).map_err(zone_error(zone)))
            .collect::<Result<_, _>>()?;
        let forwarder = match forwarder {
            Some(forwarder) => forwarder,
            None => Arc::new(
                Forwarder::new(config, local_addrs, metrics.forward()).map_err(DnsError::StubDomain)?,
            ),
        };
        let autopath = match (&node.name, config.zones.first()) {
            (Some(node_name), Some(cluster)) if config.autopath => {
                let cluster = Name::from_ascii(cluster).map_err(zone_error(cluster))?;
                // A search domain that is no domain name cannot be a candidate: kubelet's
                // resolver would skip it too.
                let searches = node
                    .searches
                    .iter()
                    .filter_map(|s| Name::from_ascii(s).ok())
                    .map(|mut s| {
                        s.set_fqdn(true);
                        s
                    })
                    .collect();
                Some(Autopath::new(cluster, searches, node_name.clone()))
            }
            _ => None,
        };
        Ok(Self {
            zone: ClusterZone::new(zones, ZoneOptions::from_config(config)),
            fallthrough,
            forwarder,
            autopath,
        })
    }
}

/// Applies new configurations to a running server; cheap to share.
#[derive(Clone)]
pub struct DnsReloader {
    live: Arc<ArcSwap<Live>>,
    /// The configuration `live` was built from; only reloads lock it.
    applied: Arc<Mutex<DnsConfig>>,
    node: NodeDns,
    local_addrs: Arc<[SocketAddr]>,
    metrics: DnsMetrics,
}

impl DnsReloader {
    /// The first live state, and the reloader that replaces it.
    pub(crate) fn start(
        config: &DnsConfig,
        node: NodeDns,
        local_addrs: &[SocketAddr],
        metrics: DnsMetrics,
    ) -> Result<Self, DnsError> {
        let live = Live::build(config, &node, local_addrs, &metrics, None)?;
        Ok(Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            applied: Arc::new(Mutex::new(config.clone())),
            node,
            local_addrs: local_addrs.into(),
            metrics,
        })
    }

    pub(crate) fn live(&self) -> Arc<ArcSwap<Live>> {
        Arc::clone(&self.live)
    }

    pub(crate) fn current(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Serves `config` from the next query on. What needs new sockets or threads (`listen`,
    /// `workers`) is not applied: the caller says so. The forwarder, and with it its cache, is
    /// kept unless forwarding settings changed.
    pub fn apply(&self, config: &DnsConfig) -> Result<(), DnsError> {
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let forwarder = (!forwarding_changed(&applied, config)).then(|| self.current().forwarder.clone());
        let kept = forwarder.is_some();
        let live = Live::build(config, &self.node, &self.local_addrs, &self.metrics, forwarder)?;
        self.live.store(Arc::new(live));
        *applied = config.clone();
        info!(forwarder_kept = kept, "DNS configuration applied");
        Ok(())
    }
}

fn forwarding_changed(old: &DnsConfig, new: &DnsConfig) -> bool {
    old.upstreams != new.upstreams
        || old.stub_domains != new.stub_domains
        || old.forward_max_concurrent != new.forward_max_concurrent
        || old.cache_ttl != new.cache_ttl
        || old.cache_serve_stale != new.cache_serve_stale
}

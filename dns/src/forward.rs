//! Forwarding (CoreDNS `forward` + `cache` in kubeadm's Corefile): a question outside the
//! served zones goes to the upstreams of the longest stub domain containing it, else to the
//! default upstreams, unless the cache already holds its answer. Queries are proxied, not
//! re-asked: the client's question, header bits and EDNS go out as they came, and the reply's
//! rcode, flags and sections come back as they are.

use std::{net::SocketAddr, time::Instant};

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, Query, ResponseCode},
    rr::Name,
};
use svcnet_config::DnsConfig;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::{
    cache::{CacheKey, ResponseCache},
    metrics::{CacheResult, ForwardMetrics, Plugin, ServerMetrics},
    pool::UpstreamPool,
    upstream::{Transport, UpstreamError},
};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream is configured for {0}")]
    NoUpstreams(Name),
    #[error("{0} forwarded queries are already in flight")]
    Busy(usize),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

pub struct Forwarder {
    default: Option<UpstreamPool>,
    stubs: Vec<StubDomain>,
    /// `None` when `cache-ttl` is zero.
    cache: Option<ResponseCache>,
    in_flight: Semaphore,
    max_in_flight: usize,
    metrics: ForwardMetrics,
}

struct StubDomain {
    domain: Name,
    pool: UpstreamPool,
}

impl Forwarder {
    /// The forwarder `config` describes. Upstreams at one of `own_addrs` (svcnet's bound
    /// addresses) are dropped: configuration already refuses them, but a port chosen by the
    /// kernel is only known now.
    pub fn new(
        config: &DnsConfig,
        own_addrs: &[SocketAddr],
        metrics: &ForwardMetrics,
    ) -> Result<Self, hickory_proto::ProtoError> {
        let pool = |addrs: &[SocketAddr]| {
            UpstreamPool::new(
                addrs.iter().copied().filter(|&addr| {
                    let own = svcnet_config::is_self(addr, own_addrs);
                    if own {
                        warn!(upstream = %addr, "not forwarding to svcnet's own address");
                    }
                    !own
                }),
                metrics,
            )
        };
        let mut stubs = Vec::new();
        for stub in &config.stub_domains {
            if let Some(pool) = pool(&stub.upstreams) {
                let domain = Name::from_ascii(&stub.domain)?;
                stubs.push(StubDomain { domain, pool });
            }
        }
        let cache = (!config.cache_ttl.is_zero())
            .then(|| ResponseCache::new(config.cache_ttl, config.cache_serve_stale));
        Ok(Self {
            default: pool(&config.upstreams),
            stubs,
            cache,
            in_flight: Semaphore::new(config.forward_max_concurrent),
            max_in_flight: config.forward_max_concurrent,
            metrics: metrics.clone(),
        })
    }

    /// Whether questions for `name` have an upstream to go to.
    pub fn forwards(&self, name: &Name) -> bool {
        self.pool_for(name).is_some()
    }

    /// Every upstream, once.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        let pools = self.default.iter().chain(self.stubs.iter().map(|s| &s.pool));
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in pools.flat_map(UpstreamPool::addrs) {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    /// The answer to `question`, asked with the client's `header` and `edns`: from the cache,
    /// else from an upstream over `transport`, else, when no upstream answers, a stale cached
    /// one (RFC 8767). Returns the reply and who gave it (CoreDNS's `plugin` label); the cache
    /// lookup is counted in `server`'s metrics.
    pub async fn resolve(
        &self,
        question: Query,
        header: &Metadata,
        edns: Option<&Edns>,
        transport: Transport,
        server: &ServerMetrics,
    ) -> Result<(Message, Plugin), ForwardError> {
        let key = CacheKey::new(&question, header, edns);
        if let Some(cache) = &self.cache {
            let hit = cache.get(&key, Instant::now());
            let result = match &hit {
                // The cache's own split: answers with data, and everything else it keeps.
                Some(reply)
                    if reply.metadata.response_code == ResponseCode::NoError && !reply.answers.is_empty() =>
                {
                    CacheResult::HitSuccess
                }
                Some(_) => CacheResult::HitDenial,
                None => CacheResult::Miss,
            };
            server.cache(result, cache.entries());
            if let Some(hit) = hit {
                return Ok((hit, Plugin::Cache));
            }
        }
        let pool = self
            .pool_for(key.name())
            .ok_or_else(|| ForwardError::NoUpstreams(key.name().clone()))?;
        // CoreDNS `max_concurrent`: past the cap a quick REFUSED beats piling up queries that
        // an overloaded upstream will answer too late anyway.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.metrics.rejected();
            return Err(ForwardError::Busy(self.max_in_flight));
        };
        // The client's header bits (RD, CD, AD) and EDNS (DO, payload size, options) go out as
        // they came; the upstream exchange gives the query an ID of its own.
        let mut query = Message::new(header.id, MessageType::Query, header.op_code);
        query.metadata = *header;
        query.add_query(question);
        query.edns = edns.cloned();
        match pool.exchange(&query, transport).await {
            Ok(mut reply) => {
                if let Some(cache) = &self.cache {
                    cache.insert(key, &mut reply, Instant::now());
                }
                Ok((reply, Plugin::Forward))
            }
            Err(error) => {
                let stale = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.get_stale(&key, Instant::now()));
                match stale {
                    Some(stale) => {
                        debug!(%error, name = %key.name(), "no upstream answers; serving a stale answer");
                        Ok((stale, Plugin::Cache))
                    }
                    None => Err(error.into()),
                }
            }
        }
    }

    /// The upstreams for `name`: the longest stub domain containing it wins, else the default.
    fn pool_for(&self, name: &Name) -> Option<&UpstreamPool> {
        self.stubs
            .iter()
            .filter(|stub| stub.domain.zone_of(name))
            .max_by_key(|stub| stub.domain.num_labels())
            .map(|stub| &stub.pool)
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use svcnet_config::{PodsMode, StubDomain as StubConfig};

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn config(upstreams: &[&str], stubs: &[(&str, &str)]) -> DnsConfig {
        DnsConfig {
            listen: vec![sa("127.0.0.1:53")],
            zones: vec!["cluster.local.".into()],
            fallthrough: vec![],
            ttl: 30,
            pods: PodsMode::Insecure,
            endpoint_pod_names: false,
            namespaces: vec![],
            ignore_empty_service: false,
            noendpoints: false,
            startup_timeout: Duration::from_secs(5),
            upstreams: upstreams.iter().map(|u| sa(u)).collect(),
            stub_domains: stubs
                .iter()
                .map(|(domain, upstream)| StubConfig {
                    domain: (*domain).into(),
                    upstreams: vec![sa(upstream)],
                })
                .collect(),
            forward_max_concurrent: 1000,
            cache_ttl: Duration::from_secs(30),
            cache_serve_stale: Duration::from_secs(3600),
            workers: 1,
            autopath: false,
        }
    }

    fn pool_of(forwarder: &Forwarder, name: &str) -> Option<Vec<SocketAddr>> {
        let name = Name::from_ascii(name).unwrap();
        forwarder.pool_for(&name).map(|p| p.addrs().collect())
    }

    #[test]
    fn the_longest_stub_domain_wins_else_the_upstreams() {
        let forwarder = Forwarder::new(
            &config(
                &["10.0.0.1:53"],
                &[("corp.", "10.0.0.2:53"), ("eu.corp.", "10.0.0.3:53")],
            ),
            &[],
            &ForwardMetrics::default(),
        )
        .unwrap();
        assert_eq!(
            pool_of(&forwarder, "www.example.com."),
            Some(vec![sa("10.0.0.1:53")])
        );
        assert_eq!(pool_of(&forwarder, "corp."), Some(vec![sa("10.0.0.2:53")]));
        assert_eq!(
            pool_of(&forwarder, "Host.US.Corp."),
            Some(vec![sa("10.0.0.2:53")])
        );
        assert_eq!(
            pool_of(&forwarder, "host.EU.corp."),
            Some(vec![sa("10.0.0.3:53")])
        );
        assert_eq!(pool_of(&forwarder, "notcorp."), Some(vec![sa("10.0.0.1:53")]));
        assert_eq!(
            forwarder.upstreams(),
            [sa("10.0.0.1:53"), sa("10.0.0.2:53"), sa("10.0.0.3:53")]
        );
    }

    #[test]
    fn without_default_upstreams_only_stub_domains_forward() {
        let forwarder = Forwarder::new(
            &config(&[], &[("corp.", "10.0.0.2:53")]),
            &[],
            &ForwardMetrics::default(),
        )
        .unwrap();
        assert!(forwarder.forwards(&Name::from_ascii("a.corp.").unwrap()));
        assert!(!forwarder.forwards(&Name::from_ascii("example.com.").unwrap()));
    }

    #[test]
    fn svcnets_own_addresses_are_never_upstreams() {
        let own = [sa("0.0.0.0:5300")];
        let forwarder = Forwarder::new(
            &config(&["127.0.0.1:5300", "10.0.0.1:53"], &[("corp.", "127.0.0.1:5300")]),
            &own,
            &ForwardMetrics::default(),
        )
        .unwrap();
        assert_eq!(forwarder.upstreams(), [sa("10.0.0.1:53")]);
        assert_eq!(pool_of(&forwarder, "a.corp."), Some(vec![sa("10.0.0.1:53")]));
    }
}

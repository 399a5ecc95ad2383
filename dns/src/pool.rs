//! The resolvers of one domain (the default `upstreams`, or one stub domain's) with CoreDNS
//! `forward`'s health checking: a random healthy upstream per query, the next one when it does
//! not answer, and an upstream that failed [`MAX_FAILS`] times in a row set aside and probed
//! until it answers again.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::{
    metrics::{ForwardMetrics, UpstreamMetrics},
    upstream::{self, Transport, UpstreamError},
};

/// Failures in a row (timeouts, network errors; not SERVFAIL or other answers) that mark an
/// upstream down (CoreDNS `max_fails`).
const MAX_FAILS: u32 = 2;
/// How often an upstream that is down is probed (CoreDNS `health_check`).
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// A non-empty set of upstreams.
#[derive(Debug)]
pub struct UpstreamPool {
    upstreams: Vec<Arc<Upstream>>,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    /// Failures since the last answer.
    fails: AtomicU32,
    /// Whether a probe task is running for it.
    probing: AtomicBool,
    metrics: UpstreamMetrics,
}

impl UpstreamPool {
    /// A pool of `addrs`, or `None` if there are none.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, metrics: &ForwardMetrics) -> Option<Self> {
        let upstreams: Vec<_> = addrs
            .into_iter()
            .map(|addr| {
                Arc::new(Upstream {
                    addr,
                    fails: AtomicU32::new(0),
                    probing: AtomicBool::new(false),
                    metrics: metrics.upstream(addr),
                })
            })
            .collect();
        (!upstreams.is_empty()).then_some(Self { upstreams })
    }

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.upstreams.iter().map(|u| u.addr)
    }

    /// Sends `query` to the healthy upstreams in random order until one answers; the error is
    /// the last one's when none does.
    pub async fn exchange(&self, query: &Message, transport: Transport) -> Result<Message, UpstreamError> {
        let mut last_error = None;
        for upstream in self.order() {
            upstream.metrics.request();
            let started = Instant::now();
            match upstream::exchange(upstream.addr, query, transport).await {
                Ok(reply) => {
                    upstream
                        .metrics
                        .response(reply.metadata.response_code, started.elapsed());
                    upstream.fails.store(0, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(error) => {
                    debug!(%error, "upstream failed; trying the next");
                    if error.is_upstream_failure() {
                        upstream.failed();
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("a pool has at least one upstream, so one was tried"))
    }

    /// The healthy upstreams, shuffled (CoreDNS's default `policy random`). When every one is
    /// down, the health checks themselves may be what is broken, so all are tried anyway, as
    /// CoreDNS does.
    fn order(&self) -> Vec<Arc<Upstream>> {
        let mut order: Vec<_> = self.upstreams.iter().filter(|u| !u.is_down()).cloned().collect();
        if order.is_empty() {
            order.clone_from(&self.upstreams);
        }
        order.shuffle(&mut rand::rng());
        order
    }
}

impl Upstream {
    fn is_down(&self) -> bool {
        self.fails.load(Ordering::Relaxed) >= MAX_FAILS
    }

    /// Counts a failure; the one that marks the upstream down starts its probe task.
    fn failed(self: &Arc<Self>) {
        // Saturating: a dead upstream tried under load for months must not wrap to healthy.
        let saturating = |fails: u32| Some(fails.saturating_add(1));
        let previous = self
            .fails
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, saturating);
        let fails = previous.unwrap_or_else(|fails| fails).saturating_add(1);
        if fails >= MAX_FAILS && !self.probing.swap(true, Ordering::AcqRel) {
            warn!(upstream = %self.addr, "upstream down after {fails} failures in a row; probing it");
            tokio::spawn(Arc::clone(self).probe());
        }
    }

    /// Asks `. IN NS` (CoreDNS's health check) every [`PROBE_INTERVAL`] until any answer comes.
    async fn probe(self: Arc<Self>) {
        let mut query = Message::query();
        query.add_query(Query::query(Name::root(), RecordType::NS));
        query.metadata.recursion_desired = true;
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if upstream::exchange(self.addr, &query, Transport::Udp)
                .await
                .is_ok()
            {
                info!(upstream = %self.addr, "upstream answers again");
                self.fails.store(0, Ordering::Relaxed);
                self.probing.store(false, Ordering::Release);
                return;
            }
            self.metrics.healthcheck_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addrs: &[&str]) -> UpstreamPool {
        UpstreamPool::new(
            addrs.iter().map(|a| a.parse().unwrap()),
            &ForwardMetrics::default(),
        )
        .unwrap()
    }

    #[test]
    fn an_empty_pool_is_none() {
        assert!(UpstreamPool::new([], &ForwardMetrics::default()).is_none());
    }

    #[test]
    fn down_upstreams_are_skipped_unless_all_are_down() {
        let pool = pool(&["192.0.2.1:53", "192.0.2.2:53"]);
        pool.upstreams[0].fails.store(MAX_FAILS, Ordering::Relaxed);
        for _ in 0..20 {
            let order: Vec<SocketAddr> = pool.order().iter().map(|u| u.addr).collect();
            assert_eq!(order, ["192.0.2.2:53".parse().unwrap()]);
        }
        pool.upstreams[1].fails.store(MAX_FAILS, Ordering::Relaxed);
        assert_eq!(pool.order().len(), 2);
    }

    #[test]
    fn the_order_is_random() {
        let pool = pool(&["192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"]);
        let firsts: std::collections::HashSet<SocketAddr> = (0..200).map(|_| pool.order()[0].addr).collect();
        assert_eq!(firsts.len(), 3);
    }
}

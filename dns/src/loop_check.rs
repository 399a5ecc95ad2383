//! Forwarding-loop detection at start (CoreDNS `loop`). The usual cause is a node whose
//! resolv.conf names a local stub resolver (systemd-resolved's 127.0.0.53) that itself forwards
//! to svcnet: every forwarded query would circle until it times out, and the node's DNS with it.
//!
//! A query for a random name under [`LOOP_ZONE`] goes to each upstream. No real resolver sends
//! such a query back, so if the handler sees the name arrive, the upstream forwards to svcnet.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{LazyLock, Mutex, MutexGuard, PoisonError},
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use tokio::{sync::Notify, task::JoinSet};

use crate::upstream::{self, Transport};

/// The zone the probe names are made in; no resolver answers for it but the root.
static LOOP_ZONE: LazyLock<Name> =
    LazyLock::new(|| Name::from_ascii("svcnet-loop-check.").expect("a valid name"));
/// Sightings of one probe name that make a loop. CoreDNS counts three, the first being its own
/// query through itself; svcnet's probe goes straight to the upstream, so it counts two: the
/// name came back, went out again and came back again.
const SIGHTINGS: u32 = 2;

#[derive(Default)]
pub struct LoopDetector {
    /// Probe names in flight: the upstream each went to, and how often it came back.
    probes: Mutex<HashMap<Name, (SocketAddr, u32)>>,
    looped: Notify,
}

impl LoopDetector {
    /// Counts `qname` if it is a probe in flight; cheap for every other name.
    pub fn observe(&self, qname: &Name) {
        if !LOOP_ZONE.zone_of(qname) {
            return;
        }
        if let Some((_, seen)) = self.lock().get_mut(qname) {
            *seen += 1;
            if *seen >= SIGHTINGS {
                self.looped.notify_one();
            }
        }
    }

    /// Sends one probe through each of `upstreams` and waits for their replies or timeouts, or
    /// until a probe came back often enough. Returns the first upstream found looping.
    pub async fn check(&self, upstreams: Vec<SocketAddr>) -> Result<(), SocketAddr> {
        let mut sends = JoinSet::new();
        for upstream in upstreams {
            let name = probe_name();
            self.lock().insert(name.clone(), (upstream, 0));
            let mut query = Message::query();
            query.add_query(Query::query(name, RecordType::HINFO));
            query.metadata.recursion_desired = true;
            // What the upstream answers does not matter, only whether the name comes back.
            sends.spawn(async move { upstream::exchange(upstream, &query, Transport::Udp).await });
        }
        tokio::select! {
            () = async { while sends.join_next().await.is_some() {} } => {}
            () = self.looped.notified() => {}
        }
        let mut probes = self.lock();
        let looping = probes
            .values()
            .find(|(_, seen)| *seen >= SIGHTINGS)
            .map(|(upstream, _)| *upstream);
        probes.clear();
        looping.map_or(Ok(()), Err)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Name, (SocketAddr, u32)>> {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `<random>.<random>.svcnet-loop-check.`, as CoreDNS makes `<random>.<random>.<zone>`.
fn probe_name() -> Name {
    let labels = format!("{:016x}.{:016x}", rand::random::<u64>(), rand::random::<u64>());
    Name::from_ascii(labels)
        .and_then(|name| name.append_domain(&LOOP_ZONE))
        .expect("hex labels under a valid zone make a valid name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_seen_twice_is_a_loop_and_other_names_are_ignored() {
        let detector = LoopDetector::default();
        let upstream: SocketAddr = "192.0.2.1:53".parse().unwrap();
        let name = probe_name();
        detector.lock().insert(name.clone(), (upstream, 0));
        detector.observe(&Name::from_ascii("www.example.com.").unwrap());
        detector.observe(&probe_name());
        detector.observe(&name.to_lowercase());
        assert_eq!(detector.lock()[&name].1, 1);
        detector.observe(&name);
        // The notification is kept for `check`, which reports the upstream with no probe of
        // its own to send.
        assert_eq!(detector.check(vec![]).await, Err(upstream));
        assert!(detector.lock().is_empty(), "the check is over");
    }

    #[test]
    fn probe_names_are_random_and_under_the_loop_zone() {
        let (a, b) = (probe_name(), probe_name());
        assert_ne!(a, b);
        assert!(LOOP_ZONE.zone_of(&a));
        assert_eq!(a.num_labels(), 3);
    }
}

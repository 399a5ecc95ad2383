//! Server-side search completion (CoreDNS `autopath`): which names to try for a query, and
//! for which clients. The walking itself is the handler's; this part is pure.
//!
//! A ClusterFirst Pod resolving `api.example.com` with `ndots:5` asks for
//! `api.example.com.<ns>.svc.<zone>` first, and each search domain after it, A and AAAA. svcnet
//! knows that list: when the client is a Pod of this node it walks the list itself and answers
//! the first name that exists, behind a CNAME from the asked name. CoreDNS's caveats are avoided
//! rather than documented: only this node's Pods are indexed, a source address with more than
//! one candidate Pod (a reused IP, completed Pods) is not completed, hostNetwork Pods (the node's
//! address) never are, and neither are Pods whose search list is not kubelet's ClusterFirst one.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use svcnet_cluster::{Snapshot, model::Pod};

/// The search list parts that do not depend on the client.
#[derive(Clone, Debug)]
pub struct Autopath {
    /// The cluster domain, fully qualified.
    zone: Name,
    /// The node's own search domains (its resolv.conf), which kubelet appends for ClusterFirst.
    node_searches: Vec<Name>,
    /// Only Pods on this node are clients; without a node name no Pod is.
    node_name: String,
}

impl Autopath {
    pub fn new(zone: Name, node_searches: Vec<Name>, node_name: String) -> Self {
        Self {
            zone,
            node_searches,
            node_name,
        }
    }

    /// The names to try, in order, for `qname` asked by `client`; `None` when the query is not
    /// completed. The first name is `qname` itself; the last is the base name, absolute.
    pub fn candidates(&self, snap: &Snapshot, client: IpAddr, qname: &Name) -> Option<Vec<Name>> {
        let pod = self.client_pod(snap, client)?;
        let namespace = Name::from_labels([pod.key.namespace.as_bytes(), b"svc"]).ok()?;
        let first = namespace.append_domain(&self.zone).ok()?;
        // Only the first search domain triggers completion (CoreDNS): a query under a later one
        // means the client walks by itself, or asks that name on purpose.
        if !first.zone_of(qname) || qname.num_labels() == first.num_labels() {
            return None;
        }
        let base_labels = usize::from(qname.num_labels() - first.num_labels());
        let mut base = Name::from_labels(qname.iter().take(base_labels)).ok()?;
        base.set_fqdn(true);
        let svc = Name::from_labels([b"svc".as_slice()])
            .ok()?
            .append_domain(&self.zone)
            .ok()?;
        let mut searches: Vec<Name> = vec![first, svc, self.zone.clone()];
        // kubelet drops repeated domains: the node may search the cluster domain itself.
        for search in &self.node_searches {
            if !searches.contains(search) {
                searches.push(search.clone());
            }
        }
        let mut names: Vec<Name> = Vec::with_capacity(searches.len() + 1);
        names.push(qname.clone());
        // A name too long for one search domain is skipped, as the resolver would.
        names.extend(
            searches
                .iter()
                .skip(1)
                .filter_map(|s| base.clone().append_domain(s).ok()),
        );
        names.push(base);
        Some(names)
    }

    /// The one Pod of this node, not host-network and not terminating, with address `client`,
    /// whose search list is kubelet's ClusterFirst one.
    fn client_pod<'a>(&self, snap: &'a Snapshot, client: IpAddr) -> Option<&'a Pod> {
        let mut pods = snap.pods_by_ip(client).iter().filter(|pod| {
            !pod.terminating && !pod.host_network && pod.node_name.as_deref() == Some(&self.node_name)
        });
        let pod = pods.next()?;
        // Two Pods claiming one address: the watch is behind, and either namespace may be wrong
        // (coredns#2842, #3765). A plain answer is always right.
        if pods.next().is_some() || !pod.cluster_first_search {
            return None;
        }
        Some(pod)
    }
}

#[cfg(test)]
mod tests;

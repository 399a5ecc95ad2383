//! What the proxy knows about the node it runs on: its name (which endpoints are local), the
//! addresses that accept NodePorts, and the Pod CIDRs (which sources are inside the cluster).

use std::{io, net::IpAddr};

use ipnet::IpNet;

/// The node-specific inputs of the desired state; fixed for the life of the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// `spec.nodeName` of this node's Pods, matched against endpoints' `nodeName`. `None`
    /// (only possible with `proxy: dry-run`) makes no endpoint local.
    pub node_name: Option<String>,
    /// Addresses whose NodePorts are served. Loopback addresses are never used: DNAT of a
    /// packet to 127.0.0.0/8 needs `route_localnet`, the hole behind CVE-2020-8558.
    pub nodeport_addresses: Vec<IpAddr>,
    /// The Pod CIDRs (`cluster-cidr`). Traffic to a ClusterIP from outside them is
    /// masqueraded so replies come back through this node; with none, nothing is masqueraded
    /// by source (kube-proxy without detect-local).
    pub cluster_cidrs: Vec<IpNet>,
}

impl NodeContext {
    pub fn is_local(&self, endpoint_node: Option<&str>) -> bool {
        self.node_name.is_some() && self.node_name.as_deref() == endpoint_node
    }
}

impl NodeContext {
    /// The context of the node this runs on, its NodePort addresses taken from its
    /// interfaces now: those inside `nodeport_cidrs`, or all of them when that is empty.
    pub fn discover(
        node_name: Option<String>,
        nodeport_cidrs: &[IpNet],
        cluster_cidrs: Vec<IpNet>,
    ) -> io::Result<Self> {
        Ok(Self {
            node_name,
            nodeport_addresses: select_nodeport_addresses(&interface_addresses()?, nodeport_cidrs),
            cluster_cidrs,
        })
    }
}

/// Every address of the node's interfaces, from `getifaddrs` (link-local IPv6 addresses are
/// left out by `if-addrs`: they are per link, not node addresses).
fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let interfaces = if_addrs::get_if_addrs()?;
    Ok(interfaces.iter().map(if_addrs::Interface::ip).collect())
}

/// The NodePort addresses among `local`: those inside one of `cidrs`, or all when `cidrs` is
/// empty; never loopback. Sorted and without repeats, so the desired state does not depend on
/// interface order.
pub fn select_nodeport_addresses(local: &[IpAddr], cidrs: &[IpNet]) -> Vec<IpAddr> {
    let mut selected: Vec<IpAddr> = local
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| cidrs.is_empty() || cidrs.iter().any(|net| net.contains(ip)))
        .collect();
    selected.sort_unstable();
    selected.dedup();
    selected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn nodeport_addresses_default_to_every_non_loopback_address() {
        let local = ips(&[
            "127.0.0.1",
            "192.168.1.10",
            "::1",
            "fd00::10",
            "10.0.0.5",
            "192.168.1.10",
        ]);
        assert_eq!(
            select_nodeport_addresses(&local, &[]),
            ips(&["10.0.0.5", "192.168.1.10", "fd00::10"])
        );
    }

    #[test]
    fn a_cidr_list_selects_the_local_addresses_inside_it_but_never_loopback() {
        let local = ips(&["127.0.0.1", "192.168.1.10", "fd00::10", "10.0.0.5"]);
        let cidrs = ["192.168.0.0/16".parse().unwrap(), "127.0.0.0/8".parse().unwrap()];
        assert_eq!(select_nodeport_addresses(&local, &cidrs), ips(&["192.168.1.10"]));
    }

    #[test]
    fn without_a_node_name_nothing_is_local() {
        let node = NodeContext::default();
        assert!(!node.is_local(None));
        assert!(!node.is_local(Some("")));
        let node = NodeContext {
            node_name: Some("n1".into()),
            ..NodeContext::default()
        };
        assert!(node.is_local(Some("n1")));
        assert!(!node.is_local(Some("n2")));
        assert!(!node.is_local(None));
    }
}

//! The shape of svcnet's tables, and the desired state written as their elements.
//!
//! Each family has one table with a constant set of chains, sets and maps, whatever the number
//! of Services: all churn is element adds and deletes in named maps, which the kernel handles
//! in time linear in the change. (A chain or anonymous map per Service, kube-proxy's shape,
//! costs roughly quadratic kernel time on a large full sync.)
//!
//! ```text
//! nat-prerouting, nat-output:  daddr . l4proto . dport  vmap @service-ips  -> goto lb-PROTO-N[-masq|-local]
//! lb-PROTO-N:                  [mark] dnat to  @endpoints-PROTO[daddr . l4proto . dport . random mod N]
//! filter-input/forward/output: new conn: daddr . l4proto . dport  vmap @no-endpoints -> reject | drop
//! nat-postrouting:             marked or hairpin (saddr . daddr in @hairpin): masquerade
//! ```
//!
//! The endpoint map is split by protocol (`endpoints-tcp`, `-udp`, `-sctp`), each with its
//! protocol's port in its data type (`ip daddr . tcp dport`), and so are the chains that read
//! them. One map with `th dport` in its data would do for all three, but nft 1.0.6 cannot
//! reference such a map from a rule added in a later transaction ("conflicting protocols
//! specified: ip vs. th" when it reads the map's type back from the kernel), so a partial sync
//! could not add a chain. With a protocol's port in the type, nft adds a `meta l4proto`
//! match to the chain's dnat rule, which the dispatch key already guarantees. (`tcp dport` in
//! a single shared map would add that match for every protocol: UDP would never be DNATed.)

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use svcnet_cluster::model::Protocol;

use crate::{
    desired::{Desired, EntryPoint, Labeled, LbChain, Masquerade, NoEndpoints},
    nft::{Command, Element, Family, Hook, SetSpec, Transaction, Value, Verdict},
};

pub(crate) const CLUSTER_CIDRS: &str = "cluster-cidrs";
pub(crate) const SERVICE_IPS: &str = "service-ips";
pub(crate) const NO_ENDPOINTS: &str = "no-endpoints";
pub(crate) const HAIRPIN: &str = "hairpin";
const REJECT_CHAIN: &str = "reject-chain";

/// The packet mark bit that asks nat-postrouting to masquerade; kube-proxy's default bit 14,
/// so the two agree while one replaces the other on a node.
const MASQUERADE_MARK: &str = "0x4000";

/// A transaction that replaces both tables with `desired`, atomically: `add table` first so
/// the `delete` cannot fail on a node without the table, then the whole new table. Packets see
/// the old rules or the new ones, never none.
pub fn full(desired: &Desired) -> Transaction {
    let mut tx = Transaction::new();
    for family in Family::ALL {
        let state = desired.family(family);
        let kw = family.keyword();
        let addr = family.addr_type();
        let cmd = |tx: &mut Transaction, command| tx.push(family, command);

        cmd(&mut tx, Command::AddTable);
        cmd(&mut tx, Command::DeleteTable);
        cmd(&mut tx, Command::AddTable);

        let set = |name, key: String, data: Option<&str>, flags| Command::AddSet {
            name,
            spec: SetSpec::Type {
                key,
                data: data.map(str::to_owned),
                flags,
            },
        };
        let entry_type = format!("{addr} . inet_proto . inet_service");
        cmd(
            &mut tx,
            set(CLUSTER_CIDRS, addr.to_owned(), None, Some("interval")),
        );
        cmd(
            &mut tx,
            set(SERVICE_IPS, entry_type.clone(), Some("verdict"), None),
        );
        cmd(&mut tx, set(NO_ENDPOINTS, entry_type, Some("verdict"), None));
        // `typeof`, because a numgen slot has no type name; the `mod 2` only fixes the key's
        // type. Per protocol: see the module comment.
        for protocol in PROTOCOLS {
            cmd(
                &mut tx,
                Command::AddSet {
                    name: endpoints_map(protocol),
                    spec: SetSpec::Typeof {
                        key: format!("{kw} daddr . meta l4proto . th dport . numgen random mod 2"),
                        data: format!("{kw} daddr . {} dport", protocol.as_str()),
                    },
                },
            );
        }
        cmd(&mut tx, set(HAIRPIN, format!("{addr} . {addr}"), None, None));

        // `reject` is a statement, not a verdict a map can hold: map elements `goto` here.
        cmd(&mut tx, chain(REJECT_CHAIN, None));
        cmd(
            &mut tx,
            rule(REJECT_CHAIN, "meta l4proto tcp reject with tcp reset"),
        );
        cmd(&mut tx, rule(REJECT_CHAIN, "reject"));

        for lb in &state.lb_chains {
            for command in lb_chain(family, *lb, !state.cluster_cidrs.is_empty()) {
                cmd(&mut tx, command);
            }
        }

        let dispatch = format!("{kw} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}");
        cmd(
            &mut tx,
            chain("nat-prerouting", Some(hook("nat", "prerouting", "dstnat"))),
        );
        cmd(&mut tx, rule("nat-prerouting", &dispatch));
        // nft 1.0.6 does not accept `dstnat` as the output hook's priority in text: -100 is it.
        cmd(&mut tx, chain("nat-output", Some(hook("nat", "output", "-100"))));
        cmd(&mut tx, rule("nat-output", &dispatch));
        cmd(
            &mut tx,
            chain("nat-postrouting", Some(hook("nat", "postrouting", "srcnat"))),
        );
        // The mark is cleared before masquerading so that a packet re-entering the stack (a
        // VXLAN-encapsulated skb) is not masqueraded twice.
        cmd(
            &mut tx,
            rule(
                "nat-postrouting",
                &format!(
                    "meta mark & {MASQUERADE_MARK} != 0 meta mark set meta mark ^ {MASQUERADE_MARK} \
                     masquerade fully-random"
                ),
            ),
        );
        cmd(
            &mut tx,
            rule(
                "nat-postrouting",
                &format!("ct status dnat {kw} saddr . {kw} daddr @{HAIRPIN} masquerade fully-random"),
            ),
        );
        // Only new connections: established ones never pay for the lookup.
        let refuse = format!("ct state new {kw} daddr . meta l4proto . th dport vmap @{NO_ENDPOINTS}");
        for hook_name in ["input", "forward", "output"] {
            let name = format!("filter-{hook_name}");
            cmd(&mut tx, chain(&name, Some(hook("filter", hook_name, "filter"))));
            cmd(&mut tx, rule(&name, &refuse));
        }

        let elements = |set, elements| Command::AddElements { set, elements };
        cmd(
            &mut tx,
            elements(
                CLUSTER_CIDRS,
                state.cluster_cidrs.iter().map(|n| cidr(*n)).collect(),
            ),
        );
        cmd(
            &mut tx,
            elements(SERVICE_IPS, state.service_ips.iter().map(service_ip).collect()),
        );
        cmd(
            &mut tx,
            elements(NO_ENDPOINTS, state.no_endpoints.iter().map(no_endpoint).collect()),
        );
        for protocol in PROTOCOLS {
            let endpoints = state
                .endpoints
                .iter()
                .filter(|((entry, _), _)| entry.protocol == protocol)
                .map(|(k, v)| endpoint(k, *v))
                .collect();
            cmd(&mut tx, elements(endpoints_map(protocol), endpoints));
        }
        cmd(
            &mut tx,
            elements(HAIRPIN, state.hairpin.iter().map(|ip| hairpin(*ip)).collect()),
        );
    }
    tx
}

/// Deletes both tables, whether or not they exist (`svcnet cleanup`).
pub fn cleanup() -> Transaction {
    let mut tx = Transaction::new();
    for family in Family::ALL {
        tx.push(family, Command::AddTable);
        tx.push(family, Command::DeleteTable);
    }
    tx
}

/// A load-balancing chain with its rules. With no cluster CIDRs of the family, the off-cluster
/// variant marks nothing: every source counts as inside (kube-proxy without detect-local).
pub(crate) fn lb_chain(family: Family, lb: LbChain, have_cluster_cidrs: bool) -> Vec<Command> {
    let kw = family.keyword();
    let name = lb.name();
    let mut commands = vec![chain(&name, None)];
    let mark = format!("meta mark set meta mark | {MASQUERADE_MARK}");
    match lb.masquerade {
        Masquerade::OffCluster if have_cluster_cidrs => {
            commands.push(rule(&name, &format!("{kw} saddr != @{CLUSTER_CIDRS} {mark}")));
        }
        Masquerade::Always => commands.push(rule(&name, &mark)),
        Masquerade::OffCluster | Masquerade::Never => {}
    }
    commands.push(rule(
        &name,
        &format!(
            "dnat {kw} to {kw} daddr . meta l4proto . th dport . numgen random mod {} map @{}",
            lb.endpoints,
            endpoints_map(lb.protocol)
        ),
    ));
    commands
}

pub(crate) const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// The endpoint map of a protocol.
pub(crate) fn endpoints_map(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "endpoints-tcp",
        Protocol::Udp => "endpoints-udp",
        Protocol::Sctp => "endpoints-sctp",
    }
}

fn chain(name: &str, hook: Option<Hook>) -> Command {
    Command::AddChain {
        name: name.to_owned(),
        hook,
    }
}

fn rule(chain: &str, rule: &str) -> Command {
    Command::AddRule {
        chain: chain.to_owned(),
        rule: rule.to_owned(),
    }
}

fn hook(kind: &'static str, hook: &'static str, priority: &'static str) -> Hook {
    Hook { kind, hook, priority }
}

fn entry_key(entry: &EntryPoint) -> Vec<Value> {
    vec![
        Value::Addr(entry.addr),
        Value::Proto(entry.protocol),
        Value::Port(entry.port),
    ]
}

pub(crate) fn cidr(net: IpNet) -> Element {
    Element::key(vec![Value::Net(net)])
}

pub(crate) fn service_ip((entry, lb): (&EntryPoint, &Labeled<LbChain>)) -> Element {
    let verdict = Verdict::Goto(lb.value.name());
    Element::map(entry_key(entry), vec![Value::Verdict(verdict)]).with_comment(&lb.service)
}

pub(crate) fn no_endpoint((entry, what): (&EntryPoint, &Labeled<NoEndpoints>)) -> Element {
    let verdict = match what.value {
        NoEndpoints::Reject => Verdict::Goto(REJECT_CHAIN.to_owned()),
        NoEndpoints::Drop => Verdict::Drop,
    };
    Element::map(entry_key(entry), vec![Value::Verdict(verdict)]).with_comment(&what.service)
}

pub(crate) fn endpoint((entry, slot): &(EntryPoint, u32), target: SocketAddr) -> Element {
    let mut key = entry_key(entry);
    key.push(Value::Int(*slot));
    Element::map(key, vec![Value::Addr(target.ip()), Value::Port(target.port())])
}

pub(crate) fn hairpin(ip: IpAddr) -> Element {
    Element::key(vec![Value::Addr(ip), Value::Addr(ip)])
}

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
//! firewall-prerouting/output:  new conn: daddr . l4proto . dport in @firewall-ips and
//!                              daddr . l4proto . dport . saddr not in @firewall-allow: drop
//! lb-PROTO-N-aff:              dnat to @affinity-PROTO[saddr . daddr . l4proto . dport], else as lb-PROTO-N
//! filter-*, new DNATed conn:   orig daddr . l4proto . orig dport vmap @affinity -> goto affinity-PROTO-Ts
//! affinity-PROTO-Ts:           update @affinity-PROTO { saddr . orig entry timeout T : daddr . dport }
//! ```
//!
//! Session affinity (`ClientIP`) uses two maps per family and protocol however many Services
//! have it, not kube-proxy's set per endpoint. A new connection of an affinity Service is
//! balanced as usual; once DNATed, a filter hook records `client . entry point : endpoint` in
//! the dynamic map `affinity-PROTO`, with the Service's timeout (a rule constant, hence one
//! chain per protocol and timeout in use). The next new connection of that client to that entry
//! point is DNATed straight from that map, and recorded again, which restarts the timeout: like
//! kube-proxy's sets, affinity lasts until no new connection came for the timeout. The
//! recording cannot sit next to the DNAT (a dnat statement ends the chain), so it runs in the
//! filter hooks, where the packet has the endpoint and `ct original` still the entry point.
//! When an endpoint of an affinity entry point goes away, the whole map of its protocol is
//! flushed in the same transaction, so no client is ever sent to a removed endpoint; it costs
//! every client of that protocol its affinity once.
//!
//! `loadBalancerSourceRanges` is two sets too: the protected load-balancer entry points, and
//! `entry point . source range` pairs in an interval set (a concatenation with intervals, which
//! needs kernel 5.6), checked before DNAT as kube-proxy's `firewall-check` is.
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
    desired::{AffinityChain, Desired, EntryPoint, Labeled, LbChain, Masquerade, NoEndpoints},
    nft::{Command, Element, Family, Hook, SetSpec, Transaction, Value, Verdict},
};

pub(crate) const CLUSTER_CIDRS: &str = "cluster-cidrs";
pub(crate) const SERVICE_IPS: &str = "service-ips";
pub(crate) const NO_ENDPOINTS: &str = "no-endpoints";
pub(crate) const HAIRPIN: &str = "hairpin";
pub(crate) const AFFINITY: &str = "affinity";
pub(crate) const FIREWALL_IPS: &str = "firewall-ips";
pub(crate) const FIREWALL_ALLOW: &str = "firewall-allow";
const AFFINITY_CHECK: &str = "affinity-check";
/// The most clients (times entry points) an affinity map remembers per protocol and family.
const AFFINITY_SIZE: u32 = 1 << 20;
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
                size: None,
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
        cmd(
            &mut tx,
            set(NO_ENDPOINTS, entry_type.clone(), Some("verdict"), None),
        );
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
        cmd(&mut tx, set(AFFINITY, entry_type.clone(), Some("verdict"), None));
        for protocol in PROTOCOLS {
            // `type`, not `typeof`: the rules fill the key from `ct original proto-dst`, whose
            // type nft knows only next to a protocol match.
            cmd(
                &mut tx,
                Command::AddSet {
                    name: affinity_map(protocol),
                    spec: SetSpec::Type {
                        key: format!("{addr} . {entry_type}"),
                        data: Some(format!("{addr} . inet_service")),
                        flags: Some("dynamic,timeout"),
                        size: Some(AFFINITY_SIZE),
                    },
                },
            );
        }
        cmd(&mut tx, set(FIREWALL_IPS, entry_type.clone(), None, None));
        cmd(
            &mut tx,
            set(
                FIREWALL_ALLOW,
                format!("{entry_type} . {addr}"),
                None,
                Some("interval"),
            ),
        );

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
        for affinity in &state.affinity_chains {
            for command in affinity_chain(family, *affinity) {
                cmd(&mut tx, command);
            }
        }
        // `ct original proto-dst` needs a protocol match to have a type: one rule each.
        cmd(&mut tx, chain(AFFINITY_CHECK, None));
        for protocol in PROTOCOLS {
            cmd(
                &mut tx,
                rule(
                    AFFINITY_CHECK,
                    &format!(
                        "meta l4proto {} ct original {kw} daddr . meta l4proto . ct original proto-dst \
                         vmap @{AFFINITY}",
                        protocol.as_str()
                    ),
                ),
            );
        }

        // Before DNAT (dstnat - 10), while the destination is still the load balancer's.
        let firewall = format!(
            "ct state new {kw} daddr . meta l4proto . th dport @{FIREWALL_IPS} \
             {kw} daddr . meta l4proto . th dport . {kw} saddr != @{FIREWALL_ALLOW} drop"
        );
        cmd(
            &mut tx,
            chain(
                "firewall-prerouting",
                Some(hook("filter", "prerouting", "dstnat - 10")),
            ),
        );
        cmd(&mut tx, rule("firewall-prerouting", &firewall));
        cmd(
            &mut tx,
            chain("firewall-output", Some(hook("filter", "output", "-110"))),
        );
        cmd(&mut tx, rule("firewall-output", &firewall));

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
            // After DNAT, where the endpoint is known: the affinity of new connections.
            cmd(
                &mut tx,
                rule(
                    &name,
                    &format!("ct state new ct status dnat jump {AFFINITY_CHECK}"),
                ),
            );
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
        cmd(
            &mut tx,
            elements(AFFINITY, state.affinity.iter().map(affinity).collect()),
        );
        cmd(
            &mut tx,
            elements(FIREWALL_IPS, state.firewall.iter().map(firewall_ip).collect()),
        );
        cmd(
            &mut tx,
            elements(
                FIREWALL_ALLOW,
                state.firewall_allow.iter().map(firewall_allow).collect(),
            ),
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
    // A client seen within the timeout goes back to its endpoint; a miss (no element, or an
    // expired one) ends the rule without a verdict, and the next balances as usual.
    if lb.affinity {
        commands.push(rule(
            &name,
            &format!(
                "dnat {kw} to {kw} saddr . {kw} daddr . meta l4proto . th dport map @{}",
                affinity_map(lb.protocol)
            ),
        ));
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

/// An affinity chain: records the endpoint a new connection was DNATed to, under its client
/// and entry point, for the chain's timeout. `update` also restarts the timeout of a client
/// already recorded (the element keeps its endpoint: it is the one the connection went to).
pub(crate) fn affinity_chain(family: Family, affinity: AffinityChain) -> Vec<Command> {
    let kw = family.keyword();
    let name = affinity.name();
    let protocol = affinity.protocol.as_str();
    vec![
        chain(&name, None),
        rule(
            &name,
            &format!(
                "meta l4proto {protocol} update @{map} {{ {kw} saddr . ct original {kw} daddr . \
                 meta l4proto . ct original proto-dst timeout {secs}s : {kw} daddr . {protocol} dport }}",
                map = affinity_map(affinity.protocol),
                secs = affinity.timeout_secs,
            ),
        ),
    ]
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

/// The affinity map of a protocol: `client . entry point : endpoint`, filled from the packet
/// path. Per protocol for the same reason as the endpoint maps.
pub(crate) fn affinity_map(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "affinity-tcp",
        Protocol::Udp => "affinity-udp",
        Protocol::Sctp => "affinity-sctp",
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

pub(crate) fn affinity((entry, chain): (&EntryPoint, &Labeled<AffinityChain>)) -> Element {
    let verdict = Verdict::Goto(chain.value.name());
    Element::map(entry_key(entry), vec![Value::Verdict(verdict)]).with_comment(&chain.service)
}

pub(crate) fn firewall_ip(entry: &EntryPoint) -> Element {
    Element::key(entry_key(entry))
}

pub(crate) fn firewall_allow((entry, source): &(EntryPoint, IpNet)) -> Element {
    let mut key = entry_key(entry);
    key.push(Value::Net(*source));
    Element::key(key)
}

pub(crate) fn hairpin(ip: IpAddr) -> Element {
    Element::key(vec![Value::Addr(ip), Value::Addr(ip)])
}

//! Deleting the conntrack entries of UDP and SCTP flows that the new rules no longer serve, as
//! kube-proxy does (`pkg/proxy/conntrack/cleanup.go`).
//!
//! DNAT applies to a flow's first packet only; conntrack replays it for the rest. A UDP flow
//! has no end a connection tracker can see, so a client that keeps sending from one socket
//! (a DNS resolver, a game, a metrics agent) stays with a removed endpoint for as long as it
//! keeps sending, or with no DNAT at all if it started while the entry point had no rule. Such
//! entries are deleted after each sync, so the flow's next packet is balanced again. TCP is left
//! alone: a connection to a removed endpoint ends with a reset or a timeout, and its client
//! reconnects.
//!
//! What to delete is derived from the states before and after the sync ([`stale_flows`], pure),
//! and deleted by one `conntrack -R -` run with a `-D` line per target ([`ConntrackCommand`]),
//! deduplicated. Each line still walks the whole table in conntrack-tools 1.4.7, but the process
//! starts once per sync, not once per target.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use svcnet_cluster::model::Protocol;
use tracing::{info, warn};

use crate::{
    apply::run_tool,
    desired::{Desired, EntryPoint, FamilyState},
    error::NftError,
    nft::Family,
};

/// Flows to delete: every flow to an entry point, or only those DNATed to one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StaleFlows {
    pub entry: EntryPoint,
    /// `None`: every flow to the entry point, whatever its endpoint or lack of one.
    pub endpoint: Option<SocketAddr>,
}

impl fmt::Display for StaleFlows {
    /// The `conntrack -D` arguments that select these flows: by original destination (the
    /// entry point) and, for one endpoint, by reply source (where the flow was DNATed to).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.entry.addr {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        };
        write!(
            f,
            "-D -f {family} -p {} --orig-dst {} --orig-port-dst {}",
            self.entry.protocol.as_str(),
            self.entry.addr,
            self.entry.port
        )?;
        if let Some(endpoint) = self.endpoint {
            write!(
                f,
                " --reply-src {} --reply-port-src {}",
                endpoint.ip(),
                endpoint.port()
            )?;
        }
        Ok(())
    }
}

/// The flows that the move from `old` to `new` leaves stale, for protocols whose flows never
/// end by themselves (UDP, SCTP):
/// - an entry point that lost an endpoint: the flows DNATed to that endpoint;
/// - an entry point with endpoints before and none now (its Service or port is gone, or has no
///   endpoint left): all its flows;
/// - an entry point with endpoints now and none before: all its flows, which were rejected or
///   went nowhere (a flow that started before the rule has no DNAT, and would never get one).
pub fn stale_flows(old: &Desired, new: &Desired) -> BTreeSet<StaleFlows> {
    let mut out = BTreeSet::new();
    for family in Family::ALL {
        let (old, new) = (old.family(family), new.family(family));
        let whole = |entry: &EntryPoint| StaleFlows {
            entry: *entry,
            endpoint: None,
        };
        for entry in old.service_ips.keys().filter(|e| never_ends(e.protocol)) {
            if new.service_ips.contains_key(entry) {
                let now = endpoints(new, entry);
                out.extend(endpoints(old, entry).difference(&now).map(|endpoint| StaleFlows {
                    entry: *entry,
                    endpoint: Some(*endpoint),
                }));
            } else {
                out.insert(whole(entry));
            }
        }
        let started = new
            .service_ips
            .keys()
            .filter(|e| never_ends(e.protocol) && !old.service_ips.contains_key(e));
        out.extend(started.map(whole));
    }
    out
}

fn never_ends(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Udp | Protocol::Sctp)
}

fn endpoints(state: &FamilyState, entry: &EntryPoint) -> BTreeSet<SocketAddr> {
    state
        .endpoints
        .range((*entry, 0)..=(*entry, u32::MAX))
        .map(|(_, addr)| *addr)
        .collect()
}

/// The command that runs conntrack: `conntrack` from PATH by default; tests run it inside a
/// network namespace, whose conntrack table is its own.
#[derive(Clone, Debug)]
pub struct ConntrackCommand {
    pub program: PathBuf,
    /// Arguments before conntrack's own, e.g. `netns exec NAME conntrack` with `ip` as the
    /// program.
    pub args_prefix: Vec<String>,
}

impl Default for ConntrackCommand {
    fn default() -> Self {
        Self {
            program: PathBuf::from("conntrack"),
            args_prefix: Vec::new(),
        }
    }
}

impl ConntrackCommand {
    /// `conntrack` run inside the network namespace `netns` through `ip netns exec`.
    pub fn in_netns(netns: &str) -> Self {
        Self {
            program: PathBuf::from("ip"),
            args_prefix: ["netns", "exec", netns, "conntrack"].map(String::from).to_vec(),
        }
    }

    /// Deletes `flows` with one `conntrack -R -` run. A target that matches nothing is not an
    /// error (`-R` goes on with the next line and exits 0); a failure to run, or a line
    /// conntrack refuses, is.
    pub async fn delete(&self, flows: &BTreeSet<StaleFlows>) -> Result<(), NftError> {
        if flows.is_empty() {
            return Ok(());
        }
        let script: String = flows.iter().map(|flow| format!("{flow}\n")).collect();
        run_tool(&self.program, &self.args_prefix, &["-R", "-"], Some(&script))
            .await
            .map(drop)
    }
}

/// Runs the cleanup after each sync and keeps count of its failures. A failure never fails the
/// sync: the rules are right, and the stale flows only last until conntrack times them out.
#[derive(Debug)]
pub struct Cleanup {
    command: ConntrackCommand,
    failures: u64,
}

impl Cleanup {
    pub fn new(command: ConntrackCommand) -> Self {
        Self { command, failures: 0 }
    }

    /// Deletes `flows`, logging how it went.
    pub async fn run(&mut self, flows: &BTreeSet<StaleFlows>) {
        if flows.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        match self.command.delete(flows).await {
            Ok(()) => info!(
                targets = flows.len(),
                duration = ?started.elapsed(),
                "conntrack: deleted the flows of removed endpoints"
            ),
            Err(error) => {
                self.failures += 1;
                warn!(
                    %error,
                    failures = self.failures,
                    "conntrack cleanup failed; stale UDP/SCTP flows last until they time out"
                );
            }
        }
    }

    /// Cleanups that failed since the start.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

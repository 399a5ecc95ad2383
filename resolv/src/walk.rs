//! The queries a C library sends for one `getaddrinfo(name)` with a given resolv.conf, and when
//! it stops. This is why a Pod's lookup of `api.example.com` costs several round trips: with
//! `ndots:5` every search domain is tried first, twice (A and AAAA).
//!
//! glibc (`resolv/res_query.c`, `__res_context_search`): a name with a trailing dot is asked
//! as is, alone. With at least `ndots` dots it is asked as is first, then with each search
//! domain; with fewer, the search domains come first and the name as is last. The walk goes on
//! after NXDOMAIN, NODATA and SERVFAIL, and stops on any other error or the first answer.
//!
//! musl (`src/network/lookup_name.c`, `name_from_dns_search`): a name with at least `ndots`
//! dots, or a trailing dot, is asked as is only, without search. Otherwise each search domain,
//! then the name as is. Only NXDOMAIN (for either A or AAAA) moves on; NODATA ends the lookup
//! with no address, SERVFAIL with EAI_AGAIN.

use std::{fmt, net::IpAddr};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, RecordType},
};

use crate::ResolvConf;

/// Which C library's rules to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Libc {
    Glibc,
    Musl,
}

/// The names tried for `name`, in order, fully qualified.
pub fn candidates(name: &str, conf: &ResolvConf, libc: Libc) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![format!("{absolute}.")];
    }
    let as_is = format!("{name}.");
    let searched = conf
        .searches
        .iter()
        .map(|d| format!("{name}.{}.", d.trim_end_matches('.')));
    let enough_dots = name.matches('.').count() >= conf.ndots();
    match (libc, enough_dots) {
        (Libc::Musl, true) => vec![as_is],
        (Libc::Glibc, true) => std::iter::once(as_is).chain(searched).collect(),
        (_, false) => searched.chain(std::iter::once(as_is)).collect(),
    }
}

/// One query of the walk and the server's answer.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub qtype: RecordType,
    pub outcome: Result<Reply, String>,
}

/// What a reply said, reduced to what decides the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub addresses: Vec<IpAddr>,
}

impl Reply {
    pub fn from_message(msg: &Message) -> Self {
        let addresses = msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        Self {
            rcode: msg.metadata.response_code,
            addresses,
        }
    }
}

/// Asks a DNS server one question; implemented over sockets by the caller.
pub trait Ask {
    fn ask(&mut self, name: &Name, qtype: RecordType) -> impl Future<Output = Result<Message, String>>;
}

/// The whole walk: every query sent, and how the lookup ended.
#[derive(Debug)]
pub struct Walk {
    pub steps: Vec<Step>,
    pub result: Result<Vec<IpAddr>, String>,
}

/// What one candidate name's A and AAAA replies mean for the walk.
enum Next {
    Found(Vec<IpAddr>),
    Continue,
    Stop(String),
}

/// Walks the search list for `name` as `libc` would, asking A and AAAA for each candidate.
pub async fn walk(name: &str, conf: &ResolvConf, libc: Libc, server: &mut impl Ask) -> Walk {
    let mut steps = Vec::new();
    for candidate in candidates(name, conf, libc) {
        let Ok(qname) = Name::from_ascii(&candidate) else {
            return Walk {
                steps,
                result: Err(format!("`{candidate}` is not a valid name")),
            };
        };
        let mut replies = Vec::new();
        for qtype in [RecordType::A, RecordType::AAAA] {
            let outcome = server.ask(&qname, qtype).await.map(|m| Reply::from_message(&m));
            replies.push(outcome.clone());
            steps.push(Step {
                name: candidate.clone(),
                qtype,
                outcome,
            });
        }
        match judge(libc, &replies) {
            Next::Found(addresses) => {
                return Walk {
                    steps,
                    result: Ok(addresses),
                };
            }
            Next::Continue => {}
            Next::Stop(why) => {
                return Walk {
                    steps,
                    result: Err(why),
                };
            }
        }
    }
    Walk {
        steps,
        result: Err("no such name (every candidate NXDOMAIN or without data)".into()),
    }
}

fn judge(libc: Libc, replies: &[Result<Reply, String>]) -> Next {
    let addresses: Vec<IpAddr> = replies
        .iter()
        .flatten()
        .flat_map(|r| r.addresses.iter().copied())
        .collect();
    let rcodes: Vec<Option<ResponseCode>> =
        replies.iter().map(|r| r.as_ref().ok().map(|r| r.rcode)).collect();
    let any = |code: ResponseCode| rcodes.contains(&Some(code));
    match libc {
        Libc::Glibc if !addresses.is_empty() => Next::Found(addresses),
        Libc::Glibc => {
            let walks_on = rcodes.iter().all(|r| {
                matches!(
                    r,
                    Some(ResponseCode::NXDomain | ResponseCode::NoError | ResponseCode::ServFail)
                )
            });
            if walks_on {
                Next::Continue
            } else {
                Next::Stop("no usable answer (timeout or refused): EAI_AGAIN/EAI_FAIL".into())
            }
        }
        // musl drops the other family's answer when either one is NXDOMAIN.
        Libc::Musl if any(ResponseCode::NXDomain) => Next::Continue,
        Libc::Musl if rcodes.iter().any(Option::is_none) || any(ResponseCode::ServFail) => {
            Next::Stop("EAI_AGAIN: a query timed out or got SERVFAIL".into())
        }
        // musl's resolver drops REFUSED (and other error) replies and waits for a better one.
        Libc::Musl if rcodes.iter().any(|r| *r != Some(ResponseCode::NoError)) => {
            Next::Stop("EAI_AGAIN: musl ignores the error reply and waits out its timeout".into())
        }
        Libc::Musl if addresses.is_empty() => {
            Next::Stop("EAI_NODATA: the name exists without addresses".into())
        }
        Libc::Musl => Next::Found(addresses),
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {}  ", self.qtype.to_string(), self.name)?;
        match &self.outcome {
            Ok(reply) if reply.addresses.is_empty() && reply.rcode == ResponseCode::NoError => {
                write!(f, "NOERROR (no data)")
            }
            Ok(reply) => {
                // `NXDomain` -> `NXDOMAIN`, the spelling of dig and of every DNS text.
                let rcode = format!("{:?}", reply.rcode).to_uppercase();
                let addrs: Vec<String> = reply.addresses.iter().map(IpAddr::to_string).collect();
                write!(f, "{rcode} {}", addrs.join(" "))
            }
            Err(e) => write!(f, "no answer: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;

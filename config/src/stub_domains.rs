//! `stub-domains`: resolvers for the names under particular domains, in place of `upstreams`
//! (kube-dns `stubDomains`, a CoreDNS `forward example.corp ...` block). In the file a mapping,
//! `example.corp: [10.0.0.53, 10.0.0.54:5353]`; as a flag one domain per use,
//! `--stub-domains example.corp=10.0.0.53,10.0.0.54:5353`.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Deserializer, Serializer};

use crate::{addrs, types::StubDomain, zones};

const FLAG_ALLOWED: &str = "DOMAIN=IP[:PORT],..., e.g. example.corp=10.0.0.53,10.0.0.54:5353";

/// One `stub-domains` entry as given, not checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubDomainSetting {
    pub domain: String,
    pub upstreams: Vec<String>,
}

impl StubDomainSetting {
    /// The flag form, `DOMAIN=IP[:PORT],...`.
    pub(crate) fn from_flag(value: &str) -> Result<Self, String> {
        let (domain, upstreams) = value
            .split_once('=')
            .ok_or_else(|| format!("{value:?} has no `=`; allowed {FLAG_ALLOWED}"))?;
        Ok(Self {
            domain: domain.to_owned(),
            upstreams: upstreams.split(',').map(str::to_owned).collect(),
        })
    }
}

/// The file form: a mapping from domain to its list of resolvers.
pub(crate) mod as_map {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Vec<StubDomainSetting>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(list) => serializer.collect_map(list.iter().map(|s| (&s.domain, &s.upstreams))),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<StubDomainSetting>>, D::Error> {
        let map = Option::<BTreeMap<String, Vec<String>>>::deserialize(deserializer)?;
        Ok(map.map(|map| {
            map.into_iter()
                .map(|(domain, upstreams)| StubDomainSetting { domain, upstreams })
                .collect()
        }))
    }
}

/// The stub domains `given`, checked: each a domain (or a CIDR standing for its reverse zone)
/// outside the forward zones svcnet serves, with at least one resolver that is not svcnet
/// itself. Returns the good ones and a message for each problem.
pub(crate) fn validate(
    given: &[StubDomainSetting],
    served: &[String],
    listen: &[SocketAddr],
) -> (Vec<StubDomain>, Vec<String>) {
    let mut stubs: Vec<StubDomain> = Vec::new();
    let mut errors = Vec::new();
    for setting in given {
        let entry = setting.domain.trim();
        let domain = match zones::zone(entry) {
            Ok(domain) => domain,
            Err(message) => {
                errors.push(message);
                continue;
            }
        };
        // Reverse zones fall through to the upstreams for what the cluster does not know
        // (kubeadm's `fallthrough in-addr.arpa ip6.arpa`); forward zones never do, so a stub
        // domain inside one would never be asked.
        let inside = |zone: &&String| !zones::is_reverse(zone) && zones::is_within(&domain, zone);
        if let Some(zone) = served.iter().find(inside) {
            errors.push(format!(
                "{entry:?} is inside {zone}, which svcnet answers itself; allowed domains outside \
                 the served zones, or reverse zones"
            ));
            continue;
        }
        if stubs.iter().any(|s| s.domain == domain) {
            errors.push(format!("{entry:?} is given twice; allowed each domain once"));
            continue;
        }
        let mut upstreams = Vec::new();
        for upstream in setting
            .upstreams
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            match addrs::forward_target(upstream, listen) {
                Ok(addr) if !upstreams.contains(&addr) => upstreams.push(addr),
                Ok(_) => {}
                Err(message) => errors.push(format!("{entry:?}: {message}")),
            }
        }
        if setting.upstreams.iter().all(|u| u.trim().is_empty()) {
            errors.push(format!(
                "{entry:?} has no resolvers; allowed one or more {}",
                addrs::UPSTREAM_ALLOWED
            ));
        }
        stubs.push(StubDomain { domain, upstreams });
    }
    (stubs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(domain: &str, upstreams: &[&str]) -> StubDomainSetting {
        StubDomainSetting {
            domain: domain.to_owned(),
            upstreams: upstreams.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    fn served() -> Vec<String> {
        vec!["cluster.local.".into(), "in-addr.arpa.".into()]
    }

    #[test]
    fn flag_form_splits_domain_and_resolvers() {
        assert_eq!(
            StubDomainSetting::from_flag("example.corp=10.0.0.53,10.0.0.54:5353").unwrap(),
            setting("example.corp", &["10.0.0.53", "10.0.0.54:5353"])
        );
        let err = StubDomainSetting::from_flag("example.corp").unwrap_err();
        assert!(err.contains("has no `=`") && err.contains("DOMAIN=IP"), "{err}");
    }

    #[test]
    fn domains_become_fqdns_and_cidrs_reverse_zones() {
        let given = [
            setting("Example.Corp", &["10.0.0.53", "10.0.0.54:5353"]),
            setting("10.0.0.0/8", &["10.0.0.53"]),
        ];
        let (stubs, errors) = validate(&given, &served(), &[]);
        assert_eq!(errors, Vec::<String>::new());
        let listed: Vec<(&str, usize)> = stubs.iter().map(|s| (&*s.domain, s.upstreams.len())).collect();
        assert_eq!(listed, [("example.corp.", 2), ("10.in-addr.arpa.", 1)]);
        assert_eq!(stubs[0].upstreams[1], "10.0.0.54:5353".parse().unwrap());
    }

    #[test]
    fn each_problem_is_reported() {
        let listen: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let given = [
            setting("svc.cluster.local", &["10.0.0.53"]),
            setting("bad..name", &["10.0.0.53"]),
            setting("example.corp", &[]),
            setting("example.org", &["dns.google", "127.0.0.1:5353"]),
            setting("EXAMPLE.corp.", &["10.0.0.53"]),
        ];
        let (_, errors) = validate(&given, &served(), &[listen]);
        let expect = [
            "\"svc.cluster.local\" is inside cluster.local.",
            "\"bad..name\" is not a domain name",
            "\"example.corp\" has no resolvers",
            "\"example.org\": \"dns.google\" is not an address",
            "\"example.org\": \"127.0.0.1:5353\" is svcnet's own",
            "\"EXAMPLE.corp.\" is given twice",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expect) {
            assert!(error.starts_with(start), "{error:?} should start with {start:?}");
        }
    }
}

//! The cluster zone as a pure function: a snapshot and a question in, an answer out.
//!
//! The grammar and the answers follow the Kubernetes DNS specification and CoreDNS's
//! kubernetes plugin (parse.go, handler.go): labels below the zone are read outermost first,
//! `svc|pod`, then the namespace, then the service, then at most an endpoint label or a
//! `_port._proto` pair. Which negative answer a name gets matters as much as the positive
//! ones: NXDOMAIN makes a stub resolver try the next search domain, NODATA stops it (musl stops
//! on anything that is not NXDOMAIN), so the matrix here is CoreDNS's exactly.

use std::{collections::HashSet, net::IpAddr};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT},
    },
};
use svcnet_cluster::{
    ServiceEntry, Snapshot,
    model::{Endpoint, Protocol, ServiceAddressing},
};
use svcnet_config::{DnsConfig, PodsMode};

use crate::{
    names::{endpoint_label, parse_dashed, parse_reverse},
    zone::{Located, Zones},
};

/// The schema version of the Kubernetes DNS specification implemented here.
const SCHEMA_VERSION: &str = "1.1.0";
/// CoreDNS serves `dns-version` with a fixed TTL of 8 hours.
const SCHEMA_VERSION_TTL: u32 = 28_800;
/// ExternalName chains inside the zone are followed this far (CoreDNS's limit).
const MAX_CNAME_CHAIN: usize = 10;

/// The options of the cluster zone (CoreDNS kubernetes-plugin options).
#[derive(Clone, Debug)]
pub struct ZoneOptions {
    pub ttl: u32,
    pub pods: PodsMode,
    pub endpoint_pod_names: bool,
    /// Namespaces visible to DNS; empty means all.
    pub namespaces: HashSet<String>,
    pub ignore_empty_service: bool,
    pub noendpoints: bool,
    /// Addresses this server answers on, named in the apex NS glue.
    pub local_ips: Vec<IpAddr>,
}

impl ZoneOptions {
    pub fn from_config(config: &DnsConfig) -> Self {
        Self {
            ttl: config.ttl,
            pods: config.pods,
            endpoint_pod_names: config.endpoint_pod_names,
            namespaces: config.namespaces.iter().cloned().collect(),
            ignore_empty_service: config.ignore_empty_service,
            noendpoints: config.noendpoints,
            local_ips: config
                .listen
                .iter()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .collect(),
        }
    }
}

/// What the cluster zone says about one question.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, present on every negative answer (RFC 2308).
    pub soa: Option<Record>,
    /// An ExternalName target outside the served zones: the caller asks an upstream for it and
    /// appends what it gets after the CNAME already in `answers`.
    pub chase: Option<Name>,
}

/// The outcome of a lookup before it is dressed as a DNS answer.
enum Found {
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no records of the asked type (NODATA).
    NoData,
    NxDomain,
    /// An ExternalName: its CNAME, and the target left to resolve.
    Alias {
        cname: Box<Record>,
        target: Name,
    },
}

impl Found {
    fn records(answers: Vec<Record>) -> Self {
        if answers.is_empty() {
            Found::NoData
        } else {
            Found::Records {
                answers,
                additionals: Vec::new(),
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterZone {
    zones: Zones,
    options: ZoneOptions,
}

/// One lookup: the question, the snapshot and where the name sits.
struct Query<'a> {
    snap: &'a Snapshot,
    qname: &'a Name,
    qtype: RecordType,
    located: &'a Located<'a>,
}

impl ClusterZone {
    pub fn new(zones: Zones, options: ZoneOptions) -> Self {
        Self { zones, options }
    }

    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// The TTL of the zone's records.
    pub fn ttl(&self) -> u32 {
        self.options.ttl
    }

    /// Answers `qname`/`qtype` from `snap`, or `None` when the name is in no served zone.
    pub fn lookup(&self, snap: &Snapshot, qname: &Name, qtype: RecordType) -> Option<Answer> {
        self.zones.locate(qname)?;
        let mut answer = Answer::default();
        let mut owner = qname.clone();
        // ExternalName chains inside the zone are answered here, each CNAME then its target.
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(located) = self.zones.locate(&owner) else {
                answer.chase = Some(owner);
                return Some(answer);
            };
            let query = Query {
                snap,
                qname: &owner,
                qtype,
                located: &located,
            };
            match self.find(&query) {
                Found::Alias { cname, target } => {
                    answer.answers.push(*cname);
                    if qtype == RecordType::CNAME {
                        return Some(answer);
                    }
                    owner = target;
                }
                Found::Records { answers, additionals } => {
                    answer.answers.extend(answers);
                    answer.additionals.extend(additionals);
                    return Some(answer);
                }
                // A dangling alias still answers with its CNAME (and no error), as CoreDNS does.
                Found::NoData | Found::NxDomain if !answer.answers.is_empty() => return Some(answer),
                Found::NoData => return Some(self.negative(snap, &located, ResponseCode::NoError)),
                Found::NxDomain => {
                    // Before the first sync an absent name may simply not have arrived yet:
                    // SERVFAIL makes resolvers retry instead of caching a wrong NXDOMAIN.
                    let rcode = if snap.synced {
                        ResponseCode::NXDomain
                    } else {
                        ResponseCode::ServFail
                    };
                    return Some(self.negative(snap, &located, rcode));
                }
            }
        }
        Some(answer)
    }

    fn negative(&self, snap: &Snapshot, located: &Located<'_>, rcode: ResponseCode) -> Answer {
        Answer {
            rcode,
            soa: Some(self.soa(snap, &located.zone_as_written)),
            ..Answer::default()
        }
    }

    fn soa(&self, snap: &Snapshot, zone: &Name) -> Record {
        let ttl = self.options.ttl;
        let soa = SOA::new(
            prefixed("ns.dns", zone),
            prefixed("hostmaster", zone),
            snap.serial,
            7200,
            1800,
            86400,
            ttl,
        );
        Record::from_rdata(zone.clone(), ttl.min(300), RData::SOA(soa))
    }

    fn find(&self, q: &Query<'_>) -> Found {
        let Some(labels) = &q.located.labels else {
            return Found::NxDomain;
        };
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if labels.is_empty() {
            return self.apex(q);
        }
        if q.located.zone.reverse {
            return self.reverse(q);
        }
        match labels.as_slice() {
            ["dns-version"] => match q.qtype {
                RecordType::TXT => Found::records(vec![Record::from_rdata(
                    q.qname.clone(),
                    SCHEMA_VERSION_TTL,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
                )]),
                _ => Found::NoData,
            },
            ["svc"] | ["pod"] => Found::NoData,
            ["svc" | "pod", ns] => {
                if self.namespace_visible(q.snap, ns) {
                    Found::NoData
                } else {
                    Found::NxDomain
                }
            }
            ["svc", ns, rest @ ..] if self.namespace_visible(q.snap, ns) => self.service_name(q, ns, rest),
            ["pod", ns, ip] if self.namespace_visible(q.snap, ns) => self.pod(q, ns, ip),
            _ => Found::NxDomain,
        }
    }

    fn namespace_visible(&self, snap: &Snapshot, ns: &str) -> bool {
        (self.options.namespaces.is_empty() || self.options.namespaces.contains(ns))
            && snap.namespace(ns).is_some()
    }

    /// The apex: SOA and NS; every other type is NODATA.
    fn apex(&self, q: &Query<'_>) -> Found {
        match q.qtype {
            RecordType::SOA => Found::records(vec![self.soa(q.snap, q.qname)]),
            RecordType::NS => self.ns(q),
            _ => Found::NoData,
        }
    }

    /// NS at the apex. Like CoreDNS, svcnet names itself after the Service whose endpoints hold
    /// one of its own addresses (normally `kube-dns`), else `ns.dns.<zone>`, with glue.
    fn ns(&self, q: &Query<'_>) -> Found {
        let ttl = self.options.ttl;
        let zone = &q.located.zone_as_written;
        let mut glue: Vec<(Name, IpAddr)> = Vec::new();
        for &local in &self.options.local_ips {
            for ep in q.snap.endpoints_by_ip(local) {
                let slice = &ep.slice;
                let Some(entry) = q.snap.service(&slice.key.namespace, &slice.service_name) else {
                    continue;
                };
                let svc_name = service_name(&entry.service.key.name, &entry.service.key.namespace, zone);
                match &entry.service.addressing {
                    ServiceAddressing::ClusterIp(ips) => {
                        glue.extend(ips.iter().map(|ip| (svc_name.clone(), *ip)))
                    }
                    ServiceAddressing::Headless => {
                        let label = endpoint_label(ep.endpoint(), local, self.options.endpoint_pod_names);
                        glue.push((prefixed(&label, &svc_name), local));
                    }
                    ServiceAddressing::ExternalName(_) => {}
                }
            }
        }
        if glue.is_empty() {
            let name = prefixed("ns.dns", zone);
            glue.extend(self.options.local_ips.iter().map(|ip| (name.clone(), *ip)));
        }
        dedup_by_key(&mut glue, |(n, ip)| (n.to_lowercase(), *ip));
        let mut targets: Vec<&Name> = glue.iter().map(|(n, _)| n).collect();
        dedup_by_key(&mut targets, |n| n.to_lowercase());
        let answers = targets
            .into_iter()
            .map(|n| Record::from_rdata(q.qname.clone(), ttl, RData::NS(NS(n.clone()))))
            .collect();
        let additionals = glue
            .into_iter()
            .map(|(n, ip)| address_record(n, ttl, ip))
            .collect();
        Found::Records { answers, additionals }
    }

    /// PTR for ClusterIPs (one answer, the Service) and endpoint addresses (every Service that
    /// has an endpoint with that address).
    fn reverse(&self, q: &Query<'_>) -> Found {
        let Some(ip) = parse_reverse(q.qname) else {
            return Found::NxDomain;
        };
        let Some(primary) = self.zones.primary() else {
            return Found::NxDomain;
        };
        let zone = &primary.name;
        let mut targets: Vec<Name> = Vec::new();
        if let Some(svc) = q.snap.service_by_cluster_ip(ip)
            && self.namespace_visible(q.snap, &svc.key.namespace)
        {
            targets.push(service_name(&svc.key.name, &svc.key.namespace, zone));
        }
        if targets.is_empty() && !self.options.noendpoints {
            for ep in q.snap.endpoints_by_ip(ip) {
                let endpoint = ep.endpoint();
                if !endpoint.ready || !self.namespace_visible(q.snap, &ep.slice.key.namespace) {
                    continue;
                }
                let svc = service_name(&ep.slice.service_name, &ep.slice.key.namespace, zone);
                let label = endpoint_label(endpoint, ip, self.options.endpoint_pod_names);
                targets.push(prefixed(&label, &svc));
            }
            dedup_by_key(&mut targets, Name::to_lowercase);
        }
        if targets.is_empty() {
            return Found::NxDomain;
        }
        if q.qtype != RecordType::PTR {
            return Found::NoData;
        }
        let ttl = self.options.ttl;
        Found::records(
            targets
                .into_iter()
                .map(|t| Record::from_rdata(q.qname.clone(), ttl, RData::PTR(PTR(t))))
                .collect(),
        )
    }

    /// `<ip>.<ns>.pod.<zone>`.
    fn pod(&self, q: &Query<'_>, ns: &str, label: &str) -> Found {
        let Some(ip) = parse_dashed(label) else {
            return Found::NxDomain;
        };
        let exists = match self.options.pods {
            PodsMode::Disabled => false,
            PodsMode::Insecure => true,
            PodsMode::Verified => q
                .snap
                .pods_by_ip(ip)
                .iter()
                .any(|p| !p.terminating && &*p.key.namespace == ns),
        };
        if !exists {
            return Found::NxDomain;
        }
        Found::records(self.addresses_of_type(q.qname, q.qtype, [ip]))
    }

    /// Names under `<ns>.svc.<zone>`: `rest` is what follows the namespace, outermost first.
    fn service_name(&self, q: &Query<'_>, ns: &str, rest: &[&str]) -> Found {
        let Some((svc_label, below)) = rest.split_first() else {
            return Found::NxDomain;
        };
        let Some(entry) = q.snap.service(ns, svc_label) else {
            return Found::NxDomain;
        };
        let svc = &entry.service;
        if let ServiceAddressing::ExternalName(target) = &svc.addressing {
            // Nothing exists below an ExternalName, and it has no SRV records.
            return match (below, q.qtype) {
                ([], RecordType::SRV) => Found::NoData,
                ([], _) => self.alias(q, target),
                _ => Found::NxDomain,
            };
        }
        let headless = svc.addressing == ServiceAddressing::Headless;
        if headless && (self.options.noendpoints || ready_endpoints(entry).next().is_none()) {
            return Found::NxDomain;
        }
        if !headless && self.options.ignore_empty_service && ready_endpoints(entry).next().is_none() {
            return Found::NxDomain;
        }
        let svc_fqdn = service_name(&svc.key.name, &svc.key.namespace, &q.located.zone_as_written);
        match below {
            [] => self.service_records(q, entry, &svc_fqdn, None),
            [endpoint] => self.endpoint(q, entry, endpoint),
            [proto, port] => {
                let filter = PortFilter {
                    name: strip_underscore(port),
                    protocol: strip_underscore(proto),
                };
                self.service_records(q, entry, &svc_fqdn, Some(filter))
            }
            _ => Found::NxDomain,
        }
    }

    /// The records of a Service name, or of one of its `_port._proto` names.
    fn service_records(
        &self,
        q: &Query<'_>,
        entry: &ServiceEntry,
        svc_fqdn: &Name,
        filter: Option<PortFilter<'_>>,
    ) -> Found {
        let targets = self.srv_targets(entry, svc_fqdn, filter.as_ref());
        if filter.is_some() && targets.is_empty() {
            // No port by that name and protocol: the name does not exist.
            return Found::NxDomain;
        }
        match q.qtype {
            RecordType::SRV => self.srv(q.qname, targets),
            RecordType::A | RecordType::AAAA if filter.is_none() => {
                let addresses: Vec<IpAddr> = match &entry.service.addressing {
                    ServiceAddressing::ClusterIp(ips) => ips.clone(),
                    _ => ready_endpoints(entry)
                        .flat_map(|(_, ep)| ep.addresses.iter().copied())
                        .collect(),
                };
                let mut records = self.addresses_of_type(q.qname, q.qtype, addresses);
                dedup_by_key(&mut records, |r| r.data.clone());
                Found::records(records)
            }
            _ => Found::NoData,
        }
    }

    /// Every (target, port, address) an SRV answer for this Service would hold, before
    /// de-duplication: ClusterIP Services point at their own name, headless ones at each ready
    /// endpoint.
    fn srv_targets(
        &self,
        entry: &ServiceEntry,
        svc_fqdn: &Name,
        filter: Option<&PortFilter<'_>>,
    ) -> Vec<SrvTarget> {
        match &entry.service.addressing {
            ServiceAddressing::ClusterIp(ips) => {
                let ports = entry
                    .service
                    .ports
                    .iter()
                    .filter(|p| filter.is_none_or(|f| f.matches(p.name.as_deref(), p.protocol)));
                ports
                    .flat_map(|p| {
                        ips.iter().map(move |ip| SrvTarget {
                            target: svc_fqdn.clone(),
                            port: p.port,
                            address: *ip,
                        })
                    })
                    .collect()
            }
            _ => {
                let mut targets = Vec::new();
                for (slice, ep) in ready_endpoints(entry) {
                    let ports = slice
                        .ports
                        .iter()
                        .filter(|p| filter.is_none_or(|f| f.matches(p.name.as_deref(), p.protocol)))
                        .filter_map(|p| p.port);
                    for port in ports {
                        for &address in &ep.addresses {
                            let label = endpoint_label(ep, address, self.options.endpoint_pod_names);
                            targets.push(SrvTarget {
                                target: prefixed(&label, svc_fqdn),
                                port,
                                address,
                            });
                        }
                    }
                }
                targets
            }
        }
    }

    /// SRV answers with the targets' addresses as glue. The weight divides 100 by the number of
    /// entries before de-duplication, which is what CoreDNS computes.
    fn srv(&self, qname: &Name, targets: Vec<SrvTarget>) -> Found {
        if targets.is_empty() {
            return Found::NoData;
        }
        let ttl = self.options.ttl;
        let weight = u16::try_from(100 / targets.len()).unwrap_or(0);
        let mut answers: Vec<Record> = targets
            .iter()
            .map(|t| {
                Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, t.port, t.target.clone())),
                )
            })
            .collect();
        dedup_by_key(&mut answers, |r| r.data.clone());
        let mut additionals: Vec<Record> = targets
            .into_iter()
            .map(|t| address_record(t.target, ttl, t.address))
            .collect();
        dedup_by_key(&mut additionals, |r| (r.name.to_lowercase(), r.data.clone()));
        Found::Records { answers, additionals }
    }

    /// `<endpoint>.<svc>.<ns>.svc.<zone>`, for headless and ClusterIP Services alike.
    fn endpoint(&self, q: &Query<'_>, entry: &ServiceEntry, label: &str) -> Found {
        if self.options.noendpoints {
            return Found::NxDomain;
        }
        let pod_names = self.options.endpoint_pod_names;
        let addresses: Vec<IpAddr> = ready_endpoints(entry)
            .flat_map(|(_, ep)| ep.addresses.iter().map(move |a| (ep, *a)))
            .filter(|(ep, a)| endpoint_label(ep, *a, pod_names) == label)
            .map(|(_, a)| a)
            .collect();
        if addresses.is_empty() {
            return Found::NxDomain;
        }
        let mut records = self.addresses_of_type(q.qname, q.qtype, addresses);
        dedup_by_key(&mut records, |r| r.data.clone());
        Found::records(records)
    }

    /// An ExternalName's CNAME; the target is resolved by the caller.
    fn alias(&self, q: &Query<'_>, target: &str) -> Found {
        let Ok(target) = Name::from_ascii(format!("{target}.")) else {
            return Found::NxDomain;
        };
        // An address in place of a name makes no CNAME (CoreDNS answers NXDOMAIN).
        if target.to_ascii().trim_end_matches('.').parse::<IpAddr>().is_ok() {
            return Found::NxDomain;
        }
        let cname = Record::from_rdata(
            q.qname.clone(),
            self.options.ttl,
            RData::CNAME(CNAME(target.clone())),
        );
        Found::Alias {
            cname: Box::new(cname),
            target,
        }
    }

    /// A or AAAA records for those of `addresses` that match `qtype`'s family.
    fn addresses_of_type(
        &self,
        owner: &Name,
        qtype: RecordType,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Vec<Record> {
        addresses
            .into_iter()
            .filter(|ip| match qtype {
                RecordType::A => ip.is_ipv4(),
                RecordType::AAAA => ip.is_ipv6(),
                _ => false,
            })
            .map(|ip| address_record(owner.clone(), self.options.ttl, ip))
            .collect()
    }
}

struct SrvTarget {
    target: Name,
    port: u16,
    address: IpAddr,
}

/// The `_port._proto` labels of an SRV name, compared case-insensitively.
struct PortFilter<'a> {
    name: &'a str,
    protocol: &'a str,
}

impl PortFilter<'_> {
    fn matches(&self, name: Option<&str>, protocol: Protocol) -> bool {
        name.is_some_and(|n| n.eq_ignore_ascii_case(self.name))
            && protocol.as_str().eq_ignore_ascii_case(self.protocol)
    }
}

fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// Endpoints DNS publishes: `conditions.ready` not false (the EndpointSlice controller already
/// folds `publishNotReadyAddresses` into it).
fn ready_endpoints(
    entry: &ServiceEntry,
) -> impl Iterator<Item = (&svcnet_cluster::model::EndpointSlice, &Endpoint)> {
    entry.endpoints().filter(|(_, ep)| ep.ready)
}

fn service_name(name: &str, namespace: &str, zone: &Name) -> Name {
    prefixed(&format!("{name}.{namespace}.svc"), zone)
}

/// `labels.zone`. Labels come from API objects (valid DNS labels) or from this module.
fn prefixed(labels: &str, zone: &Name) -> Name {
    Name::from_ascii(labels)
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone())
}

fn address_record(owner: Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner, ttl, rdata)
}

/// Keeps the first of each run of equal keys, preserving order.
fn dedup_by_key<T, K: Eq + std::hash::Hash>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = HashSet::new();
    items.retain(|item| seen.insert(key(item)));
}

#[cfg(test)]
mod tests;

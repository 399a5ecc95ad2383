//! The hickory `RequestHandler`: turns requests into lookups over the current snapshot, or
//! into forwarded queries, and either into wire answers. Everything protocol-level lives here
//! (EDNS, flags, rcodes for questions nobody answers); everything about names lives in
//! [`crate::lookup`], everything about upstreams in [`crate::forward`].

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, Metadata, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::CNAME},
};
use hickory_server::{
    net::runtime::Time,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder},
};
use svcnet_cluster::Reader;
use tracing::debug;

use crate::{
    forward::ForwardError,
    live::Live,
    loadbalance::shuffle_addresses,
    lookup::Answer,
    loop_check::LoopDetector,
    metrics::{Plugin, Report, ServerMetrics},
    upstream::Transport,
};

/// The EDNS version svcnet speaks; a higher one gets BADVERS (RFC 6891 §6.1.3).
const EDNS_VERSION: u8 = 0;

/// The handler of one listening address; all of them share the live configuration (zone,
/// forwarder, search completion) and the loop detector, and each has its own metric labels
/// (CoreDNS's `server`).
pub struct Handler {
    /// Loaded once per query, so a reload never changes the rules halfway through one.
    pub live: Arc<ArcSwap<Live>>,
    pub snapshots: Reader,
    pub loops: Arc<LoopDetector>,
    pub metrics: ServerMetrics,
}

/// What the name one search candidate found holds, for a completed answer.
struct Completed {
    name: Name,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    truncated: bool,
    /// Answered from the cluster zone (authoritative) rather than by an upstream.
    cluster: bool,
}

/// One search candidate's outcome.
enum Candidate {
    /// NXDOMAIN: the walk goes on.
    Missing,
    /// Anything else that is an answer, NODATA included (CoreDNS): the walk ends here.
    Found(Completed),
    /// No usable answer (SERVFAIL, REFUSED, no upstream): the client is better off walking
    /// by itself, so the original question gets its plain answer.
    Failed,
}

impl Handler {
    /// The cluster zone's answer, or `None` when the question goes upstream: it is outside
    /// every served zone, or it is a name of a `fallthrough` zone the cluster does not know
    /// and an upstream can be asked (kubeadm's `fallthrough in-addr.arpa ip6.arpa`). Those are
    /// reverse zones only: the cluster domain's NXDOMAIN is final.
    fn cluster_answer(&self, live: &Live, qname: &Name, qtype: RecordType) -> Option<Answer> {
        // The guard is dropped at the end of the statement: a snapshot is never held across I/O.
        let answer = live.zone.lookup(&self.snapshots.load(), qname, qtype)?;
        let falls_through = answer.rcode == ResponseCode::NXDomain
            && live.fallthrough.iter().any(|zone| zone.zone_of(qname))
            && live.forwarder.forwards(qname);
        (!falls_through).then_some(answer)
    }

    /// Asks `question` through the forwarder (and its cache) on behalf of `request`: with its
    /// header, EDNS and transport.
    async fn forward(
        &self,
        live: &Live,
        request: &Request,
        question: Query,
    ) -> Result<(Message, Plugin), ForwardError> {
        live.forwarder
            .resolve(
                question,
                &request.metadata,
                request.edns.as_ref(),
                transport(request),
                &self.metrics,
            )
            .await
    }

    /// Resolves an ExternalName target outside the served zones upstream and appends the reply's
    /// answers after the CNAME. Returns whether that reply was truncated: CoreDNS copies TC so
    /// that the client retries over TCP.
    async fn chase(
        &self,
        live: &Live,
        request: &Request,
        target: Name,
        qtype: RecordType,
        answers: &mut Vec<Record>,
    ) -> bool {
        let resolved = self.forward(live, request, Query::query(target, qtype)).await;
        match resolved {
            Ok((reply, _)) => {
                answers.extend(reply.answers);
                reply.metadata.truncation
            }
            Err(error) => {
                debug!(%error, "ExternalName target not resolved upstream");
                false
            }
        }
    }

    /// Search completion (CoreDNS `autopath`): when `request` comes from a Pod of this node and
    /// asks a name under its first search domain, the first of its search candidates that is not
    /// NXDOMAIN. `None` means the question gets its plain answer: not completed, the asked name
    /// exists itself, every candidate is NXDOMAIN, or one failed.
    async fn complete(
        &self,
        live: &Live,
        request: &Request,
        qname: &Name,
        qtype: RecordType,
    ) -> Option<Completed> {
        let autopath = live.autopath.as_ref()?;
        let candidates = autopath.candidates(&self.snapshots.load(), request.src().ip(), qname)?;
        let (asked, others) = candidates.split_first()?;
        // The asked name itself is in the cluster zone: if it exists, the plain answer is it.
        if self.cluster_answer(live, asked, qtype)?.rcode != ResponseCode::NXDomain {
            return None;
        }
        for name in others {
            match self.candidate(live, request, name, qtype).await {
                Candidate::Missing => {}
                Candidate::Found(completed) => return Some(completed),
                Candidate::Failed => return None,
            }
        }
        None
    }

    /// Resolves one search candidate, from the cluster zone or through the forwarder (and its
    /// cache), as a client asking it would.
    async fn candidate(&self, live: &Live, request: &Request, name: &Name, qtype: RecordType) -> Candidate {
        if let Some(mut answer) = self.cluster_answer(live, name, qtype) {
            return match answer.rcode {
                ResponseCode::NXDomain => Candidate::Missing,
                ResponseCode::NoError => {
                    let mut truncated = false;
                    if let Some(target) = answer.chase.take() {
                        truncated = self
                            .chase(live, request, target, qtype, &mut answer.answers)
                            .await;
                    }
                    Candidate::Found(Completed {
                        name: name.clone(),
                        answers: answer.answers,
                        authorities: answer.soa.into_iter().collect(),
                        additionals: answer.additionals,
                        truncated,
                        cluster: true,
                    })
                }
                _ => Candidate::Failed,
            };
        }
        let resolved = self
            .forward(live, request, Query::query(name.clone(), qtype))
            .await;
        match resolved {
            Ok((reply, _)) => match reply.metadata.response_code {
                ResponseCode::NXDomain => Candidate::Missing,
                ResponseCode::NoError => Candidate::Found(Completed {
                    name: name.clone(),
                    answers: reply.answers,
                    authorities: reply.authorities,
                    additionals: reply.additionals,
                    truncated: reply.metadata.truncation,
                    cluster: false,
                }),
                _ => Candidate::Failed,
            },
            Err(error) => {
                debug!(%error, %name, "search candidate not resolved");
                Candidate::Failed
            }
        }
    }

    /// Answers `request`; returns what was sent and who answered (CoreDNS's `plugin` label).
    async fn answer<R: ResponseHandler>(&self, request: &Request, mut response: R) -> (ResponseInfo, Plugin) {
        let live = self.live.load_full();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let client_edns = response_edns(request, None);
        if let Some(edns) = &client_edns {
            builder.edns(edns);
        }
        let rcode_only = |rcode| {
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.response_code = rcode;
            meta.authoritative = rcode != ResponseCode::Refused;
            meta
        };
        let bad_version = request.edns.as_ref().is_some_and(|e| e.version() > EDNS_VERSION);
        let info = match request.request_info() {
            Err(_) => Err(ResponseCode::FormErr),
            Ok(_) if bad_version => Err(ResponseCode::BADVERS),
            Ok(_) if request.metadata.op_code != OpCode::Query => Err(ResponseCode::NotImp),
            Ok(info) => Ok(info),
        };
        let info = match info {
            Ok(info) => info,
            Err(rcode) => {
                let msg = builder.build(rcode_only(rcode), [], [], [], []);
                return (send(&mut response, msg, request).await, Plugin::Server);
            }
        };

        let question = info.query.original();
        let (qname, qtype) = (question.name(), question.query_type());
        self.loops.observe(qname);
        // Zone transfers need a transfer policy svcnet does not have (CoreDNS: REFUSED too).
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            let msg = builder.build(rcode_only(ResponseCode::Refused), [], [], [], []);
            return (send(&mut response, msg, request).await, Plugin::Server);
        }

        if let Some(mut found) = self.complete(&live, request, qname, qtype).await {
            // The CNAME lives as long as what it leads to; a NODATA as long as the zone says.
            let ttl = found.answers.first().map_or(live.zone.ttl(), |r| r.ttl);
            let cname = Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(found.name)));
            found.answers.insert(0, cname);
            shuffle_addresses(&mut found.answers);
            let mut meta = rcode_only(ResponseCode::NoError);
            meta.authoritative = found.cluster;
            meta.recursion_available = !found.cluster;
            meta.truncation = found.truncated;
            self.metrics.autopath_success();
            let msg = builder.build(
                meta,
                found.answers.iter(),
                [],
                found.authorities.iter(),
                found.additionals.iter(),
            );
            return (send(&mut response, msg, request).await, Plugin::Autopath);
        }

        if let Some(mut answer) = self.cluster_answer(&live, qname, qtype) {
            let mut meta = rcode_only(answer.rcode);
            if let Some(target) = answer.chase.take() {
                meta.truncation = self
                    .chase(&live, request, target, qtype, &mut answer.answers)
                    .await;
            }
            shuffle_addresses(&mut answer.answers);
            let soa: Vec<&Record> = answer.soa.iter().collect();
            let msg = builder.build(meta, answer.answers.iter(), [], soa, answer.additionals.iter());
            return (send(&mut response, msg, request).await, Plugin::Kubernetes);
        }

        let resolved = self.forward(&live, request, question.clone()).await;
        let (mut reply, plugin) = match resolved {
            Ok(resolved) => resolved,
            Err(error) => {
                debug!(%error, name = %qname, "not forwarded");
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = match error {
                    ForwardError::NoUpstreams(_) | ForwardError::Busy(_) => ResponseCode::Refused,
                    ForwardError::Upstream(_) => ResponseCode::ServFail,
                };
                meta.recursion_available = true;
                let msg = builder.build(meta, [], [], [], []);
                return (send(&mut response, msg, request).await, Plugin::Forward);
            }
        };
        shuffle_addresses(&mut reply.answers);
        let upstream_edns = response_edns(request, reply.edns.as_ref());
        if let Some(edns) = &upstream_edns {
            builder.edns(edns);
        }
        let msg = builder.build(
            forwarded_metadata(&request.metadata, &reply.metadata),
            reply.answers.iter(),
            reply.authorities.iter(),
            [],
            reply.additionals.iter(),
        );
        (send(&mut response, msg, request).await, plugin)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let (info, plugin) = self.answer(request, response).await;
        let question = request.request_info().ok().map(|info| info.query.original());
        self.metrics.report(&Report {
            qname: question.map(Query::name),
            qtype: question.map(Query::query_type),
            datagram: request.protocol().is_datagram(),
            ipv4: request.src().is_ipv4(),
            request_len: request.as_slice().len(),
            rcode: info.response_code,
            plugin,
            started,
        });
        info
    }
}

/// Upstream queries travel as the client's did: UDP for UDP, TCP for any stream.
fn transport(request: &Request) -> Transport {
    if request.protocol().is_datagram() {
        Transport::Udp
    } else {
        Transport::Tcp
    }
}

/// The header of a forwarded answer: the client's ID, opcode, RD and CD; the upstream's rcode
/// and its AA, TC, RA and AD flags.
fn forwarded_metadata(request: &Metadata, reply: &Metadata) -> Metadata {
    let mut meta = Metadata::response_from_request(request);
    meta.response_code = reply.response_code;
    meta.authoritative = reply.authoritative;
    meta.truncation = reply.truncation;
    meta.recursion_available = reply.recursion_available;
    meta.authentic_data = reply.authentic_data;
    meta
}

/// The reply's OPT record, present only if the client sent one (RFC 6891 §7). It carries the
/// client's payload size, because without it hickory caps UDP answers at 512 bytes, and, for a
/// forwarded answer, the upstream's DO bit and options (extended errors, say).
fn response_edns(request: &Request, upstream: Option<&Edns>) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = upstream.cloned().unwrap_or_default();
    edns.set_max_payload(asked.max_payload().max(512));
    edns.set_version(EDNS_VERSION);
    Some(edns)
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    let meta = *msg.metadata();
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, src = %request.src(), "response not sent");
            ResponseInfo::from(hickory_proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            })
        }
    }
}

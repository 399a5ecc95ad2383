//! The hickory `RequestHandler`: turns requests into lookups over the current snapshot and
//! lookups into wire answers. Everything protocol-level lives here (EDNS, flags, rcodes for
//! questions the zone does not answer); everything about names lives in [`crate::lookup`].

use std::sync::Arc;

use hickory_proto::{
    op::{Edns, Metadata, OpCode, ResponseCode},
    rr::{Record, RecordType},
};
use hickory_server::{
    net::runtime::Time,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use svcnet_cluster::Reader;
use tracing::debug;

use crate::{
    lookup::{Answer, ClusterZone},
    upstream::Upstreams,
};

/// The EDNS version svcnet speaks; a higher one gets BADVERS (RFC 6891 §6.1.3).
const EDNS_VERSION: u8 = 0;

pub struct Handler {
    zone: ClusterZone,
    snapshots: Reader,
    upstreams: Arc<Upstreams>,
}

impl Handler {
    pub fn new(zone: ClusterZone, snapshots: Reader, upstreams: Arc<Upstreams>) -> Self {
        Self {
            zone,
            snapshots,
            upstreams,
        }
    }

    /// Looks the question up in the cluster zone, chasing an ExternalName target upstream.
    /// `None`: the name is outside every served zone.
    async fn answer(&self, name: &hickory_proto::rr::Name, qtype: RecordType) -> Option<(Answer, bool)> {
        // The guard is dropped before any await: a snapshot is never held across I/O.
        let mut answer = self.zone.lookup(&self.snapshots.load(), name, qtype)?;
        let mut truncated = false;
        if let Some(target) = answer.chase.take() {
            match self.upstreams.query(&target, qtype).await {
                Ok(reply) => {
                    answer.answers.extend(reply.answers);
                    // CoreDNS copies the upstream's TC bit so the client retries over TCP.
                    truncated = reply.truncated;
                }
                Err(error) => debug!(%target, %error, "ExternalName target not resolved upstream"),
            }
        }
        Some((answer, truncated))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        // Without an OPT record in the reply hickory caps UDP answers at 512 bytes, so the
        // client's advertised size must be echoed back (RFC 6891 §7).
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(EDNS_VERSION);
            edns
        });
        if let Some(edns) = &resp_edns {
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
                return send(&mut response, msg, request).await;
            }
        };

        let qtype = info.query.query_type();
        let qname = info.query.original().name();
        // Zone transfers need a transfer policy svcnet does not have (CoreDNS: REFUSED too).
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            let msg = builder.build(rcode_only(ResponseCode::Refused), [], [], [], []);
            return send(&mut response, msg, request).await;
        }
        let Some((answer, truncated)) = self.answer(qname, qtype).await else {
            // Not ours, and there is no forwarding yet: refuse rather than claim NXDOMAIN.
            let msg = builder.build(rcode_only(ResponseCode::Refused), [], [], [], []);
            return send(&mut response, msg, request).await;
        };

        let mut meta = rcode_only(answer.rcode);
        meta.truncation = truncated;
        let soa: Vec<&Record> = answer.soa.iter().collect();
        let msg = builder.build(meta, answer.answers.iter(), [], soa, answer.additionals.iter());
        send(&mut response, msg, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
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

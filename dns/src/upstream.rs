//! The resolvers svcnet asks about names outside its zones. For now only ExternalName targets
//! go there; full forwarding with a cache is built on this later.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, Record, RecordType},
};
use tokio::net::UdpSocket;

/// How long one upstream gets to answer before the next is tried (CoreDNS `forward`'s read
/// timeout is 2 s as well).
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver is configured")]
    NoUpstreams,
    #[error("{server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("{server}: no answer within {TIMEOUT:?}")]
    Timeout { server: SocketAddr },
    #[error("{server}: {source}")]
    Proto {
        server: SocketAddr,
        source: hickory_proto::ProtoError,
    },
}

/// What an upstream said, reduced to what is copied into svcnet's answer.
#[derive(Debug)]
pub struct UpstreamReply {
    pub answers: Vec<Record>,
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self { servers }
    }

    /// Asks each upstream in turn until one answers.
    pub async fn query(&self, name: &Name, qtype: RecordType) -> Result<UpstreamReply, UpstreamError> {
        let mut last = UpstreamError::NoUpstreams;
        for &server in &self.servers {
            match query_one(server, name, qtype).await {
                Ok(reply) => return Ok(reply),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

async fn query_one(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
) -> Result<UpstreamReply, UpstreamError> {
    let io = |source| UpstreamError::Io { server, source };
    let proto = |source| UpstreamError::Proto { server, source };
    let mut request = Message::query();
    request.add_query(Query::query(name.clone(), qtype));
    request.metadata.recursion_desired = true;
    let bytes = request.to_vec().map_err(proto)?;

    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&bytes).await.map_err(io)?;

    let mut buf = vec![0u8; 65_535];
    let exchange = async {
        loop {
            let len = socket.recv(&mut buf).await.map_err(io)?;
            // A reply to another query (or garbage) on this port is ignored, not fatal.
            let Ok(reply) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            if reply.metadata.id == request.metadata.id {
                return Ok(UpstreamReply {
                    truncated: reply.metadata.truncation,
                    answers: reply.answers,
                });
            }
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout { server })?
}

//! One exchange with one upstream resolver: a query out, its reply back, over UDP or TCP. Every
//! query svcnet sends out goes through here: forwarded questions, ExternalName targets, health
//! probes and the loop check.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    ProtoError,
    op::{Message, MessageType},
    serialize::binary::DecodeError,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use tracing::debug;

/// How long one upstream gets for one attempt (CoreDNS `forward`'s read timeout).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How a query travels to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{server}: {source}")]
    Io {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{server}: no answer over {transport:?} within {TIMEOUT:?}")]
    Timeout {
        server: SocketAddr,
        transport: Transport,
    },
    #[error("{server}: the query cannot be encoded: {source}")]
    Encode {
        server: SocketAddr,
        #[source]
        source: ProtoError,
    },
    #[error("{server}: malformed reply: {source}")]
    Malformed {
        server: SocketAddr,
        #[source]
        source: DecodeError,
    },
    #[error("{server}: the reply over TCP does not answer the query")]
    Mismatch { server: SocketAddr },
}

impl UpstreamError {
    /// Whether the upstream is to blame: everything but a query svcnet could not encode, which
    /// would fail the same way with any upstream.
    pub fn is_upstream_failure(&self) -> bool {
        !matches!(self, Self::Encode { .. })
    }
}

/// Sends `query` to `server` and returns its reply, whatever the rcode.
///
/// Over UDP, a truncated reply is retried over TCP (RFC 7766 §5: TC means "retry over TCP");
/// if TCP fails, the truncated reply is returned, so the client can still retry over TCP
/// itself. Each attempt gets [`TIMEOUT`].
pub async fn exchange(
    server: SocketAddr,
    query: &Message,
    transport: Transport,
) -> Result<Message, UpstreamError> {
    let exchange = Exchange::new(server, query)?;
    match transport {
        Transport::Tcp => exchange.tcp().await,
        Transport::Udp => {
            let reply = exchange.udp().await?;
            if !reply.metadata.truncation {
                return Ok(reply);
            }
            match exchange.tcp().await {
                Ok(full) => Ok(full),
                Err(error) => {
                    debug!(%error, "TCP retry of a truncated UDP reply failed; passing TC on");
                    Ok(reply)
                }
            }
        }
    }
}

/// One query on its way to one server, with an ID of its own.
struct Exchange<'q> {
    server: SocketAddr,
    query: &'q Message,
    id: u16,
    bytes: Vec<u8>,
}

impl<'q> Exchange<'q> {
    fn new(server: SocketAddr, query: &'q Message) -> Result<Self, UpstreamError> {
        let mut bytes = query
            .to_vec()
            .map_err(|source| UpstreamError::Encode { server, source })?;
        // A fresh random ID for every query sent, never the client's: a forged reply then has
        // to guess it as well as the port (RFC 5452 §4.3).
        let id: u16 = rand::random();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        Ok(Self {
            server,
            query,
            id,
            bytes,
        })
    }

    /// RFC 5452 §9.1: a reply is accepted only if it matches the ID and the question (the
    /// source address is the connected socket's). hickory compares names case-insensitively.
    fn answers(&self, reply: &Message) -> bool {
        reply.metadata.message_type == MessageType::Response
            && reply.metadata.id == self.id
            && reply.queries == self.query.queries
    }

    fn io(&self) -> impl Fn(io::Error) -> UpstreamError {
        let server = self.server;
        move |source| UpstreamError::Io { server, source }
    }

    async fn udp(&self) -> Result<Message, UpstreamError> {
        let attempt = async {
            let bind: SocketAddr = match self.server {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            // A socket per query: a random source port each time (RFC 5452 §4.5), and once
            // connected the kernel drops datagrams from anyone but the upstream.
            let socket = UdpSocket::bind(bind).await.map_err(self.io())?;
            socket.connect(self.server).await.map_err(self.io())?;
            socket.send(&self.bytes).await.map_err(self.io())?;
            // RFC 6891 §6.2.3: a UDP reply is at most the payload size the query offered (512
            // without EDNS).
            let mut buf = vec![0; usize::from(self.query.max_payload())];
            loop {
                let len = socket.recv(&mut buf).await.map_err(self.io())?;
                // Anything that does not answer this query is ignored, not fatal: the real
                // reply may still come.
                match Message::from_vec(&buf[..len]) {
                    Ok(reply) if self.answers(&reply) => return Ok(reply),
                    _ => continue,
                }
            }
        };
        self.within_timeout(Transport::Udp, attempt).await
    }

    async fn tcp(&self) -> Result<Message, UpstreamError> {
        let attempt = async {
            let mut stream = TcpStream::connect(self.server).await.map_err(self.io())?;
            stream.set_nodelay(true).map_err(self.io())?;
            // RFC 1035 §4.2.2: a two-byte length, then the message. A query svcnet received
            // fits in 65535 bytes, as every DNS message does.
            let len = u16::try_from(self.bytes.len())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                .map_err(self.io())?;
            let mut framed = Vec::with_capacity(self.bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&self.bytes);
            stream.write_all(&framed).await.map_err(self.io())?;
            let len = stream.read_u16().await.map_err(self.io())?;
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(self.io())?;
            let reply = Message::from_vec(&buf).map_err(|source| UpstreamError::Malformed {
                server: self.server,
                source,
            })?;
            if !self.answers(&reply) {
                return Err(UpstreamError::Mismatch { server: self.server });
            }
            Ok(reply)
        };
        self.within_timeout(Transport::Tcp, attempt).await
    }

    async fn within_timeout(
        &self,
        transport: Transport,
        attempt: impl Future<Output = Result<Message, UpstreamError>>,
    ) -> Result<Message, UpstreamError> {
        tokio::time::timeout(TIMEOUT, attempt)
            .await
            .map_err(|_| UpstreamError::Timeout {
                server: self.server,
                transport,
            })?
    }
}

//! [`Ask`] over the network, as a stub resolver asks: UDP first, TCP when the answer was
//! truncated.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::walk::Ask;

/// glibc and musl both wait 5 s for a reply by default.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct StubClient {
    server: SocketAddr,
}

impl StubClient {
    pub fn new(server: SocketAddr) -> Self {
        Self { server }
    }

    async fn udp(&self, query: &[u8], id: u16) -> std::io::Result<Message> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(self.server).await?;
        socket.send(query).await?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let len = socket.recv(&mut buf).await?;
            // Stray datagrams are skipped, as a resolver matches replies by ID.
            if let Ok(msg) = Message::from_vec(&buf[..len])
                && msg.metadata.id == id
            {
                return Ok(msg);
            }
        }
    }

    async fn tcp(&self, query: &[u8]) -> std::io::Result<Message> {
        let mut stream = TcpStream::connect(self.server).await?;
        let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(query).await?;
        let reply_len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(reply_len)];
        stream.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(std::io::Error::other)
    }
}

impl Ask for StubClient {
    async fn ask(&mut self, name: &Name, qtype: RecordType) -> Result<Message, String> {
        let mut request = Message::query();
        request.add_query(Query::query(name.clone(), qtype));
        request.metadata.recursion_desired = true;
        let bytes = request.to_vec().map_err(|e| e.to_string())?;
        let exchange = async {
            let reply = self.udp(&bytes, request.metadata.id).await?;
            if reply.metadata.truncation {
                self.tcp(&bytes).await
            } else {
                Ok(reply)
            }
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no reply from {} within {TIMEOUT:?}", self.server)),
        }
    }
}

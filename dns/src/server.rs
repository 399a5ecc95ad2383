//! Sockets and the hickory server that owns them.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hickory_proto::rr::Name;
use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use svcnet_cluster::Reader;
use svcnet_config::DnsConfig;
use tracing::{info, warn};

use crate::{
    forward::Forwarder,
    handler::Handler,
    lookup::{ClusterZone, ZoneOptions},
    loop_check::LoopDetector,
    zone::Zones,
};

/// Idle TCP connections are closed after this long (CoreDNS uses 10 s for reads).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the handler waits.
const TCP_RESPONSE_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid zone `{zone}`: {source}")]
    Zone {
        zone: String,
        source: hickory_proto::ProtoError,
    },
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("invalid stub domain: {0}")]
    StubDomain(#[source] hickory_proto::ProtoError),
    #[error(
        "upstream {upstream} forwards queries back to svcnet, a forwarding loop: set `upstreams` \
         (or `stub-domains`) to a resolver that does not point at this node, or fix \
         /etc/resolv.conf"
    )]
    ForwardingLoop { upstream: SocketAddr },
    #[error("DNS server stopped: {0}")]
    Serve(#[from] hickory_server::net::NetError),
}

pub struct DnsServer {
    server: Server<Handler>,
    local_addrs: Vec<SocketAddr>,
    forwarder: Arc<Forwarder>,
    loops: Arc<LoopDetector>,
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address and starts answering on them; queries are
    /// served from here on, [`DnsServer::run`] waits for the end.
    pub async fn bind(config: &DnsConfig, snapshots: Reader) -> Result<Self, DnsError> {
        let zones = Zones::new(&config.zones).map_err(|source| DnsError::Zone {
            zone: config.zones.join(" "),
            source,
        })?;
        let zone = ClusterZone::new(zones, ZoneOptions::from_config(config));
        let fallthrough = config
            .fallthrough
            .iter()
            .map(|zone| {
                Name::from_ascii(zone).map_err(|source| DnsError::Zone {
                    zone: zone.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut sockets = Vec::new();
        for &addr in &config.listen {
            let udp = udp_socket(addr)?;
            // With port 0 the kernel picks a port; TCP then takes the same one.
            let addr = udp.local_addr().map_err(|source| DnsError::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            let tcp = tcp_listener(addr)?;
            sockets.push((addr, udp, tcp));
        }
        let local_addrs: Vec<SocketAddr> = sockets.iter().map(|(addr, ..)| *addr).collect();
        let forwarder = Arc::new(Forwarder::new(config, &local_addrs).map_err(DnsError::StubDomain)?);
        let loops = Arc::new(LoopDetector::default());
        let handler = Handler {
            zone,
            fallthrough,
            snapshots,
            forwarder: Arc::clone(&forwarder),
            loops: Arc::clone(&loops),
        };
        let mut server = Server::new(handler);
        for (_, udp, tcp) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        }
        Ok(Self {
            server,
            local_addrs,
            forwarder,
            loops,
        })
    }

    /// Fails with [`DnsError::ForwardingLoop`] if an upstream forwards svcnet's queries back to
    /// it (CoreDNS `loop`). A query for a random name goes through each upstream; seeing that
    /// name arrive twice means a loop. Call it after [`DnsServer::bind`], whose sockets already
    /// answer, and before [`DnsServer::run`]; it takes at most one upstream timeout (2 s).
    pub async fn check_loop(&self) -> Result<(), DnsError> {
        self.loops
            .check(self.forwarder.upstreams())
            .await
            .map_err(|upstream| DnsError::ForwardingLoop { upstream })
    }

    /// The bound addresses, with the ports the kernel chose for port 0.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Serves until `shutdown` resolves, then lets in-flight queries finish.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
        info!(addrs = ?self.local_addrs, upstreams = ?self.forwarder.upstreams(), "DNS serving");
        tokio::select! {
            result = self.server.block_until_done() => result?,
            () = shutdown => self.server.shutdown_gracefully().await?,
        }
        Ok(())
    }
}

fn udp_socket(addr: SocketAddr) -> Result<tokio::net::UdpSocket, DnsError> {
    let err = |source| DnsError::Bind {
        addr,
        transport: "udp",
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    configure(&socket, addr).map_err(err)?;
    // Bursts of queries (a pod resolving A and AAAA through five search domains) must not
    // overflow the default buffer; the kernel caps this at net.core.rmem_max.
    if let Err(error) = socket.set_recv_buffer_size(4 << 20) {
        warn!(%addr, %error, "could not enlarge the UDP receive buffer");
    }
    socket.bind(&addr.into()).map_err(err)?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(err)
}

fn tcp_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener, DnsError> {
    let err = |source| DnsError::Bind {
        addr,
        transport: "tcp",
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    configure(&socket, addr).map_err(err)?;
    socket.set_tcp_nodelay(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(err)
}

/// Options shared by both transports. SO_REUSEPORT lets a new svcnet bind while the old one
/// still serves (upgrades without a gap) and lets several workers share one address.
fn configure(socket: &Socket, addr: SocketAddr) -> std::io::Result<()> {
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)
}

//! Sockets and the hickory server that owns them.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hickory_proto::rr::Name;
use hickory_server::{Server, net::NetError};
use socket2::{Domain, Protocol, Socket, Type};
use svcnet_cluster::Reader;
use svcnet_config::DnsConfig;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::{info, warn};

use crate::{
    handler::Handler,
    live::{DnsReloader, NodeDns},
    loop_check::LoopDetector,
    metrics::{DnsMetrics, ServerMetrics},
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
    Serve(#[from] NetError),
    #[error("cannot start a DNS worker: {0}")]
    Worker(#[source] std::io::Error),
}

pub struct DnsServer {
    local_addrs: Vec<SocketAddr>,
    reloader: DnsReloader,
    loops: Arc<LoopDetector>,
    workers: usize,
    /// Set to `true` to make every worker shut down gracefully.
    stop: watch::Sender<bool>,
    /// Each worker sends its result here when it ends.
    finished: mpsc::UnboundedReceiver<Result<(), DnsError>>,
}

/// One listening address of one worker: its sockets and the handler answering on them.
struct Listener {
    addr: SocketAddr,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    handler: Handler,
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address, once per worker (SO_REUSEPORT: the kernel
    /// spreads clients over the workers' sockets), and starts the workers; queries are served
    /// from here on, [`DnsServer::run`] waits for the end.
    pub async fn bind(
        config: &DnsConfig,
        node: NodeDns,
        snapshots: Reader,
        metrics: DnsMetrics,
    ) -> Result<Self, DnsError> {
        let workers = worker_count(config.workers);
        let mut sockets = Vec::with_capacity(workers);
        let mut local_addrs: Vec<SocketAddr> = Vec::new();
        for worker in 0..workers {
            let mut own = Vec::new();
            for (i, &addr) in config.listen.iter().enumerate() {
                // With port 0 the kernel picks a port for the first worker's UDP socket; TCP
                // and the other workers take the same one.
                let addr = local_addrs.get(i).copied().unwrap_or(addr);
                let udp = udp_socket(addr)?;
                let addr = udp.local_addr().map_err(|source| DnsError::Bind {
                    addr,
                    transport: "udp",
                    source,
                })?;
                let tcp = tcp_listener(addr)?;
                if worker == 0 {
                    local_addrs.push(addr);
                }
                own.push((addr, udp, tcp));
            }
            sockets.push(own);
        }
        let reloader = DnsReloader::start(config, node, &local_addrs, metrics.clone())?;
        let loops = Arc::new(LoopDetector::default());
        // The `zone` label: served zones and stub domains, both validated by now.
        let label_zones: Vec<Name> = config
            .zones
            .iter()
            .chain(config.stub_domains.iter().map(|stub| &stub.domain))
            .filter_map(|zone| Name::from_ascii(zone).ok())
            .collect();
        let server_metrics: Vec<ServerMetrics> = local_addrs
            .iter()
            .map(|&addr| ServerMetrics::new(metrics.clone(), addr, &label_zones))
            .collect();

        let (stop, stopped) = watch::channel(false);
        let (done, finished) = mpsc::unbounded_channel();
        for (worker, own) in sockets.into_iter().enumerate() {
            let listeners = own
                .into_iter()
                .zip(&server_metrics)
                .map(|((addr, udp, tcp), metrics)| Listener {
                    addr,
                    udp,
                    tcp,
                    handler: Handler {
                        live: reloader.live(),
                        snapshots: snapshots.clone(),
                        loops: Arc::clone(&loops),
                        metrics: metrics.clone(),
                    },
                })
                .collect();
            let stopped = stopped.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("dns-worker-{worker}"))
                .spawn(move || {
                    // The receiver is gone only when the DnsServer is, and nobody is waiting.
                    let _ = done.send(run_worker(listeners, stopped));
                })
                .map_err(DnsError::Worker)?;
        }
        Ok(Self {
            local_addrs,
            reloader,
            loops,
            workers,
            stop,
            finished,
        })
    }

    /// Fails with [`DnsError::ForwardingLoop`] if an upstream forwards svcnet's queries back to
    /// it (CoreDNS `loop`). A query for a random name goes through each upstream; seeing that
    /// name arrive twice means a loop. Call it after [`DnsServer::bind`], whose sockets already
    /// answer, and before [`DnsServer::run`]; it takes at most one upstream timeout (2 s).
    pub async fn check_loop(&self) -> Result<(), DnsError> {
        self.loops
            .check(self.reloader.current().forwarder.upstreams())
            .await
            .map_err(|upstream| DnsError::ForwardingLoop { upstream })
    }

    /// Applies new configurations while serving; see [`DnsReloader::apply`].
    pub fn reloader(&self) -> DnsReloader {
        self.reloader.clone()
    }

    /// The bound addresses, with the ports the kernel chose for port 0.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Serves until `shutdown` resolves, then stops listening. hickory drops the queries still
    /// in flight at that moment (a forwarded one may wait on its upstream for seconds): the
    /// lame duck before `shutdown` resolves is what drains the traffic. A worker that fails
    /// stops them all.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
        info!(
            addrs = ?self.local_addrs,
            upstreams = ?self.reloader.current().forwarder.upstreams(),
            workers = self.workers,
            "DNS serving"
        );
        let mut running = self.workers;
        let mut outcome = Ok(());
        tokio::select! {
            Some(result) = self.finished.recv() => {
                running -= 1;
                outcome = result;
            }
            () = shutdown => {}
        }
        self.stop.send_replace(true);
        while running > 0
            && let Some(result) = self.finished.recv().await
        {
            running -= 1;
            outcome = outcome.and(result);
        }
        outcome
    }
}

/// One worker: a thread with its own single-threaded runtime and its own hickory servers, so
/// a query is received, answered and sent on one core without crossing threads (pingora's
/// "no steal" model). Runs until `stop` turns true, then shuts its servers down gracefully.
fn run_worker(listeners: Vec<Listener>, mut stop: watch::Receiver<bool>) -> Result<(), DnsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DnsError::Worker)?;
    runtime.block_on(async move {
        let mut servers = Vec::with_capacity(listeners.len());
        for Listener {
            addr,
            udp,
            tcp,
            handler,
        } in listeners
        {
            // Sockets join the reactor of the runtime they are converted in: this worker's.
            let udp = tokio::net::UdpSocket::from_std(udp).map_err(|source| DnsError::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| DnsError::Bind {
                addr,
                transport: "tcp",
                source,
            })?;
            let mut server = Server::new(handler);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
            servers.push(server);
        }
        let tokens: Vec<_> = servers.iter().map(|s| s.shutdown_token().clone()).collect();
        let mut running = JoinSet::new();
        for mut server in servers {
            running.spawn(async move { server.block_until_done().await });
        }
        let mut outcome = Ok(());
        tokio::select! {
            // A server ends by itself only on an error; the others stop with it.
            Some(result) = running.join_next() => outcome = joined(result),
            // An error means the DnsServer is gone: stop too.
            _ = stop.wait_for(|stop| *stop) => {}
        }
        tokens.iter().for_each(|token| token.cancel());
        while let Some(result) = running.join_next().await {
            outcome = outcome.and(joined(result));
        }
        outcome
    })
}

/// `configured` workers, or with 0 one per CPU this process may use. The standard library's
/// count already honours the cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`, rounded
/// down) and the affinity mask, as linkerd's `Workers::cores()` does on top of it.
fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn joined(result: Result<Result<(), NetError>, tokio::task::JoinError>) -> Result<(), DnsError> {
    match result {
        Ok(result) => Ok(result?),
        Err(error) => Err(DnsError::Serve(NetError::from(format!(
            "DNS server task: {error}"
        )))),
    }
}
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, DnsError> {
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
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> Result<std::net::TcpListener, DnsError> {
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
    Ok(socket.into())
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

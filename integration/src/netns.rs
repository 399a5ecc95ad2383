//! A small cluster made of network namespaces, for tests whose packets must cross the nftables
//! rules of a node: nodes, Pods, an external host, and links between nodes.
//!
//! Pods are routed point to point, as most CNIs (Calico, Cilium's routing mode) route them: a
//! Pod has a veth to its node, its address as a /32 (/128), and a default route via a link-local
//! gateway that the node answers for (proxy ARP for 169.254.1.1, `fe80::1` on the node's side).
//! So every packet a Pod sends, even to a Pod on the same node, is routed by the node's IP stack
//! and meets its prerouting, forward and postrouting hooks.
//!
//! Everything lives in namespaces created here; no interface is ever created in the test's own
//! namespace, and the host's addresses, routes and ruleset are never touched. When a
//! [`Topology`] drops, also while a test panics, the processes started in it are killed and its
//! namespaces deleted, which deletes their veths too.
//!
//! Addresses: node N (from 1) has `192.0.2.N/32` on an uplink that is its default route (proxy
//! ARP only answers for addresses routed out of another interface) and whose router drops
//! everything; the external host is `203.0.113.2` and `2001:db8:1::2` on a link to its node's
//! `203.0.113.1` and `2001:db8:1::1`; two linked nodes are `198.51.100.1`/`.2` and
//! `2001:db8:2::1`/`::2` on the link, and each routes the other's Pods over it.
//!
//! [`Topology::serve`] starts a server in a Pod that answers every TCP connection and UDP
//! datagram with the Pod's name and the source address it saw; a [`Probe`] makes connections or
//! sends datagrams from any host and tells a reply from a refusal, a timeout or another error.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

/// The external host's address and its node's, on the link between them.
pub const EXTERNAL_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const EXTERNAL_NODE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const EXTERNAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const EXTERNAL_NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The addresses of the first and the second node of a [`Topology::link`].
pub const LINK_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(198, 51, 100, 2)];
pub const LINK_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2),
];

/// The router behind every node's uplink, which is never there. IPv6 needs the default route
/// too: without one, a node answers a Service address it has no rule for with "network
/// unreachable" before its forward hook, where svcnet's rules are, ever sees the packet.
const ROUTER: &str = "192.0.2.254";
const ROUTER_V6: &str = "fe80::fe";
const ROUTER_MAC: &str = "02:00:00:00:00:fe";

/// How long a server may take to start listening.
const SERVER_START: Duration = Duration::from_secs(10);

/// Something that has a network namespace to run programs in.
pub trait Host {
    /// The namespace's name, as `ip netns` knows it.
    fn netns(&self) -> &str;

    /// `program` to be run inside the namespace (`ip netns exec` execs it, so the child is the
    /// program itself).
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.netns()]).arg(program);
        command
    }
}

/// A node: its Kubernetes name (what `--node-name` and `nodeName` say) and its namespace.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub netns: String,
    /// The node's own address, on its uplink.
    pub address: Ipv4Addr,
    index: usize,
}

/// A Pod: its name (which its server answers with), node and addresses.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub netns: String,
    /// The Kubernetes name of the node it runs on.
    pub node: String,
    pub ips: Vec<IpAddr>,
}

impl Pod {
    pub fn ipv4(&self) -> IpAddr {
        self.ip(IpAddr::is_ipv4)
    }

    pub fn ipv6(&self) -> IpAddr {
        self.ip(IpAddr::is_ipv6)
    }

    fn ip(&self, family: fn(&IpAddr) -> bool) -> IpAddr {
        *self
            .ips
            .iter()
            .find(|ip| family(ip))
            .unwrap_or_else(|| panic!("Pod {} has no address of that family: {:?}", self.name, self.ips))
    }
}

/// The host outside the cluster, on a link to one node (see the `EXTERNAL_*` addresses).
#[derive(Clone, Debug)]
pub struct External {
    pub netns: String,
}

impl Host for Node {
    fn netns(&self) -> &str {
        &self.netns
    }
}

impl Host for Pod {
    fn netns(&self) -> &str {
        &self.netns
    }
}

impl Host for External {
    fn netns(&self) -> &str {
        &self.netns
    }
}

/// The namespaces of one test, and the processes running in them.
#[derive(Default)]
pub struct Topology {
    // Drop order: processes are killed (in Drop) before the namespaces go.
    processes: Vec<Process>,
    namespaces: Vec<String>,
    nodes: Vec<NodeState>,
    pods: Vec<(usize, Vec<IpAddr>)>,
    link: Option<[usize; 2]>,
    external: bool,
}

struct NodeState {
    node: Node,
    veths: usize,
}

impl Topology {
    /// An empty topology. Fails the test, saying why, unless this process is root.
    pub fn new() -> Self {
        assert_root();
        Self::default()
    }

    /// A node named `node-a`, `node-b`... with forwarding on and an uplink as its default route.
    pub fn node(&mut self) -> Node {
        let index = self.nodes.len();
        assert!(index < 26, "at most 26 nodes");
        let netns = self.namespace("node");
        let address = Ipv4Addr::new(192, 0, 2, u8::try_from(index + 1).expect("small index"));
        sysctl(
            &netns,
            &["net/ipv4/ip_forward=1", "net/ipv6/conf/all/forwarding=1"],
        );
        // A node has a default route to its network; proxy ARP needs it, since it only answers
        // for addresses routed out of another interface than the one asking. The uplink is a
        // veth whose peer stays down (not every kernel has dummy devices): what the node sends
        // there vanishes, as if a router dropped it. The router is a permanent neighbour, so
        // that nothing waits on ARP and gets "host unreachable" back.
        ip(&netns, "link add uplink0 type veth peer name uplink0-peer");
        ip(&netns, &format!("addr add {address}/32 dev uplink0"));
        ip(&netns, "link set uplink0 up");
        for router in [ROUTER, ROUTER_V6] {
            ip(
                &netns,
                &format!("neigh add {router} lladdr {ROUTER_MAC} dev uplink0 nud permanent"),
            );
        }
        ip(
            &netns,
            &format!("route add default via {ROUTER} dev uplink0 onlink"),
        );
        ip(
            &netns,
            &format!("-6 route add default via {ROUTER_V6} dev uplink0"),
        );
        let letter = char::from(b'a' + u8::try_from(index).expect("small index"));
        let node = Node {
            name: format!("node-{letter}"),
            netns,
            address,
            index,
        };
        self.nodes.push(NodeState {
            node: node.clone(),
            veths: 0,
        });
        node
    }

    /// A Pod on `node` with `ips` (IPv4 and/or IPv6), routed point to point.
    pub fn pod(&mut self, node: &Node, name: &str, ips: &[&str]) -> Pod {
        let ips: Vec<IpAddr> = ips
            .iter()
            .map(|ip| ip.parse().unwrap_or_else(|e| panic!("Pod address {ip}: {e}")))
            .collect();
        let netns = self.namespace("pod");
        let state = &mut self.nodes[node.index];
        let veth = format!("veth{}", state.veths);
        state.veths += 1;

        let host = &node.netns;
        ip(
            host,
            &format!("link add {veth} type veth peer name eth0 netns {netns}"),
        );
        sysctl(
            host,
            &[
                &format!("net/ipv4/conf/{veth}/proxy_arp=1"),
                // Proxy ARP answers broadcast requests after up to 0.8 s by default.
                &format!("net/ipv4/neigh/{veth}/proxy_delay=0"),
            ],
        );
        ip(host, &format!("addr add fe80::1/64 dev {veth} nodad"));
        ip(host, &format!("link set {veth} up"));
        for &pod_ip in &ips {
            ip(host, &format!("route add {} dev {veth}", host_prefix(pod_ip)));
        }

        ip(&netns, "link set eth0 up");
        for &pod_ip in &ips {
            ip(
                &netns,
                &format!("addr add {} dev eth0 nodad", host_prefix(pod_ip)),
            );
        }
        ip(&netns, "route add 169.254.1.1 dev eth0 scope link");
        ip(&netns, "route add default via 169.254.1.1 dev eth0");
        ip(&netns, "-6 route add default via fe80::1 dev eth0");

        if let Some(link) = self.link {
            self.route_over_link(link, node.index, &ips);
        }
        self.pods.push((node.index, ips.clone()));
        Pod {
            name: name.to_owned(),
            netns,
            node: node.name.clone(),
            ips,
        }
    }

    /// The external host, on a link to `node` (one per topology).
    pub fn external(&mut self, node: &Node) -> External {
        assert!(!self.external, "one external host per topology");
        self.external = true;
        let netns = self.namespace("ext");
        let host = &node.netns;
        ip(
            host,
            &format!("link add ext0 type veth peer name eth0 netns {netns}"),
        );
        ip(host, &format!("addr add {EXTERNAL_NODE_V4}/24 dev ext0"));
        ip(host, &format!("addr add {EXTERNAL_NODE_V6}/64 dev ext0 nodad"));
        ip(host, "link set ext0 up");
        ip(&netns, "link set eth0 up");
        ip(&netns, &format!("addr add {EXTERNAL_V4}/24 dev eth0"));
        ip(&netns, &format!("addr add {EXTERNAL_V6}/64 dev eth0 nodad"));
        ip(&netns, &format!("route add default via {EXTERNAL_NODE_V4}"));
        ip(&netns, &format!("-6 route add default via {EXTERNAL_NODE_V6}"));
        External { netns }
    }

    /// Links nodes `a` and `b` (one link per topology); each routes the other's Pods over it,
    /// those created before and after.
    pub fn link(&mut self, a: &Node, b: &Node) {
        assert!(self.link.is_none(), "one link between nodes per topology");
        assert_ne!(a.index, b.index, "a node cannot be linked to itself");
        // Each end is `link0` in its own node's namespace.
        ip(
            &a.netns,
            &format!("link add link0 type veth peer name link0 netns {}", b.netns),
        );
        for (side, node) in [a, b].into_iter().enumerate() {
            ip(&node.netns, &format!("addr add {}/24 dev link0", LINK_V4[side]));
            ip(
                &node.netns,
                &format!("addr add {}/64 dev link0 nodad", LINK_V6[side]),
            );
            ip(&node.netns, "link set link0 up");
        }
        let link = [a.index, b.index];
        self.link = Some(link);
        for (node, ips) in self.pods.clone() {
            self.route_over_link(link, node, &ips);
        }
    }

    /// Routes `ips`, Pod addresses on node `pod_node`, from the other end of `link` if
    /// `pod_node` is one of its ends.
    fn route_over_link(&self, link: [usize; 2], pod_node: usize, ips: &[IpAddr]) {
        let Some(side) = link.iter().position(|&n| n == pod_node) else {
            return;
        };
        let other = &self.nodes[link[1 - side]].node;
        for &ip_addr in ips {
            let via: IpAddr = if ip_addr.is_ipv4() {
                LINK_V4[side].into()
            } else {
                LINK_V6[side].into()
            };
            ip(
                &other.netns,
                &format!("route add {} via {via}", host_prefix(ip_addr)),
            );
        }
    }

    /// Starts a TCP and UDP server on `port` (both families) in `pod`, and waits until it
    /// listens. It answers each connection and datagram with one line, "POD PEER": the Pod's
    /// name and the source address it saw. It runs until the topology drops.
    pub fn serve(&mut self, pod: &Pod, port: u16) {
        let mut command = pod.command(python3());
        command.args(["-c", SERVER, &pod.name, &port.to_string()]);
        let mut process = Process::spawn_piped(command);
        let stdout = process.child.stdout.take().expect("piped stdout");
        // A thread reads the line, so that a server that never gets ready cannot block the test.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(SERVER_START) {
            Ok(line) if line.trim() == "ready" => {}
            other => panic!(
                "the server in Pod {} did not start within {SERVER_START:?} ({other:?}):\n{}",
                pod.name,
                process.log()
            ),
        }
        self.processes.push(process);
    }

    /// Every global address of `node` (uplink, external and node links).
    pub fn node_addresses(&self, node: &Node) -> Vec<IpAddr> {
        let output = ip(&node.netns, "-o addr show scope global");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// A new namespace `svcnet-ROLE-PID-N`, with loopback up and DAD off (so that addresses are
    /// usable at once rather than after a second of duplicate address detection).
    fn namespace(&mut self, role: &str) -> String {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "svcnet-{role}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add` ({e}): install iproute2"));
        assert!(
            output.status.success(),
            "cannot create network namespace {name}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        self.namespaces.push(name.clone());
        sysctl(
            &name,
            &[
                "net/ipv6/conf/all/accept_dad=0",
                "net/ipv6/conf/default/accept_dad=0",
            ],
        );
        ip(&name, "link set lo up");
        name
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A namespace lives on while a process is in it: kill them first.
        self.processes.clear();
        for name in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

/// A process started in a namespace, its stderr kept in a log file; killed on drop.
pub struct Process {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `command` with stdout discarded.
    pub fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::null());
        Self::start(command)
    }

    fn spawn_piped(mut command: Command) -> Self {
        command.stdout(Stdio::piped());
        Self::start(command)
    }

    fn start(mut command: Command) -> Self {
        let log = tempfile::NamedTempFile::new().expect("temporary log file");
        let child = command
            .stdin(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self { child, log }
    }

    /// Fails the test, with the log, if the process has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{what} exited with {status}:\n{}", self.log());
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        self.log
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut s))
            .expect("read log");
        s
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Connections (TCP) or datagrams (UDP) from one host to one address, made by a client run in
/// the host's namespace, each answered by a [`Topology::serve`] server or not.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    proto: Proto,
    target: SocketAddr,
    count: usize,
    timeout: Duration,
    interval: Duration,
    same_socket: bool,
}

impl Probe {
    pub fn tcp(target: SocketAddr) -> Self {
        Self::new(Proto::Tcp, target)
    }

    pub fn udp(target: SocketAddr) -> Self {
        Self::new(Proto::Udp, target)
    }

    fn new(proto: Proto, target: SocketAddr) -> Self {
        Self {
            proto,
            target,
            count: 1,
            timeout: Duration::from_secs(2),
            interval: Duration::ZERO,
            same_socket: false,
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// How many attempts, one after the other [default: 1].
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }

    /// How long each attempt may take, connecting and reading the reply [default: 2 s].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// UDP: send every datagram from one socket (one 5-tuple, one conntrack entry) rather than
    /// from a fresh socket (a fresh source port) each.
    pub fn same_socket(mut self) -> Self {
        self.same_socket = true;
        self
    }

    /// How long to wait after each attempt before the next [default: none].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Makes the attempts from `host`. Bounded: each attempt ends after the timeout at most.
    pub fn run(&self, host: &impl Host) -> Vec<Attempt> {
        self.spawn(host).wait()
    }

    /// One attempt.
    pub fn once(&self, host: &impl Host) -> Attempt {
        self.count(1).run(host).remove(0)
    }

    /// Starts the attempts from `host` in the background, e.g. to change the cluster while they
    /// go on; [`RunningProbe::wait`] collects them.
    pub fn spawn(&self, host: &impl Host) -> RunningProbe {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let mut command = host.command(python3());
        command
            .args(["-c", CLIENT, proto])
            .arg(self.target.ip().to_string())
            .arg(self.target.port().to_string())
            .arg(self.count.to_string())
            .arg(self.timeout.as_secs_f64().to_string())
            .arg(self.interval.as_secs_f64().to_string())
            .arg(if self.same_socket { "same" } else { "fresh" });
        RunningProbe {
            process: Process::spawn_piped(command),
            count: self.count,
            netns: host.netns().to_owned(),
        }
    }
}

/// Attempts going on in the background; the client is killed if this drops unwaited.
pub struct RunningProbe {
    process: Process,
    count: usize,
    netns: String,
}

impl RunningProbe {
    /// Waits for every attempt (the client's own timeouts bound this) and returns them.
    pub fn wait(mut self) -> Vec<Attempt> {
        let mut stdout = String::new();
        if let Some(mut pipe) = self.process.child.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        let status = self.process.child.wait().expect("wait for the client");
        let attempts: Vec<Attempt> = stdout.lines().map(Attempt::parse).collect();
        assert!(
            status.success() && attempts.len() == self.count,
            "the client in {} failed ({status}): {stdout}{}",
            self.netns,
            self.process.log()
        );
        attempts
    }
}

/// What became of one attempt, and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// When the attempt started (the client's clock, which is this machine's).
    pub started: SystemTime,
    pub elapsed: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A server answered: the Pod's name and the source address the server saw.
    Reply { server: String, peer: IpAddr },
    /// TCP reset or ICMP port unreachable (`ECONNREFUSED`).
    Refused,
    /// Nothing came back within the timeout.
    Timeout,
    /// Anything else, as the client's error message (e.g. "No route to host").
    Error(String),
}

impl Attempt {
    fn parse(line: &str) -> Self {
        let seconds = |s: &str| Duration::from_secs_f64(s.parse::<f64>().unwrap_or(0.0).max(0.0));
        let mut fields = line.splitn(3, ' ');
        let started = SystemTime::UNIX_EPOCH + seconds(fields.next().unwrap_or_default());
        let elapsed = seconds(fields.next().unwrap_or_default());
        let result = fields.next().unwrap_or_default();
        let outcome = match result.split_once(' ').unwrap_or((result, "")) {
            ("refused", _) => Outcome::Refused,
            ("timeout", _) => Outcome::Timeout,
            ("reply", reply) => match reply.split_once(' ').map(|(s, p)| (s, p.parse())) {
                Some((server, Ok(peer))) => Outcome::Reply {
                    server: server.to_owned(),
                    peer,
                },
                _ => Outcome::Error(format!("unexpected reply {reply:?}")),
            },
            (_, error) => Outcome::Error(error.to_owned()),
        };
        Self {
            outcome,
            started,
            elapsed,
        }
    }

    /// The answering Pod's name, if one answered.
    pub fn server(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Reply { server, .. } => Some(server),
            _ => None,
        }
    }
}

/// A one-line summary of attempts, for failure messages: how many got which outcome.
pub fn summarize(attempts: &[Attempt]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for attempt in attempts {
        let key = match &attempt.outcome {
            Outcome::Reply { server, peer } => format!("{server} (saw {peer})"),
            other => format!("{other:?}"),
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    let mut s = String::new();
    for (key, n) in counts {
        let _ = write!(s, "{n}× {key}; ");
    }
    s.trim_end_matches("; ").to_owned()
}

/// The server: one line "POD PEER" per TCP connection and per UDP datagram, on both families.
const SERVER: &str = r#"
import ipaddress, socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])

def peer(address):
    ip = ipaddress.ip_address(address[0].split('%')[0])
    return str(getattr(ip, 'ipv4_mapped', None) or ip)

def bind(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('::', port))
    return s

def serve_tcp(s):
    while True:
        conn, address = s.accept()
        with conn:
            try:
                conn.sendall(f'{name} {peer(address)}\n'.encode())
            except OSError:
                pass

tcp, udp = bind(socket.SOCK_STREAM), bind(socket.SOCK_DGRAM)
tcp.listen(128)
threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
print('ready', flush=True)
while True:
    _, address = udp.recvfrom(2048)
    try:
        udp.sendto(f'{name} {peer(address)}\n'.encode(), address)
    except OSError:
        pass
"#;

/// The client: COUNT attempts, INTERVAL seconds apart, each printed as "START SECONDS RESULT"
/// (Unix time it started, how long it took), RESULT one of "reply POD PEER", "refused",
/// "timeout" or "error MESSAGE". UDP sockets are connected, so that an ICMP
/// port unreachable comes back as ECONNREFUSED.
const CLIENT: &str = r#"
import socket, sys, time
proto, host, port, count, timeout, interval, mode = sys.argv[1:]
port, count, timeout, interval = int(port), int(count), float(timeout), float(interval)
family = socket.AF_INET6 if ':' in host else socket.AF_INET
shared = None

def udp_socket():
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s

def attempt():
    global shared
    if proto == 'tcp':
        with socket.create_connection((host, port), timeout=timeout) as s:
            deadline = time.monotonic() + timeout
            data = b''
            while True:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = s.recv(1024)
                if not chunk:
                    return data
                data += chunk
    if mode == 'same':
        shared = shared or udp_socket()
        s = shared
    else:
        s = udp_socket()
    try:
        s.send(b'ping')
        return s.recv(2048)
    finally:
        if s is not shared:
            s.close()

for i in range(count):
    if i:
        time.sleep(interval)
    started, start = time.time(), time.monotonic()
    try:
        result = 'reply ' + attempt().decode().strip()
    except ConnectionRefusedError:
        result = 'refused'
    except (TimeoutError, socket.timeout):
        result = 'timeout'
    except OSError as e:
        result = 'error ' + (e.strerror or str(e))
    print(f'{started:.6f} {time.monotonic() - start:.6f} {result}', flush=True)
"#;

/// The Python interpreter itself, not a shim (pyenv's costs 100 ms a start).
fn python3() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): the servers and clients are Python"));
        assert!(output.status.success(), "python3 failed");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    })
}

/// `ip -n NETNS ARGS` (ARGS split at spaces), failing the test with `ip`'s message unless it
/// succeeds.
fn ip(netns: &str, args: &str) -> Output {
    let output = Command::new("ip")
        .args(["-n", netns])
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip ({e}): install iproute2"));
    assert!(
        output.status.success(),
        "ip -n {netns} {args} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

/// Sets sysctls, `PATH=VALUE` with PATH under /proc/sys, inside `netns` by writing the files:
/// procps may not be installed, a shell is.
fn sysctl(netns: &str, settings: &[&str]) {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, "sh", "-ec"]);
    command.arg(r#"for kv; do printf '%s\n' "${kv#*=}" > "/proc/sys/${kv%%=*}"; done"#);
    command.arg("sh").args(settings);
    let output = command.output().expect("run sh in a namespace");
    assert!(
        output.status.success(),
        "cannot set {settings:?} in {netns}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// `ip` as a prefix of one address: `/32` or `/128`.
fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    }
}

/// Network namespaces need root: say so rather than fail somewhere obscure.
fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "the datapath tests need root (network namespaces, nftables): run them as root, as .ci/run does"
    );
}

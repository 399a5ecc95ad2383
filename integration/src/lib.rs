//! Helpers for svcnet's end-to-end tests: start the real binary, ask it real DNS questions.
//!
//! Every process a test starts is killed when its guard drops, also when the test fails.

pub mod controlplane;
pub mod kubeapi;
pub mod netns;
pub mod tcpproxy;

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};

/// How a query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A running `svcnet` process, killed on drop.
pub struct Svcnet {
    child: Child,
    pub dns: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Svcnet {
    /// Starts `svcnet run --manifests DIR` on a free loopback port plus `extra` flags, and
    /// waits until it answers DNS.
    pub fn start_manifests(bin: &str, dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let dns: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        let mut args = vec!["run".to_owned(), "--manifests".into(), dir.display().to_string()];
        args.extend(["--dns-listen".into(), dns.to_string()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::start(bin, &args, dns)
    }

    /// Starts `svcnet` with exactly `args`, expecting DNS on `dns`.
    pub fn start(bin: &str, args: &[String], dns: SocketAddr) -> Self {
        let log = tempfile::NamedTempFile::new().expect("temporary log file");
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info,hickory_server=warn")
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut svcnet = Self { child, dns, log };
        svcnet.wait_serving();
        svcnet
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        self.log
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut s))
            .expect("read log");
        s
    }

    fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // A zone transfer, which svcnet refuses at once by itself: any other question outside
        // its zones is forwarded, and may wait on an upstream that a test keeps silent.
        let probe = Name::root();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("svcnet exited with {status} before serving:\n{}", self.log());
            }
            if query_sync(
                self.dns,
                &probe,
                RecordType::AXFR,
                Transport::Udp,
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "svcnet did not answer DNS on {} within 20 s:\n{}",
            self.dns,
            self.log()
        );
    }

    /// The process ID, to send signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// The exit status, if the process exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait for svcnet")
    }
}

impl Drop for Svcnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both UDP and TCP at the time of the call.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A query as `dig` would send it: recursion desired, EDNS with a 1232-byte payload unless
/// `edns` says otherwise.
pub fn request(name: &Name, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::query();
    msg.add_query(Query::query(name.clone(), qtype));
    msg.metadata.recursion_desired = true;
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.edns = Some(e);
    }
    msg
}

/// Sends `name`/`qtype` to `server` and returns the parsed reply.
pub fn query_sync(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    transport: Transport,
    timeout: Duration,
) -> std::io::Result<Message> {
    exchange(server, &request(name, qtype, Some(1232)), transport, timeout)
}

/// Sends a prepared message and returns the parsed reply (matching the ID).
pub fn exchange(
    server: SocketAddr,
    msg: &Message,
    transport: Transport,
    timeout: Duration,
) -> std::io::Result<Message> {
    let bytes = msg.to_vec().map_err(std::io::Error::other)?;
    let reply = exchange_raw(server, &bytes, transport, timeout)?;
    let reply = Message::from_vec(&reply).map_err(std::io::Error::other)?;
    if reply.metadata.id != msg.metadata.id {
        return Err(std::io::Error::other("reply ID does not match the query"));
    }
    Ok(reply)
}

/// Sends raw bytes as one DNS message and returns the raw reply.
pub fn exchange_raw(
    server: SocketAddr,
    bytes: &[u8],
    transport: Transport,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.connect(server)?;
            socket.send(bytes)?;
            let mut buf = vec![0u8; 65_535];
            let len = socket.recv(&mut buf)?;
            buf.truncate(len);
            Ok(buf)
        }
        Transport::Tcp => {
            use std::io::Write;
            let mut stream = std::net::TcpStream::connect_timeout(&server, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
            stream.write_all(&len.to_be_bytes())?;
            stream.write_all(bytes)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf)?;
            Ok(buf)
        }
    }
}

/// Writes Kubernetes objects (JSON values) into `dir/name` as a multi-document YAML stream's
/// JSON equivalent: one JSON `List`, which svcnet reads like `kubectl` does.
pub fn write_objects(dir: &Path, name: &str, objects: &[serde_json::Value]) {
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&list).expect("json")).expect("write manifest");
}

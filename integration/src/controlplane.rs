//! A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for the tests
//! that follow the cluster through the API server: the Go fixture in `integration/controlplane`,
//! built on demand and started on free loopback ports.
//!
//! [`ControlPlane::shared`] is one instance per test binary, for tests that only create objects
//! in their own namespaces. A test that stops or reconfigures the API server starts its own with
//! [`ControlPlane::start`], so that the others never see its outage.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant, SystemTime},
};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::free_port;

/// The fixture's own limit is 5 minutes (`--ready-timeout`); waiting a little longer lets its
/// error message, rather than ours, say what did not come up.
const READY_TIMEOUT: Duration = Duration::from_secs(330);

/// A running control plane; stopped (SIGTERM, then SIGKILL) on drop.
pub struct ControlPlane {
    child: Option<Child>,
    args: Vec<String>,
    /// The admin kubeconfig: a static `system:masters` token and the CA.
    kubeconfig: String,
    /// `https://127.0.0.1:PORT`.
    pub apiserver: String,
    pub apiserver_port: u16,
    pub etcd_port: u16,
    stderr: tempfile::NamedTempFile,
    /// The data directory, kept across [`restart`](Self::restart)s; `None` for the shared
    /// instance, which is never dropped, so the fixture makes and removes its own.
    data: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// The binary's one shared instance, started on first use. Statics are never dropped, so
    /// it is told to stop once this process is gone (`--parent-pid`).
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| Self::launch(&[], None))
    }

    /// Starts a private instance with extra kube-apiserver flags (e.g. `--watch-cache=false`),
    /// and waits until it is ready. It can be [`restart`](Self::restart)ed.
    pub fn start(apiserver_args: &[&str]) -> Self {
        let data = tempfile::Builder::new()
            .prefix("svcnet-controlplane-data-")
            .tempdir()
            .expect("temporary directory");
        Self::launch(apiserver_args, Some(data))
    }

    fn launch(apiserver_args: &[&str], data: Option<tempfile::TempDir>) -> Self {
        ensure_built();
        let (etcd_port, apiserver_port) = (free_port(), free_port());
        let mut args = vec![
            format!("--etcd-port={etcd_port}"),
            format!("--apiserver-port={apiserver_port}"),
            format!("--parent-pid={}", std::process::id()),
        ];
        if let Some(data) = &data {
            // So that a restart finds the same etcd data, CA and tokens.
            args.push(format!("--data-dir={}", data.path().display()));
        }
        args.extend(apiserver_args.iter().map(|a| format!("--apiserver-arg={a}")));
        let mut cp = Self {
            child: None,
            args,
            kubeconfig: String::new(),
            apiserver: format!("https://127.0.0.1:{apiserver_port}"),
            apiserver_port,
            etcd_port,
            stderr: tempfile::NamedTempFile::new().expect("temporary log file"),
            data,
        };
        let began = Instant::now();
        cp.spawn();
        println!(
            "controlplane: ready in {:.1}s ({})",
            began.elapsed().as_secs_f64(),
            cp.apiserver
        );
        cp
    }

    fn spawn(&mut self) {
        // Read once ready, then removed with its directory: the kubeconfig is kept in memory.
        let out = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = out.path().join("admin.kubeconfig");
        let mut child = Command::new(binary())
            .args(&self.args)
            .arg(format!("--kubeconfig-out={}", kubeconfig.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.stderr.reopen().expect("log file"))
            .spawn()
            .expect("start the controlplane fixture");
        // The only line on its stdout is the ready line; a reader thread lets us time out.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.starts_with("controlplane ready ") => {}
            other => panic!(
                "the control plane did not come up ({other:?}):\n{}",
                self.log_tail()
            ),
        }
        self.kubeconfig = std::fs::read_to_string(&kubeconfig).expect("admin kubeconfig");
    }

    /// Stops everything (as on SIGTERM: the data directory stays), and waits for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        // Its own stop waits up to 20 s per component before killing it.
        let deadline = Instant::now() + Duration::from_secs(70);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same ports, with the same data, CA and admin token, so that
    /// every kubeconfig and ServiceAccount token handed out before stays valid.
    pub fn restart(&mut self) {
        assert!(
            self.data.is_some(),
            "only a private instance keeps its data to restart with"
        );
        self.stop();
        self.spawn();
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// The admin kubeconfig changed to reach the API server at `server` (e.g. through a
    /// [`TcpRelay`](crate::tcpproxy::TcpRelay)) and to authenticate with `token` (e.g. a
    /// ServiceAccount's), each if given; the CA stays.
    pub fn kubeconfig_with(&self, server: Option<SocketAddr>, token: Option<&str>) -> String {
        let mut config = Kubeconfig::from_yaml(&self.kubeconfig).expect("admin kubeconfig");
        for named in &mut config.clusters {
            if let (Some(cluster), Some(server)) = (named.cluster.as_mut(), server) {
                cluster.server = Some(format!("https://{server}"));
            }
        }
        for named in &mut config.auth_infos {
            if let (Some(auth), Some(token)) = (named.auth_info.as_mut(), token) {
                auth.token = Some(token.to_owned().into());
            }
        }
        // JSON is YAML, and Kubeconfig serializes itself in the file format.
        serde_json::to_string(&config).expect("kubeconfig as JSON")
    }

    /// A client with the admin credentials.
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The last 40 lines of the fixture's log (every component's, prefixed with its name).
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        let _ = self.stderr.reopen().and_then(|mut f| f.read_to_string(&mut s));
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from kubeconfig text.
pub async fn client_from_kubeconfig(text: &str) -> kube::Client {
    let config = Kubeconfig::from_yaml(text).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("client configuration");
    kube::Client::try_from(config).expect("client")
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane")
}

/// `target/controlplane`, where the fixture's README builds it.
fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/controlplane")
}

/// Builds the fixture if it is missing or older than its sources, once per process. A cold
/// build (no Go module cache) takes many minutes, so the time is reported.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = binary();
        let reason = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
            Err(_) => "missing",
            Ok(at) if newest_source() > at => "sources changed",
            Ok(_) => {
                println!("controlplane: {} is up to date, not rebuilt", bin.display());
                return;
            }
        };
        let began = Instant::now();
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(source_dir())
            .status()
            .expect("run `go build` (is Go installed?)");
        assert!(
            status.success(),
            "go build of the controlplane fixture failed: {status}"
        );
        println!(
            "controlplane: built in {:.1}s ({reason})",
            began.elapsed().as_secs_f64()
        );
    });
}

/// The modification time of the newest Go source or module file of the fixture.
fn newest_source() -> SystemTime {
    std::fs::read_dir(source_dir())
        .expect("integration/controlplane")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".go") || name == "go.mod" || name == "go.sum"
        })
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

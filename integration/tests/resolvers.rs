//! Real stub resolvers, glibc's and musl's, resolving names the way a Pod in namespace `shop`
//! does: svcnet serves `examples/cluster` inside a network namespace whose `/etc/resolv.conf` is
//! the one kubelet writes for a `ClusterFirst` Pod, and `getaddrinfo` walks its search list.
//!
//! The two libcs walk the list differently: glibc goes on to the next search domain after
//! NXDOMAIN, NODATA or SERVFAIL; musl only after NXDOMAIN, and as it asks A and AAAA together,
//! an NXDOMAIN to either one makes it drop the other's answer and go on. So a NODATA or SERVFAIL
//! where CoreDNS says NXDOMAIN, or an NXDOMAIN where it says NODATA, breaks musl Pods only; the
//! musl test is what catches that.
//!
//! The namespace helpers ([`Netns`], [`spawn_svcnet`], [`run`]) serve the autopath and reload
//! tests too.
//!
//! These tests need root (network namespaces, port 53), `ip` (iproute2), `getent` (libc-bin)
//! and `musl-gcc` (musl-tools). Without them they fail and say why: `.ci/run` installs them.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use svcnet_integration::netns::Process;

/// What kubelet writes for a `dnsPolicy: ClusterFirst` Pod in namespace `shop` whose node has no
/// search domains of its own, with the cluster DNS server on the Pod's loopback.
const POD_RESOLV_CONF: &str = "nameserver 127.0.0.1\n\
                               search shop.svc.cluster.local svc.cluster.local cluster.local\n\
                               options ndots:5\n";

/// A lookup that takes longer than this waited for a timeout (glibc's and musl's are 5 s), which
/// means some query of the search walk got no usable answer.
const PROMPT: Duration = Duration::from_secs(2);

/// Names a Pod in `shop` resolves, with every address `getaddrinfo` must return for them.
const RESOLVING: &[(&str, &[&str])] = &[
    // A Service of the Pod's own namespace, found under the first search domain.
    ("mysql-read", &["10.96.33.6"]),
    // Headless: the ready Pods only; mysql-2 is not Ready. No IPv6 addresses, since the Service is
    // IPv4-only although its Pods are dual-stack (AAAA must be NODATA there, not NXDOMAIN).
    ("mysql", &["10.244.1.10", "10.244.2.10"]),
    // A StatefulSet Pod's stable name (`hostname` + `subdomain`).
    ("mysql-0.mysql", &["10.244.1.10"]),
    // Another namespace: the first search domain must give NXDOMAIN for the walk to go on.
    ("grafana.monitoring", &["10.96.30.30"]),
    // Dual-stack: A and AAAA.
    ("prometheus.monitoring", &["10.96.90.90", "fd00:10:96::9090"]),
    // ExternalName: the CNAME to prometheus.monitoring, followed inside the zone.
    ("metrics", &["10.96.90.90", "fd00:10:96::9090"]),
    // Fewer dots than ndots: every search domain first (all NXDOMAIN), then the name as given.
    ("web.shop.svc.cluster.local", &["10.96.0.80"]),
    // Fully qualified: no search at all.
    ("web.shop.svc.cluster.local.", &["10.96.0.80"]),
];

/// Names that must fail at once, every query of the walk answered NXDOMAIN.
///
/// These stay inside the cluster zone, to the end of the walk. A short name's walk ends with the
/// name itself, outside the zone, which svcnet answers REFUSED here, having no upstream in this
/// namespace: glibc gives up on REFUSED at once, but musl ignores it and waits out its 5 s
/// timeout (EAI_AGAIN). So only the glibc test also has a short name.
const FAILING: &[&str] = &[
    // mysql-2 is not Ready, so its name is not published yet.
    "mysql-2.mysql.shop.svc.cluster.local",
    "no-such-service.shop.svc.cluster.local",
];

#[test]
fn glibc_getaddrinfo_resolves_like_a_pod() {
    let pod = Pod::start();
    let mut failures = Failures::default();
    for &(name, expected) in RESOLVING {
        failures.unless_resolves(name, expected, &pod.lookup("getent", &["ahosts", name]));
    }
    for &name in FAILING.iter().chain(&["no-such-service"]) {
        let lookup = pod.lookup("getent", &["ahosts", name]);
        // getent exits 2 when getaddrinfo fails, whatever the reason: PROMPT tells the reasons apart.
        let clean = lookup.output.status.code() == Some(2);
        failures.unless_fails_cleanly(name, &lookup, clean);
    }
    pod.assert_no_failures("glibc", &failures);
}

#[test]
fn musl_getaddrinfo_resolves_like_a_pod() {
    let build = tempfile::tempdir().expect("temporary directory");
    let program = build_musl_getaddrinfo(build.path());
    let program = program.to_str().expect("UTF-8 path");
    let pod = Pod::start();
    let mut failures = Failures::default();
    for &(name, expected) in RESOLVING {
        failures.unless_resolves(name, expected, &pod.lookup(program, &[name]));
    }
    for &name in FAILING {
        let lookup = pod.lookup(program, &[name]);
        // EAI_NONAME is what NXDOMAIN everywhere gives; EAI_AGAIN would mean a query went unanswered.
        let clean = lookup.output.status.code() == Some(2) && lookup.stderr().contains("EAI_NONAME");
        failures.unless_fails_cleanly(name, &lookup, clean);
    }
    pod.assert_no_failures("musl", &failures);
}

/// Every lookup of a test that went wrong, so that one run reports them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn unless_resolves(&mut self, name: &str, expected: &[&str], lookup: &Lookup) {
        let expected: BTreeSet<IpAddr> = expected
            .iter()
            .map(|a| a.parse().expect("test address"))
            .collect();
        match lookup.addresses() {
            Some(got) if got == expected && lookup.elapsed < PROMPT => {}
            Some(got) if got == expected => {
                self.0
                    .push(format!("{name}: resolved, but only after {:?}", lookup.elapsed));
            }
            Some(got) => self.0.push(format!("{name}: got {got:?}, want {expected:?}")),
            None => self
                .0
                .push(format!("{name}: want {expected:?}, but {}", lookup.describe())),
        }
    }

    fn unless_fails_cleanly(&mut self, name: &str, lookup: &Lookup, clean: bool) {
        if !clean || lookup.elapsed >= PROMPT {
            self.0.push(format!(
                "{name}: want a prompt, clean failure, but {}",
                lookup.describe()
            ));
        }
    }
}

/// Compiles `resolvers/getaddrinfo.c` with musl into `dir`. Static, so that it runs without
/// musl's dynamic loader installed.
fn build_musl_getaddrinfo(dir: &Path) -> PathBuf {
    let source = dir.join("getaddrinfo.c");
    fs::write(&source, include_str!("resolvers/getaddrinfo.c")).expect("write C source");
    let program = dir.join("musl-getaddrinfo");
    let output = Command::new("musl-gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .args([&program, &source])
        .output()
        .unwrap_or_else(|e| panic!("cannot run musl-gcc ({e}): install musl-tools (Debian)"));
    assert!(
        output.status.success(),
        "musl-gcc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    program
}

/// One lookup by a resolver program run in the Pod's network namespace.
struct Lookup {
    output: Output,
    elapsed: Duration,
}

impl Lookup {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The distinct addresses printed by a successful lookup. Both programs start each line with
    /// an address: `getent ahosts` prints "ADDRESS SOCKTYPE [CANONNAME]" per address and socket
    /// type, the musl program just the address.
    fn addresses(&self) -> Option<BTreeSet<IpAddr>> {
        if !self.output.status.success() {
            return None;
        }
        let stdout = self.stdout();
        let addresses = stdout.lines().filter_map(|line| line.split_whitespace().next());
        Some(
            addresses
                .map(|a| {
                    a.parse()
                        .unwrap_or_else(|e| panic!("resolver printed {a:?}, not an address: {e}"))
                })
                .collect(),
        )
    }

    fn describe(&self) -> String {
        format!(
            "{} after {:?}; stdout: {:?}; stderr: {:?}",
            self.output.status,
            self.elapsed,
            self.stdout().trim(),
            self.stderr().trim()
        )
    }
}

/// A Pod as far as name resolution goes: a network namespace with kubelet's resolv.conf, and
/// svcnet serving `examples/cluster` on its 127.0.0.1:53.
struct Pod {
    // Fields drop in order: svcnet stops before its namespace goes.
    svcnet: Process,
    netns: Netns,
}

impl Pod {
    fn start() -> Self {
        let netns = Netns::create(POD_RESOLV_CONF);
        let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
        let mut command = netns.command(env!("CARGO_BIN_EXE_svcnet"));
        command
            .arg("run")
            .arg("--manifests")
            .arg(&manifests)
            .args(["--dns-listen", "127.0.0.1:53"]);
        let svcnet = spawn_svcnet(command);
        let mut pod = Self { svcnet, netns };
        pod.wait_serving();
        pod
    }

    /// Waits until glibc resolves a name of the example cluster through svcnet.
    fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            self.svcnet.assert_running("svcnet");
            let probe = self
                .netns
                .command("getent")
                .args(["hosts", "mysql-read.shop.svc.cluster.local."])
                .output();
            match probe {
                Ok(output) if output.status.success() => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("cannot run getent ({e}): it comes with glibc (Debian: libc-bin)"),
            }
        }
        panic!(
            "svcnet did not resolve names in {} within 20 s:\n{}",
            self.netns.name,
            self.svcnet.log()
        );
    }

    fn lookup(&self, program: &str, args: &[&str]) -> Lookup {
        let start = Instant::now();
        let output = self
            .netns
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.netns.name));
        Lookup {
            output,
            elapsed: start.elapsed(),
        }
    }

    fn assert_no_failures(&self, libc: &str, failures: &Failures) {
        if !failures.0.is_empty() {
            let mut message = String::new();
            for failure in &failures.0 {
                writeln!(message, "  {failure}").expect("write to String");
            }
            let count = failures.0.len();
            panic!(
                "{libc}: {count} lookups went wrong:\n{message}svcnet's log:\n{}",
                self.svcnet.log()
            );
        }
    }
}

/// A network namespace with its own `/etc/resolv.conf` and loopback up, deleted on drop (also
/// when the test panics).
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create(resolv_conf: &str) -> Self {
        assert_root();
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "svcnet-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        run(
            Command::new("ip").args(["netns", "add", &name]),
            "ip netns add (iproute2)",
        );
        let netns = Self { name };
        // `ip netns exec` bind-mounts every file in /etc/netns/<name>/ over its /etc namesake.
        let etc = netns.etc_dir();
        fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("cannot create {}: {e}", etc.display()));
        fs::write(etc.join("resolv.conf"), resolv_conf).expect("write the namespace's resolv.conf");
        run(
            netns.command("ip").args(["link", "set", "lo", "up"]),
            "ip link set lo up",
        );
        // The bind mount needs a regular /etc/resolv.conf to cover; make sure it happened.
        let seen = run(
            netns.command("cat").arg("/etc/resolv.conf"),
            "cat /etc/resolv.conf",
        );
        assert_eq!(
            String::from_utf8_lossy(&seen.stdout),
            resolv_conf,
            "ip netns exec did not put /etc/netns/{}/resolv.conf in place of /etc/resolv.conf",
            netns.name
        );
        netns
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// `program` to be run inside the namespace.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

/// Starts svcnet (`command`, made by [`Netns::command`]) with the tests' log level, killed on
/// drop. `ip netns exec` execs the program in its own process, so the child is svcnet itself.
pub(crate) fn spawn_svcnet(mut command: Command) -> Process {
    command.env("RUST_LOG", "info,hickory_server=warn");
    Process::spawn(command)
}

/// Network namespaces and port 53 need root; say so rather than fail somewhere obscure.
fn assert_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "the resolver tests need root (network namespaces, port 53): run them as root, as .ci/run does"
    );
}

/// Runs `command`, failing the test with `what` and the command's stderr if it does not succeed.
pub(crate) fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

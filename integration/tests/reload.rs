//! Configuration reload while serving: a changed `--config` file or SIGHUP takes effect within
//! seconds, no query of a steady load goes unanswered meanwhile, and an invalid file is
//! reported and ignored.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use hickory_proto::rr::{Name, RecordType};
use svcnet_integration::{Svcnet, Transport, query_sync};

/// How long a change may take to show in answers.
const APPLIED_WITHIN: Duration = Duration::from_secs(2);

/// Replaces the file whole, as an editor's save does.
fn write_file(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write config");
    std::fs::rename(&next, path).expect("replace config");
}

/// Points the symlink `link` at a new file holding `text`, as a ConfigMap volume update does
/// (there through a `..data` directory link); returns the new file.
fn swap_config(link: &Path, data: &Path, version: u32, text: &str) -> std::path::PathBuf {
    let target = data.join(format!("v{version}.yaml"));
    write_file(&target, text);
    let next = link.with_extension("link");
    std::os::unix::fs::symlink(&target, &next).expect("symlink");
    std::fs::rename(&next, link).expect("swap the symlink");
    target
}

/// Queries `web.shop.svc.cluster.local` A back to back from one thread until stopped, keeping
/// the TTL last seen and counting queries and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ttl: Arc<AtomicU32>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(svcnet: &Svcnet) -> Self {
        let (stop, ttl) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let server = svcnet.dns;
        let name = Name::from_ascii("web.shop.svc.cluster.local.").unwrap();
        let thread = {
            let (stop, ttl, sent, failed) = (stop.clone(), ttl.clone(), sent.clone(), failed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match query_sync(
                        server,
                        &name,
                        RecordType::A,
                        Transport::Udp,
                        Duration::from_secs(1),
                    ) {
                        Ok(reply) if !reply.answers.is_empty() => {
                            ttl.store(reply.answers[0].ttl, Ordering::Relaxed)
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Bounded: a steady load, not a flood.
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            stop,
            ttl,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Waits until answers carry `ttl`, failing after [`APPLIED_WITHIN`].
    fn wait_ttl(&self, ttl: u32, svcnet: &Svcnet, what: &str) {
        let deadline = Instant::now() + APPLIED_WITHIN;
        while self.ttl.load(Ordering::Relaxed) != ttl {
            assert!(
                Instant::now() < deadline,
                "{what}: answers still carry TTL {} after {APPLIED_WITHIN:?}, want {ttl}:\n{}",
                self.ttl.load(Ordering::Relaxed),
                svcnet.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the load; returns (queries sent, queries without an answer).
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("load thread");
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn config_changes_apply_without_dropping_a_query() {
    // The file svcnet is given is a symlink; the files it points to live elsewhere, where a
    // write is seen by no watch: only SIGHUP can make svcnet read it.
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = dir.path().join("svcnet.yaml");
    swap_config(&config, data.path(), 30, "dns-ttl: 30\n");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let config_arg = config.display().to_string();
    let svcnet = Svcnet::start_manifests(
        env!("CARGO_BIN_EXE_svcnet"),
        &manifests,
        &["--config", &config_arg, "--upstreams="],
    );
    let load = Load::start(&svcnet);
    load.wait_ttl(30, &svcnet, "start");

    swap_config(&config, data.path(), 7, "dns-ttl: 7\n");
    load.wait_ttl(7, &svcnet, "file change");

    let invalid = swap_config(&config, data.path(), 0, "dns-ttl: many\n");
    let deadline = Instant::now() + APPLIED_WITHIN;
    while !svcnet
        .log()
        .contains("invalid configuration, keeping the running one")
    {
        assert!(
            Instant::now() < deadline,
            "invalid file not reported:\n{}",
            svcnet.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        load.ttl.load(Ordering::Relaxed),
        7,
        "the invalid file changed the TTL"
    );

    // Fixed behind the link, unseen by the watch: the TTL stays until SIGHUP.
    write_file(&invalid, "dns-ttl: 9\n");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(load.ttl.load(Ordering::Relaxed), 7, "reloaded without a reason");
    let pid = svcnet.pid().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(status.success());
    load.wait_ttl(9, &svcnet, "SIGHUP");

    let (sent, failed) = load.stop();
    assert_eq!(
        failed,
        0,
        "{failed} of {sent} queries unanswered:\n{}",
        svcnet.log()
    );
    println!("reload: {sent} queries during three reloads, none lost");
    assert!(svcnet.log().contains("SIGHUP received"), "{}", svcnet.log());
}

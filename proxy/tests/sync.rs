//! The sync loop against a stand-in for nft that records each transaction in a file (no root
//! needed): when it syncs, full or partial, and how it coalesces and retries.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use svcnet_proxy::{Backend, NftCommand, Proxy, SyncPeriods};

use crate::common::*;

/// A directory of recorded transactions; a file `fail` in it makes the next run fail. Each
/// transaction is written aside and moved in whole, so a test never reads half of one.
struct Recorder {
    dir: tempfile::TempDir,
}

impl Recorder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tx")).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn nft(&self) -> NftCommand {
        let d = self.path().display();
        let script = format!(
            "if [ -e {d}/fail ]; then rm {d}/fail; cat >/dev/null; echo refused >&2; exit 1; fi; \
             n=$(ls {d}/tx | wc -l); cat > {d}/part && mv {d}/part {d}/tx/$(printf %03d $n)"
        );
        NftCommand {
            program: PathBuf::from("sh"),
            args_prefix: vec!["-c".into(), script, "fake-nft".into()],
        }
    }

    fn transactions(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.path().join("tx"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<String> {
        for _ in 0..200 {
            let txs = self.transactions();
            if txs.len() >= count {
                return txs;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {count} transactions: {:#?}", self.transactions());
    }
}

fn is_full(tx: &str) -> bool {
    tx.starts_with("add table ip svcnet\ndelete table ip svcnet\n")
}

fn start(recorder: &Recorder, min: Duration) -> (svcnet_cluster::Publisher, tokio::task::JoinHandle<()>) {
    let (publisher, reader) = svcnet_cluster::channel();
    let periods = SyncPeriods {
        min,
        full: Duration::from_secs(3600),
    };
    let proxy = Proxy::new(node(&[], &[]), Backend::Apply(recorder.nft()), periods);
    (publisher, tokio::spawn(proxy.run(reader)))
}

#[tokio::test]
async fn nothing_before_the_first_synced_snapshot_then_full_then_partial() {
    let recorder = Recorder::new();
    let (publisher, task) = start(&recorder, Duration::from_millis(10));

    let mut unsynced = web(&["10.244.1.1"]);
    unsynced.synced = false;
    publisher.publish(unsynced);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        recorder.transactions().is_empty(),
        "synced before the first complete listing"
    );

    publisher.publish(web(&["10.244.1.1"]));
    let txs = recorder.wait_for(1).await;
    assert!(is_full(&txs[0]), "{}", txs[0]);
    assert!(
        txs[0].contains("10.96.0.1 . tcp . 80 . 0 : 10.244.1.1 . 8080"),
        "{}",
        txs[0]
    );

    publisher.publish(web(&["10.244.1.2"]));
    let txs = recorder.wait_for(2).await;
    assert!(!is_full(&txs[1]), "{}", txs[1]);
    assert!(
        txs[1].contains("10.96.0.1 . tcp . 80 . 0 : 10.244.1.2 . 8080"),
        "{}",
        txs[1]
    );

    // A snapshot that changes nothing for the proxy sends nothing.
    publisher.publish(web(&["10.244.1.2"]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(recorder.transactions().len(), 2);

    drop(publisher);
    task.await.unwrap();
}

#[tokio::test]
async fn a_burst_within_the_minimum_period_is_one_transaction() {
    let recorder = Recorder::new();
    let (publisher, task) = start(&recorder, Duration::from_millis(500));
    publisher.publish(web(&["10.244.1.1"]));
    recorder.wait_for(1).await;
    for n in 2..=6 {
        publisher.publish(web(&[&format!("10.244.1.{n}")]));
    }
    let txs = recorder.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(recorder.transactions().len(), 2, "{:#?}", recorder.transactions());
    // Straight to the last state.
    assert!(txs[1].contains(": 10.244.1.6 . 8080"), "{}", txs[1]);
    assert!(!txs[1].contains("10.244.1.3"), "{}", txs[1]);
    drop(publisher);
    task.await.unwrap();
}

#[tokio::test]
async fn after_a_failure_the_next_sync_is_a_full_replace() {
    let recorder = Recorder::new();
    let (publisher, task) = start(&recorder, Duration::from_millis(10));
    publisher.publish(web(&["10.244.1.1"]));
    recorder.wait_for(1).await;

    std::fs::write(recorder.path().join("fail"), "").unwrap();
    publisher.publish(web(&["10.244.1.2"]));
    // The failed attempt records nothing; the retry (after about a second) is full.
    let txs = recorder.wait_for(2).await;
    assert!(!recorder.path().join("fail").exists(), "the failing run happened");
    assert!(is_full(&txs[1]), "{}", txs[1]);
    assert!(txs[1].contains(": 10.244.1.2 . 8080"), "{}", txs[1]);

    // Then partial again.
    publisher.publish(web(&["10.244.1.3"]));
    let txs = recorder.wait_for(3).await;
    assert!(!is_full(&txs[2]), "{}", txs[2]);
    drop(publisher);
    task.await.unwrap();
}

#[tokio::test]
async fn dry_run_calls_no_program() {
    let (publisher, reader) = svcnet_cluster::channel();
    let periods = SyncPeriods {
        min: Duration::from_millis(10),
        full: Duration::from_secs(3600),
    };
    let proxy = Proxy::new(node(&[], &[]), Backend::DryRun, periods);
    let task = tokio::spawn(proxy.run(reader));
    publisher.publish(web(&["10.244.1.1"]));
    publisher.publish(web(&["10.244.1.2"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(publisher);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

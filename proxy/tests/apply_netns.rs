//! Applying in a network namespace: full replace, partial sync, a failing transaction that
//! leaves the tables as they were, and recovery by full replace; first transaction by
//! transaction, then through the sync loop. Needs root.

use std::time::{Duration, Instant};

use svcnet_proxy::{Backend, Desired, NftError, Proxy, SyncPeriods, diff::diff, ruleset};

use crate::{
    common::*,
    nft_netns::{contents, reference},
};

#[tokio::test]
async fn a_failed_transaction_changes_nothing_and_a_full_replace_recovers() {
    let netns = Netns::new();
    let nft = netns.nft();
    let a = web_state(&["10.244.1.1"]);
    let b = web_state(&["10.244.1.1", "10.244.1.2"]);
    let c = web_state(&["10.244.1.3"]);

    nft.apply(&ruleset::full(&a)).await.unwrap();
    assert_eq!(contents(&netns), reference(&a).await);
    nft.apply(&diff(&a, &b).unwrap()).await.unwrap();
    let listed_b = netns.list(&["table", "ip", "svcnet"]);
    assert_eq!(contents(&netns), reference(&b).await);

    // Transactions computed from a wrong idea of the tables fail whole: one deleting an
    // element that is not there (slot 2), one adding over an element that holds other data
    // (slot 1). Both also hold changes that alone would succeed; none of them sticks.
    let three = web_state(&["10.244.1.1", "10.244.1.2", "10.244.1.5"]);
    let other = web_state(&["10.244.1.1", "10.244.1.9"]);
    for tx in [diff(&three, &a).unwrap(), diff(&a, &other).unwrap()] {
        let error = nft.apply(&tx).await.unwrap_err();
        assert!(matches!(error, NftError::Failed { .. }), "{error:?}\n{tx}");
        assert!(error.to_string().contains("nft failed"), "{error}");
        assert_eq!(
            netns.list(&["table", "ip", "svcnet"]),
            listed_b,
            "a refused transaction changed the table:\n{tx}"
        );
    }

    nft.apply(&ruleset::full(&c)).await.unwrap();
    assert_eq!(contents(&netns), reference(&c).await);
    // The full replace also dropped the chains c does not use.
    let listed = netns.list(&["table", "ip", "svcnet"]);
    assert!(
        listed.contains("chain lb-tcp-1 ") && !listed.contains("chain lb-tcp-2 "),
        "{listed}"
    );
}

/// Polls until the tables hold `want`, or panics after a few seconds.
async fn wait_for(netns: &Netns, want: &Desired, what: &str) {
    let want = reference(want).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = contents(netns);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: tables hold {got:#?}\nwant {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sync_loop_recovers_from_a_table_changed_behind_its_back() {
    let netns = Netns::new();
    let (publisher, reader) = svcnet_cluster::channel();
    let periods = SyncPeriods {
        min: Duration::from_millis(10),
        full: Duration::from_secs(3600),
    };
    let context = node(&[], &["10.244.0.0/16"]);
    let proxy = Proxy::new(context.clone(), Backend::Apply(netns.nft()), periods);
    let task = tokio::spawn(proxy.run(reader));

    publisher.publish(web(&["10.244.1.1", "10.244.1.2"]));
    wait_for(
        &netns,
        &web_state(&["10.244.1.1", "10.244.1.2"]),
        "first (full) sync",
    )
    .await;

    publisher.publish(web(&["10.244.1.1", "10.244.1.3"]));
    wait_for(&netns, &web_state(&["10.244.1.1", "10.244.1.3"]), "partial sync").await;

    // Someone deletes an element svcnet put there: svcnet's next diff, which deletes that
    // element, fails; the loop then replaces the tables whole.
    let sabotage = "delete element ip svcnet endpoints-tcp { 10.96.0.1 . tcp . 80 . 1 }\n";
    netns
        .nft()
        .run(&["-f", "-"], Some(sabotage))
        .await
        .expect("delete an element by hand");
    publisher.publish(web(&["10.244.1.4"]));
    wait_for(&netns, &web_state(&["10.244.1.4"]), "recovery by full replace").await;

    drop(publisher);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop ends when the publisher is gone")
        .unwrap();
    // Ending the loop leaves the rules in place.
    assert_eq!(contents(&netns), reference(&web_state(&["10.244.1.4"])).await);
}

//! A TCP relay that a test can cut and reconnect: a client behind it (svcnet) loses the API
//! server while the test itself keeps talking to it directly, so that changes and etcd
//! compactions happen during the client's outage.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Relays `127.0.0.1:PORT` to a target; the accept loop stops on drop.
pub struct TcpRelay {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped on every cut; each relayed connection ends when it changes.
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Starts relaying to `target`; needs a Tokio runtime.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0);
        let task = tokio::spawn(accept(listener, target, open.clone(), cuts.clone()));
        Self {
            addr,
            open,
            cuts,
            task,
        }
    }

    /// Closes every relayed connection and closes new ones at once, as a network partition
    /// or a stopped API server would look to the client.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Relays new connections again.
    pub fn reconnect(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, open: Arc<AtomicBool>, cuts: watch::Sender<u64>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        if !open.load(Ordering::SeqCst) {
            continue; // dropped: the client sees the connection closed
        }
        let mut cut = cuts.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

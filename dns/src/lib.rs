//! svcnet's DNS server: the cluster zone answered from the live cluster snapshot, as the
//! Kubernetes DNS specification and CoreDNS's kubernetes plugin define it, and every other name
//! forwarded and cached, as CoreDNS's `forward` and `cache` do in kubeadm's Corefile.
//!
//! [`lookup`] is a pure function from a snapshot and a question to an answer; `forward` sends
//! the rest to the upstreams (`pool`, `upstream`) through the `cache`; `handler` is the hickory
//! glue around both; [`DnsServer`] owns the sockets and the worker threads serving them and
//! checks for forwarding loops; [`DnsMetrics`] are CoreDNS's metrics. `autopath` completes the
//! search walk of this node's Pods server-side; [`DnsReloader`] swaps the configuration that
//! can change while serving.

mod autopath;
mod cache;
mod forward;
mod handler;
mod live;
mod loadbalance;
pub mod lookup;
mod loop_check;
mod metrics;
pub mod names;
mod pool;
mod programming;
mod server;
mod upstream;
pub mod zone;

pub use live::{DnsReloader, NodeDns};
pub use metrics::DnsMetrics;
pub use server::{DnsError, DnsServer};

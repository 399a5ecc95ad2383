//! svcnet's DNS server: the cluster zone answered from the live cluster snapshot, as the
//! Kubernetes DNS specification and CoreDNS's kubernetes plugin define it.
//!
//! [`lookup`] is a pure function from a snapshot and a question to an answer; [`handler`] is
//! the hickory glue around it; [`server`] owns the sockets.

mod handler;
pub mod lookup;
pub mod names;
mod server;
mod upstream;
pub mod zone;

pub use server::{DnsError, DnsServer};

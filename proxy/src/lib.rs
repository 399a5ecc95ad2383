//! svcnet's Service proxy: the node's Service rules in nftables, kube-proxy's job.
//!
//! Each sync computes the [`desired`] state of the rules from a cluster snapshot (a pure
//! function), [`diff`]s it against what was applied last, and loads the difference as one
//! atomic transaction through `nft -f -` ([`apply`]). The table layout is in [`ruleset`]; the
//! nft text comes from the small typed builder in [`nft`]. [`sync`] runs the loop.

pub mod apply;
pub mod conntrack;
pub mod desired;
pub mod diff;
pub mod error;
pub mod health;
pub mod metrics;
pub mod nft;
pub mod node;
pub mod ruleset;
pub mod service_health;
pub mod sync;

pub use apply::NftCommand;
pub use conntrack::ConntrackCommand;
pub use desired::{Desired, desired};
pub use error::NftError;
pub use health::ProxyHealth;
pub use metrics::ProxyMetrics;
pub use node::NodeContext;
pub use service_health::ServiceHealthServers;
pub use sync::{Backend, Proxy, SyncPeriods};

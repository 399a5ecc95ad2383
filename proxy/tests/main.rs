//! The proxy's tests in one binary: the pure parts (desired state, diff, rendered text, the
//! sync loop against a stand-in for nft) run anywhere; `nft_netns` and `apply_netns` load
//! rules with nft and need root, each in network namespaces of their own.

mod apply_netns;
mod common;
mod conntrack;
mod desired;
mod diff;
mod health;
mod nft_netns;
mod render;
mod sync;

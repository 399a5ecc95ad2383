//! svcnet's end-to-end tests, in one binary (one link step). Each module starts the real
//! `svcnet` binary and talks to it the way its users do.

mod apiserver;
mod autopath;
mod cli;
mod conformance;
mod forward;
mod operator;
mod proxy;
mod records;
mod reload;
mod resolvers;

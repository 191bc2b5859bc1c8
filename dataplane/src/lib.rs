//! tapvault's packet path.
//!
//! Frames come from a capture source ([`source`]), are decoded without allocation
//! ([`decode`]), and are handed to flow shards ([`flow`]) keyed by a symmetric flow hash, where
//! the TCP expert analysis runs. The entry point for offline analysis is [`engine::Engine`].
#![deny(missing_docs)]

pub mod decode;
pub mod defrag;
pub mod engine;
pub mod flow;
pub mod host;
pub mod live;
pub mod source;

//! Flow shards: the symmetric key, the per-shard table, and the TCP analysis.

pub mod desc;
mod dns;
pub mod fast;
pub mod key;
pub mod table;
pub mod tcp;

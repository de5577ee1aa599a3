//! The optional RESP (Redis protocol) listener, `HYPERCACHE_RESP_ADDR`: RESP2 commands
//! on the same data and through the same coordinator as the HTTP client API, so a `SET`
//! is a quorum write to the key's owners and a `GET` a read at the configured level.
//!
//! - [`codec`]: framing (pure, bounded, fuzzed).
//! - [`command`]: parsing an argument list into a typed command (pure).
//! - [`conn`]: the accept loop and one task per connection, a mailbox client of the
//!   [`hypercache_actors::NodeHandle`] like the HTTP handlers; it owns no data.

pub mod codec;
pub mod command;
pub mod conn;

pub use conn::{serve, RespContext};

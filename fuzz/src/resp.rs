//! The `resp_decode` target's driver: the RESP decoder and command parser of the
//! server crate, fed the input in chunks.
//!
//! The first byte picks the chunk size (1 to 256 bytes), so one input exercises the
//! decoder's resumption at every split. Each whole command is parsed into a typed
//! command. Checked: no panic; every decoded command has 1 to `MAX_ARGS` arguments,
//! each within its bound; the buffer never holds more than one command's bound plus
//! one chunk; an error ends the stream (as the connection would be closed).

use bytes::BytesMut;
use hypercache_server::resp::codec::{Decoder, Limits, MAX_ARGS, MAX_INLINE_BYTES};
use hypercache_server::resp::command::Command;

/// Small bounds so that the fuzzer reaches them.
pub const LIMITS: Limits = Limits {
    max_bulk: 4096,
    max_command: 16 << 10,
};

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first) + 1;
    let mut decoder = Decoder::new(LIMITS);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty() && args.len() <= MAX_ARGS);
                    let bound = LIMITS.max_bulk.max(MAX_INLINE_BYTES);
                    assert!(args.iter().all(|a| a.len() <= bound));
                    let _ = Command::parse(args);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.len() <= LIMITS.max_command.max(MAX_INLINE_BYTES) + chunk,
            "the buffer grew to {} bytes",
            buf.len()
        );
    }
}

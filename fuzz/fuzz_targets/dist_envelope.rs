//! The peer protocol's decoders on arbitrary bytes: the request envelope a node
//! receives and the reply envelope a sender receives. Never panic; what decodes
//! re-encodes to the same message.
#![no_main]

use hypercache_actors::proto::{decode, decode_envelope, encode, Batch, BatchReply, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = decode_envelope::<Batch>(data) {
        let again = decode_envelope::<Batch>(&encode(&env)).expect("a decoded batch re-decodes");
        assert_eq!(again, env, "a batch does not survive a round trip");
    }
    if let Ok(reply) = decode::<Envelope<BatchReply>>(data) {
        let again: Envelope<BatchReply> =
            decode(&encode(&reply)).expect("a decoded reply re-decodes");
        assert_eq!(again, reply, "a reply does not survive a round trip");
    }
});

//! Feeds arbitrary datagrams to the tracker's decoders: never a panic, and whatever decodes
//! re-encodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troca_proto::tracker::{Answer, Datagram, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Datagram::<Request>::decode(data) {
        let mut again = Vec::new();
        req.encode(&mut again);
        assert_eq!(Datagram::<Request>::decode(&again).expect("re-encoded request decodes"), req);
    }
    if let Ok(ans) = Datagram::<Answer>::decode(data) {
        let mut again = Vec::new();
        ans.encode(&mut again);
        assert_eq!(Datagram::<Answer>::decode(&again).expect("re-encoded answer decodes"), ans);
    }
});

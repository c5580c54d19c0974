//! Feeds arbitrary datagrams to the BEP 15 decoders: never a panic, and whatever decodes
//! re-encodes to the same message (announces past their fixed part aside: options are ignored).
#![no_main]

use libfuzzer_sys::fuzz_target;
use troca_proto::bep15::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        let mut again = Vec::new();
        req.encode(&mut again);
        assert_eq!(Request::decode(&again).expect("re-encoded request decodes"), req);
    }
    for v6 in [false, true] {
        if let Ok(resp) = Response::decode(data, v6) {
            let mut again = Vec::new();
            resp.encode(&mut again);
            assert_eq!(Response::decode(&again, v6).expect("re-encoded response decodes"), resp);
        }
    }
});

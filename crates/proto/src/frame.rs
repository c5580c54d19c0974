//! Framing: `len: u32` (big-endian, counts the kind byte and payload) then `kind: u8` then the
//! payload. An incomplete frame is a normal state, reported as `Ok(None)`.

use crate::codec::DecodeError;
use crate::msg::Message;

/// Bytes before the kind: the `u32` length.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest `len` a frame may declare (kind byte plus payload). Control messages are small; a
/// listing is split over several `Entries` frames to stay under it.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Appends `msg` to `out` as one complete frame.
pub fn encode_frame(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    msg.encode_body(out);
    let len = out.len() - start - FRAME_HEADER_LEN;
    debug_assert!(len <= MAX_FRAME_LEN, "encoded a frame of {len} bytes");
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
}

/// Decodes one frame from the front of `buf`. Returns the message and how many bytes it used,
/// `Ok(None)` when `buf` does not yet hold a whole frame, or an error for a frame that can never
/// become valid (so the caller can reject an oversized length before buffering it).
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::FrameTooLarge(len, MAX_FRAME_LEN));
    }
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    let msg = Message::decode_body(body)?;
    Ok(Some((msg, FRAME_HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::*;

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_an_error() {
        let mut buf = Vec::new();
        encode_frame(
            &Message::Get(Get {
                name: "a/b.txt".into(),
                offset: 7,
            }),
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        let (msg, used) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert!(matches!(msg, Message::Get(g) if g.offset == 7));
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_frame(&buf),
            Err(DecodeError::FrameTooLarge(MAX_FRAME_LEN + 1, MAX_FRAME_LEN))
        );
        // An HTTP request line read as a length is far too large, not "incomplete".
        assert!(matches!(
            decode_frame(b"GET / HTTP/1.1\r\n"),
            Err(DecodeError::FrameTooLarge(..))
        ));
    }

    #[test]
    fn zero_length_and_unknown_kinds_are_errors() {
        assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(DecodeError::EmptyFrame));
        assert_eq!(
            decode_frame(&[0, 0, 0, 1, 0x7e]),
            Err(DecodeError::UnknownKind(0x7e))
        );
    }

    /// The worked example in docs/PROTOCOL.md, byte for byte.
    #[test]
    fn the_protocol_document_example_matches_the_codec() {
        let mut buf = Vec::new();
        encode_frame(
            &Hello {
                magic: crate::MAGIC,
                version: 1,
                client: "bob".into(),
                token: None,
                owner_key: None,
            }
            .into(),
            &mut buf,
        );
        assert_eq!(buf, b"\x00\x00\x00\x0e\x01TRCA\x00\x01\x00\x03bob\x00\x00");
        buf.clear();
        encode_frame(
            &Welcome {
                version: 1,
                server: "troca 0.1.0".into(),
                max_frame: 65536,
            }
            .into(),
            &mut buf,
        );
        assert_eq!(
            buf,
            b"\x00\x00\x00\x14\x81\x00\x01\x00\x0btroca 0.1.0\x00\x01\x00\x00"
        );
        buf.clear();
        encode_frame(&List { prefix: "".into() }.into(), &mut buf);
        assert_eq!(buf, b"\x00\x00\x00\x03\x02\x00\x00");
        buf.clear();
        encode_frame(
            &Get {
                name: "hi.txt".into(),
                offset: 0,
            }
            .into(),
            &mut buf,
        );
        assert_eq!(&buf[..9], b"\x00\x00\x00\x11\x03\x00\x06hi");
        assert_eq!(buf.len(), 4 + 0x11);
        buf.clear();
        encode_frame(
            &FileHeader {
                size: 5,
                offset: 0,
                modified_ns: 0,
            }
            .into(),
            &mut buf,
        );
        assert_eq!(&buf[..5], b"\x00\x00\x00\x19\x83");
        buf.clear();
        encode_frame(&FileEnd { blake3: [0; 32] }.into(), &mut buf);
        assert_eq!(&buf[..5], b"\x00\x00\x00\x21\x84");
    }

    #[test]
    fn two_frames_back_to_back_decode_in_order() {
        let mut buf = Vec::new();
        encode_frame(&Message::List(List { prefix: "x".into() }), &mut buf);
        encode_frame(&Message::Removed(Removed { files: 1 }), &mut buf);
        let (first, n) = decode_frame(&buf).unwrap().unwrap();
        let (second, m) = decode_frame(&buf[n..]).unwrap().unwrap();
        assert_eq!(n + m, buf.len());
        assert!(matches!(first, Message::List(_)));
        assert!(matches!(second, Message::Removed(_)));
    }
}

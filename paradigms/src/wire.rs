//! The edge↔cloud wire protocol (version 1) for a real link: length-prefixed binary frames over
//! TCP. See `docs/network.md`. This module is plain `std` I/O so both the edge (blocking, inside
//! a paradigm) and the cloud worker can share one encoder/decoder.
//!
//! Frame: `u32 length (big-endian, bytes after this field) | u8 kind | body`.

use std::io::{self, Read, Write};

/// Protocol version carried in the handshake; a worker refuses any other.
pub const VERSION: u16 = 1;
/// Largest frame body accepted (64 MiB); a larger length prefix is a protocol error, not an allocation.
pub const MAX_FRAME: u32 = 64 << 20;
/// Magic bytes opening every handshake.
pub const MAGIC: &[u8; 4] = b"IVS1";

/// One message on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Edge → cloud, first frame: magic, version, token (may be empty).
    Hello { version: u16, token: Vec<u8> },
    /// Cloud → edge: handshake accepted.
    Welcome,
    /// Cloud → edge: refused (bad token, bad version) with a reason; the worker then closes.
    Refused { reason: String },
    /// Edge → cloud: one request with an id and the payload bytes the emulated link counts.
    Request { id: u64, payload: Vec<u8> },
    /// Cloud → edge: the answer to `id`, the worker's own compute time, and the output bytes.
    Response {
        id: u64,
        compute_ns: u64,
        payload: Vec<u8>,
    },
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const REQUEST: u8 = 4;
const RESPONSE: u8 = 5;

impl Frame {
    /// The frame's bytes including the length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Frame::Hello { version, token } => {
                body.push(HELLO);
                body.extend_from_slice(MAGIC);
                body.extend_from_slice(&version.to_be_bytes());
                body.extend_from_slice(token);
            }
            Frame::Welcome => body.push(WELCOME),
            Frame::Refused { reason } => {
                body.push(REFUSED);
                body.extend_from_slice(reason.as_bytes());
            }
            Frame::Request { id, payload } => {
                body.push(REQUEST);
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(payload);
            }
            Frame::Response {
                id,
                compute_ns,
                payload,
            } => {
                body.push(RESPONSE);
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&compute_ns.to_be_bytes());
                body.extend_from_slice(payload);
            }
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Parses one frame body (after the length prefix).
    pub fn decode(body: &[u8]) -> io::Result<Frame> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ianvs wire: {m}"));
        let (&kind, rest) = body.split_first().ok_or_else(|| bad("empty frame"))?;
        let u64_at = |b: &[u8], at: usize| -> io::Result<u64> {
            b.get(at..at + 8)
                .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
                .ok_or_else(|| bad("frame too short"))
        };
        match kind {
            HELLO => {
                if rest.len() < 6 || &rest[..4] != MAGIC {
                    return Err(bad("handshake without the IVS1 magic"));
                }
                let version = u16::from_be_bytes([rest[4], rest[5]]);
                Ok(Frame::Hello {
                    version,
                    token: rest[6..].to_vec(),
                })
            }
            WELCOME => Ok(Frame::Welcome),
            REFUSED => Ok(Frame::Refused {
                reason: String::from_utf8_lossy(rest).into_owned(),
            }),
            REQUEST => Ok(Frame::Request {
                id: u64_at(rest, 0)?,
                payload: rest[8..].to_vec(),
            }),
            RESPONSE => Ok(Frame::Response {
                id: u64_at(rest, 0)?,
                compute_ns: u64_at(rest, 8)?,
                payload: rest[16..].to_vec(),
            }),
            k => Err(bad(&format!("unknown frame kind {k} (valid: 1..=5)"))),
        }
    }

    /// Writes the frame.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }

    /// Reads one frame; a length above [`MAX_FRAME`] is refused before allocating.
    pub fn read_from(r: &mut impl Read) -> io::Result<Frame> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ianvs wire: frame length {len} outside 1..={MAX_FRAME}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body)?;
        Frame::decode(&body)
    }
}

/// The worker's handshake check: the version must match and, when a token is required, the
/// token must equal it (compared without early exit).
pub fn check_hello(frame: &Frame, required_token: Option<&[u8]>) -> Result<(), String> {
    let Frame::Hello { version, token } = frame else {
        return Err("first frame is not a handshake".into());
    };
    if *version != VERSION {
        return Err(format!(
            "protocol version {version} not supported (this worker speaks {VERSION})"
        ));
    }
    if let Some(want) = required_token {
        let same = want.len() == token.len()
            && want
                .iter()
                .zip(token)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err("wrong or missing token".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let bytes = f.encode();
        assert_eq!(Frame::read_from(&mut &bytes[..]).unwrap(), f);
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Hello {
            version: VERSION,
            token: b"secret".to_vec(),
        });
        round_trip(Frame::Welcome);
        round_trip(Frame::Refused {
            reason: "wrong or missing token".into(),
        });
        round_trip(Frame::Request {
            id: 7,
            payload: vec![1, 2, 3],
        });
        round_trip(Frame::Response {
            id: 7,
            compute_ns: 1234,
            payload: vec![9; 40],
        });
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let huge = (MAX_FRAME + 1).to_be_bytes();
        let e = Frame::read_from(&mut &huge[..]).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let e = Frame::decode(&[99]).unwrap_err();
        assert!(e.to_string().contains("unknown frame kind 99"), "{e}");
        assert!(Frame::decode(&[HELLO, b'X', b'X', b'X', b'X', 0, 1]).is_err());
    }

    #[test]
    fn handshake_checks_token_and_version() {
        let hello = |t: &[u8]| Frame::Hello {
            version: VERSION,
            token: t.to_vec(),
        };
        assert!(check_hello(&hello(b""), None).is_ok());
        assert!(check_hello(&hello(b"abc"), Some(b"abc")).is_ok());
        assert!(check_hello(&hello(b""), Some(b"abc"))
            .unwrap_err()
            .contains("token"));
        assert!(check_hello(&hello(b"abd"), Some(b"abc")).is_err());
        let old = Frame::Hello {
            version: 0,
            token: vec![],
        };
        assert!(check_hello(&old, None).unwrap_err().contains("version 0"));
        assert!(check_hello(&Frame::Welcome, None).is_err());
    }

    /// A real loopback socket: a listener that requires a token refuses a client without it
    /// (Refused frame) and accepts one with it (Welcome), then answers a request.
    #[test]
    fn loopback_handshake_refuses_missing_token() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let hello = Frame::read_from(&mut s).unwrap();
                match check_hello(&hello, Some(b"tok")) {
                    Err(reason) => Frame::Refused { reason }.write_to(&mut s).unwrap(),
                    Ok(()) => {
                        Frame::Welcome.write_to(&mut s).unwrap();
                        if let Frame::Request { id, payload } = Frame::read_from(&mut s).unwrap() {
                            Frame::Response {
                                id,
                                compute_ns: 1,
                                payload,
                            }
                            .write_to(&mut s)
                            .unwrap();
                        }
                    }
                }
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        Frame::Hello {
            version: VERSION,
            token: vec![],
        }
        .write_to(&mut c)
        .unwrap();
        assert!(matches!(
            Frame::read_from(&mut c).unwrap(),
            Frame::Refused { .. }
        ));
        let mut c = TcpStream::connect(addr).unwrap();
        Frame::Hello {
            version: VERSION,
            token: b"tok".to_vec(),
        }
        .write_to(&mut c)
        .unwrap();
        assert_eq!(Frame::read_from(&mut c).unwrap(), Frame::Welcome);
        Frame::Request {
            id: 3,
            payload: vec![5; 10],
        }
        .write_to(&mut c)
        .unwrap();
        let r = Frame::read_from(&mut c).unwrap();
        assert_eq!(
            r,
            Frame::Response {
                id: 3,
                compute_ns: 1,
                payload: vec![5; 10]
            }
        );
        server.join().unwrap();
    }
}

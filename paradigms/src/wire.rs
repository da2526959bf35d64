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
/// Bytes a `Request` frame adds to its payload: length, kind, id.
pub const REQUEST_HEADER_BYTES: usize = 4 + 1 + 8;
/// Bytes a `Response` frame adds to its payload: length, kind, id, compute time.
pub const RESPONSE_HEADER_BYTES: usize = 4 + 1 + 8 + 8;
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
    /// Edge → cloud, after `Welcome`: what the worker must host (see [`SetupHeader`]): a
    /// little-endian `u32` header length, the JSON header, then the train split (f32 features
    /// then u32 labels, little-endian) when the model is trained.
    Setup { payload: Vec<u8> },
    /// Cloud → edge: the hosted model is ready; a JSON body (parameters, classes, training time, device).
    Ready { json: String },
    /// Edge → cloud: asks for the worker's load.
    StatsQuery,
    /// Cloud → edge: the worker's load as JSON (requests served, queue depth, compute time, connections).
    Stats { json: String },
}

/// The JSON header of a [`Frame::Setup`]: the cloud model's module, its hyperparameters and the
/// data shape, so the worker builds and trains exactly the model the emulated run would.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetupHeader {
    /// Module type (`cloudmodel`) and name, as in the algorithm YAML.
    pub module_type: String,
    pub name: String,
    pub hyperparameters: crate::hp::Hyperparameters,
    pub input_shape: (usize, usize, usize),
    pub num_classes: usize,
    pub seed: u64,
    /// The uplink codec the requests use (`f32`, `u8`, `deflate`).
    pub codec: crate::link::InputCodec,
    /// Train samples that follow the header (0 for a ready-made model) and their dimension.
    pub train_len: usize,
    pub dim: usize,
}

impl SetupHeader {
    /// Encodes the header and the train split into a [`Frame::Setup`] payload.
    pub fn encode(&self, train: Option<&crate::data::Dataset>) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = (json.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        if let Some(t) = train {
            out.reserve(t.features.len() * 4 + t.labels.len() * 4);
            for v in &t.features {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for l in &t.labels {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
        out
    }

    /// Parses a [`Frame::Setup`] payload back into the header and the train split.
    pub fn decode(payload: &[u8]) -> io::Result<(SetupHeader, Option<crate::data::Dataset>)> {
        let bad = |m: String| {
            io::Error::new(io::ErrorKind::InvalidData, format!("ianvs wire: setup {m}"))
        };
        let n = payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("shorter than its header length".into()))?;
        let json = payload
            .get(4..4 + n)
            .ok_or_else(|| bad("header truncated".into()))?;
        let h: SetupHeader =
            serde_json::from_slice(json).map_err(|e| bad(format!("header: {e}")))?;
        let rest = &payload[4 + n..];
        if h.train_len == 0 {
            return Ok((h, None));
        }
        let want = h
            .train_len
            .checked_mul(h.dim + 1)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| bad("train size overflows".into()))?;
        if rest.len() != want {
            return Err(bad(format!(
                "carries {} bytes of train data, expected {want} ({} samples × ({} features + label) × 4)",
                rest.len(),
                h.train_len,
                h.dim
            )));
        }
        let nf = h.train_len * h.dim * 4;
        let features = rest[..nf]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let labels = rest[nf..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let data = crate::data::Dataset {
            dim: h.dim,
            features,
            labels,
            ..Default::default()
        };
        Ok((h, Some(data)))
    }
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const REQUEST: u8 = 4;
const RESPONSE: u8 = 5;
const SETUP: u8 = 6;
const READY: u8 = 7;
const STATS_QUERY: u8 = 8;
const STATS: u8 = 9;

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
            Frame::Setup { payload } => {
                body.push(SETUP);
                body.extend_from_slice(payload);
            }
            Frame::Ready { json } => {
                body.push(READY);
                body.extend_from_slice(json.as_bytes());
            }
            Frame::StatsQuery => body.push(STATS_QUERY),
            Frame::Stats { json } => {
                body.push(STATS);
                body.extend_from_slice(json.as_bytes());
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
            SETUP => Ok(Frame::Setup {
                payload: rest.to_vec(),
            }),
            READY => Ok(Frame::Ready {
                json: String::from_utf8_lossy(rest).into_owned(),
            }),
            STATS_QUERY => Ok(Frame::StatsQuery),
            STATS => Ok(Frame::Stats {
                json: String::from_utf8_lossy(rest).into_owned(),
            }),
            k => Err(bad(&format!("unknown frame kind {k} (valid: 1..=9)"))),
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
        let req = Frame::Request {
            id: 1,
            payload: vec![0; 10],
        };
        assert_eq!(req.encode().len(), REQUEST_HEADER_BYTES + 10);
        let resp = Frame::Response {
            id: 1,
            compute_ns: 0,
            payload: vec![0; 10],
        };
        assert_eq!(resp.encode().len(), RESPONSE_HEADER_BYTES + 10);
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

//! The plug-in wire format, version 1 (docs/plugins.md): length-prefixed frames, each a JSON
//! header followed by raw little-endian tensors with dtype and shape.
//!
//! ```text
//! frame  = u32 header_len | header (UTF-8 JSON) | u32 n_tensors | tensor*
//! tensor = u32 meta_len | meta (JSON {"dtype": "f32", "shape": [n, 784]}) | u64 byte_len | bytes
//! ```
//!
//! With shared memory negotiated in the handshake ([`super::shm`]), a tensor's meta may carry
//! `"shm": offset` instead: its bytes are then at that offset of the shared region and
//! `byte_len` is 0.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::shm::{align, Region, SHM_MIN};

use serde_json::{json, Value};

/// The protocol version this build speaks; a plug-in announcing another is refused.
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest header accepted (a JSON header is small; this only stops a garbage length).
const MAX_HEADER: usize = 64 << 20;
/// Largest tensor accepted (4 GiB).
const MAX_TENSOR: u64 = 4 << 30;
const MAX_TENSORS: u32 = 1024;

/// Element types on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "f32" => DType::F32,
            "f64" => DType::F64,
            "i64" => DType::I64,
            "i32" => DType::I32,
            "u8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::U8 | DType::Bool => 1,
        }
    }
}

/// A dense C-order array as raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> Self {
        let mut data = Vec::with_capacity(v.len() * 4);
        #[cfg(target_endian = "little")]
        {
            // SAFETY: an f32 slice viewed as its bytes (no padding; u8 has alignment 1); on a
            // little-endian target these are the wire bytes.
            data.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            });
        }
        #[cfg(not(target_endian = "little"))]
        for x in v {
            data.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DType::F32,
            shape,
            data,
        }
    }
    pub fn from_i64(shape: Vec<usize>, v: &[i64]) -> Self {
        let mut data = Vec::with_capacity(v.len() * 8);
        for x in v {
            data.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DType::I64,
            shape,
            data,
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every element as f64, whatever the wire type.
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.data;
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as f64).collect(),
        }
    }
    pub fn is_integer(&self) -> bool {
        matches!(
            self.dtype,
            DType::I64 | DType::I32 | DType::U8 | DType::Bool
        )
    }
}

/// A tensor placed once for the life of a plug-in child ([`super::process::PluginProcess::place`])
/// and referenced by later calls without being copied again: in the shared region, or (for a
/// child without shared memory) kept by ianvs and sent inline each time. [`Placed::rows`]
/// references a slice of it along the first axis (a batch of a test set).
#[derive(Debug, Clone)]
pub struct Placed {
    pub dtype: DType,
    pub shape: Vec<usize>,
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Region { offset: usize, generation: u64 },
    Local { bytes: Arc<Vec<u8>>, start: usize },
}

impl Placed {
    pub(crate) fn in_region(t: &Tensor, offset: usize, generation: u64) -> Self {
        Placed {
            dtype: t.dtype,
            shape: t.shape.clone(),
            store: Store::Region { offset, generation },
        }
    }
    pub(crate) fn local(t: Tensor) -> Self {
        Placed {
            dtype: t.dtype,
            shape: t.shape,
            store: Store::Local {
                bytes: Arc::new(t.data),
                start: 0,
            },
        }
    }
    /// True when the bytes are in the shared region (false: sent inline on each call).
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Region { .. })
    }
    fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
    /// Rows `range` (first axis) of this tensor, without copying.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Placed {
        let n = self.shape.first().copied().unwrap_or(0);
        assert!(
            range.start <= range.end && range.end <= n,
            "rows {range:?} of {n}"
        );
        let row = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = range.len();
        let store = match &self.store {
            Store::Region { offset, generation } => Store::Region {
                offset: offset + range.start * row,
                generation: *generation,
            },
            Store::Local { bytes, start } => Store::Local {
                bytes: bytes.clone(),
                start: start + range.start * row,
            },
        };
        Placed {
            dtype: self.dtype,
            shape,
            store,
        }
    }
}

/// A call's tensor argument: bytes to send (owned, or borrowed from the caller so that the
/// only copy is the one into the pipe or the shared region), or a placed tensor.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Tensor(Tensor),
    Borrowed {
        dtype: DType,
        shape: Vec<usize>,
        bytes: &'a [u8],
    },
    Placed(Placed),
}

impl<'a> Arg<'a> {
    /// `v` as an f32 tensor of `shape`, without copying it here.
    pub fn f32(shape: Vec<usize>, v: &'a [f32]) -> Self {
        #[cfg(target_endian = "little")]
        {
            // SAFETY: an f32 slice viewed as its bytes (no padding; u8 has alignment 1); on a
            // little-endian target these are the wire bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            };
            Arg::Borrowed {
                dtype: DType::F32,
                shape,
                bytes,
            }
        }
        #[cfg(not(target_endian = "little"))]
        Arg::Tensor(Tensor::from_f32(shape, v))
    }
}

impl Arg<'_> {
    /// The bytes of a tensor sent by value (empty for a placed one).
    fn bytes(&self) -> &[u8] {
        match self {
            Arg::Tensor(t) => &t.data,
            Arg::Borrowed { bytes, .. } => bytes,
            Arg::Placed(_) => &[],
        }
    }
}

impl From<Tensor> for Arg<'_> {
    fn from(t: Tensor) -> Self {
        Arg::Tensor(t)
    }
}

impl From<Placed> for Arg<'_> {
    fn from(p: Placed) -> Self {
        Arg::Placed(p)
    }
}

/// One message: a JSON header and its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Value,
    pub tensors: Vec<Tensor>,
}

impl Frame {
    pub fn new(header: Value) -> Self {
        Frame {
            header,
            tensors: vec![],
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes one frame, every tensor inline (not flushed).
pub fn write_frame(w: &mut impl Write, f: &Frame) -> io::Result<()> {
    let args: Vec<Arg> = f.tensors.iter().cloned().map(Arg::Tensor).collect();
    write_call(w, f.header.clone(), &args, None)
}

fn write_meta(
    w: &mut impl Write,
    dtype: DType,
    shape: &[usize],
    shm: Option<usize>,
) -> io::Result<()> {
    // Written by hand: the meta is tiny and on every tensor of every call.
    let mut m = format!("{{\"dtype\":\"{}\",\"shape\":[", dtype.name());
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            m.push(',');
        }
        m += &d.to_string();
    }
    m.push(']');
    if let Some(off) = shm {
        m += &format!(",\"shm\":{off}");
    }
    m.push('}');
    w.write_all(&(m.len() as u32).to_le_bytes())?;
    w.write_all(m.as_bytes())
}

/// Writes one frame (not flushed). With a `region` (shared memory negotiated), tensors of at
/// least [`SHM_MIN`] bytes are copied to the region's scratch area and sent as offsets, placed
/// tensors are sent as their offsets, and the header gains `shm_free`: where the child may
/// write its reply tensors. Without one, everything is inline.
pub fn write_call(
    w: &mut impl Write,
    mut header: Value,
    args: &[Arg<'_>],
    region: Option<&mut Region>,
) -> io::Result<()> {
    // Where each tensor goes: `Some(offset)` in the region, `None` inline.
    let mut at = Vec::with_capacity(args.len());
    if let Some(r) = region {
        let mut free = r.scratch_start();
        for a in args {
            at.push(match a {
                Arg::Tensor(_) | Arg::Borrowed { .. } => {
                    let bytes = a.bytes();
                    (bytes.len() >= SHM_MIN)
                        .then(|| {
                            let off = align(free);
                            r.write_at(off, bytes)?;
                            free = off + bytes.len();
                            Ok::<_, io::Error>(off)
                        })
                        .transpose()?
                }
                Arg::Placed(p) => match p.store {
                    Store::Region { offset, generation } => {
                        if generation != r.generation() {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "a placed tensor was used after the placed tensors were cleared",
                            ));
                        }
                        Some(offset)
                    }
                    Store::Local { .. } => None,
                },
            });
        }
        header["shm_free"] = json!(align(free));
    } else {
        for a in args {
            if let Arg::Placed(Placed {
                store: Store::Region { .. },
                ..
            }) = a
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a tensor placed in shared memory sent to a child without it",
                ));
            }
            at.push(None);
        }
    }
    let h = serde_json::to_vec(&header)?;
    w.write_all(&(h.len() as u32).to_le_bytes())?;
    w.write_all(&h)?;
    w.write_all(&(args.len() as u32).to_le_bytes())?;
    for (a, off) in args.iter().zip(at) {
        let (dtype, shape, bytes): (DType, &[usize], &[u8]) = match a {
            Arg::Tensor(t) => (t.dtype, &t.shape, &t.data),
            Arg::Borrowed {
                dtype,
                shape,
                bytes,
            } => (*dtype, shape, bytes),
            Arg::Placed(p) => match &p.store {
                Store::Local { bytes, start } => {
                    (p.dtype, &p.shape, &bytes[*start..start + p.byte_len()])
                }
                Store::Region { .. } => (p.dtype, &p.shape, &[]),
            },
        };
        write_meta(w, dtype, shape, off)?;
        if off.is_some() {
            w.write_all(&0u64.to_le_bytes())?;
        } else {
            w.write_all(&(bytes.len() as u64).to_le_bytes())?;
            w.write_all(bytes)?;
        }
    }
    Ok(())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_bytes(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Reads one frame; a malformed one (bad lengths, bad JSON, a tensor whose bytes do not match
/// its dtype and shape) is `InvalidData`, a closed stream `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    read_frame_shm(r, None)
}

/// [`read_frame`], where a tensor may be in the shared `region` (copied out of it).
pub fn read_frame_shm(r: &mut impl Read, mut region: Option<&mut Region>) -> io::Result<Frame> {
    let hl = read_u32(r)? as usize;
    if hl > MAX_HEADER {
        return Err(bad(format!(
            "header of {hl} bytes (is something else printing to stdout?)"
        )));
    }
    let header: Value = serde_json::from_slice(&read_bytes(r, hl)?)
        .map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let n = read_u32(r)?;
    if n > MAX_TENSORS {
        return Err(bad(format!("{n} tensors in one frame")));
    }
    let mut tensors = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let ml = read_u32(r)? as usize;
        if ml > 1 << 16 {
            return Err(bad(format!("tensor meta of {ml} bytes")));
        }
        let meta: Value = serde_json::from_slice(&read_bytes(r, ml)?)
            .map_err(|e| bad(format!("tensor meta is not JSON: {e}")))?;
        let dtype = meta["dtype"]
            .as_str()
            .and_then(DType::parse)
            .ok_or_else(|| {
                bad(format!(
                    "tensor dtype {} is not one of f32 f64 i64 i32 u8 bool",
                    meta["dtype"]
                ))
            })?;
        let shape: Vec<usize> = meta["shape"]
            .as_array()
            .ok_or_else(|| bad("tensor shape is not a list"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("tensor shape holds a non-integer"))?;
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        let bl = u64::from_le_bytes(b);
        if bl > MAX_TENSOR {
            return Err(bad(format!("tensor of {bl} bytes")));
        }
        let want = shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
            .filter(|&w| w <= MAX_TENSOR)
            .ok_or_else(|| bad(format!("tensor of shape {shape:?} is too large")))?;
        let inline = meta["shm"].is_null();
        if inline && want != bl {
            return Err(bad(format!(
                "tensor of shape {shape:?} and dtype {} has {bl} bytes",
                dtype.name()
            )));
        }
        if !inline && bl != 0 {
            return Err(bad(format!(
                "tensor in shared memory with {bl} bytes inline (byte_len must be 0)"
            )));
        }
        let data = match &meta["shm"] {
            Value::Null => read_bytes(r, bl as usize)?,
            off => {
                let off = off
                    .as_u64()
                    .ok_or_else(|| bad(format!("tensor shm offset {off} is not an integer")))?;
                let region = region.as_deref_mut().ok_or_else(|| {
                    bad("a tensor in shared memory, but none was negotiated".to_string())
                })?;
                region.read_at(off as usize, want as usize)?.to_vec()
            }
        };
        tensors.push(Tensor { dtype, shape, data });
    }
    Ok(Frame { header, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_exact_bytes() {
        let f = Frame {
            header: json!({"op": "call", "method": "predict"}),
            tensors: vec![
                Tensor::from_f32(vec![2, 2], &[1.0, -2.5, 0.0, 3.25]),
                Tensor::from_i64(vec![3], &[7, -1, 0]),
            ],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).unwrap();
        // The first tensor's bytes are the little-endian f32s, verbatim.
        let want: Vec<u8> = [1.0f32, -2.5, 0.0, 3.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert!(buf.windows(16).any(|w| w == want.as_slice()));
        let back = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.tensors[0].to_f64(), vec![1.0, -2.5, 0.0, 3.25]);
        assert_eq!(back.tensors[1].to_f64(), vec![7.0, -1.0, 0.0]);
    }

    #[test]
    fn a_tensor_whose_bytes_do_not_match_its_shape_is_refused() {
        let mut f = Frame::new(json!({}));
        f.tensors.push(Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]));
        f.tensors[0].shape = vec![4];
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).unwrap();
        let e = read_frame(&mut buf.as_slice()).unwrap_err();
        assert!(e.to_string().contains("shape [4]"), "{e}");
    }

    #[test]
    fn large_tensors_cross_as_offsets_in_the_region_and_small_ones_inline() {
        let mut r = Region::create().unwrap();
        let big = Tensor::from_f32(vec![10, 1000], &vec![1.5; 10_000]);
        let small = Tensor::from_i64(vec![3], &[1, -2, 3]);
        let mut buf = Vec::new();
        let args = [Arg::from(big.clone()), Arg::from(small.clone())];
        write_call(&mut buf, json!({"op": "call"}), &args, Some(&mut r)).unwrap();
        assert!(buf.len() < 200, "the 40 kB tensor is not in the frame");
        assert!(String::from_utf8_lossy(&buf).contains(r#""shm":0}"#));
        let f = read_frame_shm(&mut buf.as_slice(), Some(&mut r)).unwrap();
        assert_eq!(f.header["shm_free"], 40_000);
        assert_eq!(f.tensors, vec![big.clone(), small]);
        // A borrowed slice is the same frame as the owned tensor, inline and in the region.
        let v = vec![1.5f32; 10_000];
        for region in [None, Some(&mut r)] {
            let shm = region.is_some();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut region = region;
            write_call(
                &mut a,
                json!({}),
                &[big.clone().into()],
                region.as_deref_mut(),
            )
            .unwrap();
            write_call(&mut b, json!({}), &[Arg::f32(vec![10, 1000], &v)], region).unwrap();
            assert_eq!(a, b, "shm {shm}");
        }
        // Without a region such a frame is malformed, not misread.
        let e = read_frame(&mut buf.as_slice()).unwrap_err();
        assert!(e.to_string().contains("none was negotiated"), "{e}");
        // A placed tensor is sent as its offset; its rows as offsets inside it.
        let (off, g) = r.place(&big.data).unwrap();
        let p = Placed::in_region(&big, off, g);
        let mut buf = Vec::new();
        write_call(&mut buf, json!({}), &[p.rows(2..4).into()], Some(&mut r)).unwrap();
        let f = read_frame_shm(&mut buf.as_slice(), Some(&mut r)).unwrap();
        assert_eq!(f.tensors[0], Tensor::from_f32(vec![2, 1000], &[1.5; 2000]));
        assert!(String::from_utf8_lossy(&buf).contains(&format!(r#""shm":{}}}"#, off + 8000)));
    }

    #[test]
    fn a_closed_stream_is_eof_and_garbage_is_invalid() {
        let e = read_frame(&mut [1u8, 0].as_slice()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = read_frame(&mut b"Traceback (most recent call last)".as_slice()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}

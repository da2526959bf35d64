//! The slice of the protobuf wire format that ONNX files need: a writer for building
//! `ModelProto`s (export) and a reader that walks fields (counting a model's weights).
//!
//! Field numbers follow `onnx/onnx.proto` (ONNX 1.x); only what the exporter emits is named in
//! `export.rs`. Repeated scalars are written unpacked, which every protobuf parser accepts for
//! proto2 files like onnx.proto.

/// A protobuf message being written.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pb(pub Vec<u8>);

const VARINT: u8 = 0;
const LEN: u8 = 2;

impl Pb {
    pub fn new() -> Self {
        Self::default()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }

    /// An int32/int64/enum field (negative values as 10-byte two's complement, as protobuf does).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        self.varint(v as u64);
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn msg(&mut self, field: u32, m: &Pb) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// One field of a message being read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8]),
    Fixed32,
}

/// The fields of one message, in order. Errors on truncated or malformed input.
pub(crate) fn fields(mut b: &[u8]) -> Result<Vec<(u32, Field<'_>)>, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = (key >> 3) as u32;
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..).ok_or("truncated fixed64")?;
                Field::Fixed64
            }
            2 => {
                let n = varint(&mut b)? as usize;
                let v = b.get(..n).ok_or("truncated length-delimited field")?;
                b = &b[n..];
                Field::Len(v)
            }
            5 => {
                b = b.get(4..).ok_or("truncated fixed32")?;
                Field::Fixed32
            }
            w => return Err(format!("unsupported wire type {w} (field {field})")),
        };
        out.push((field, f));
    }
    Ok(out)
}

/// Number of weight values stored in a serialized `ModelProto`: the product of the `dims` of
/// every floating-point `graph.initializer` (integer ones are shapes and indices, not weights).
/// Fails when the bytes are not a model with a graph.
pub(crate) fn initializer_elements(model: &[u8]) -> Result<usize, String> {
    let graph = fields(model)?
        .into_iter()
        .find_map(|(n, f)| match (n, f) {
            (7, Field::Len(g)) => Some(g),
            _ => None,
        })
        .ok_or("no graph")?;
    let mut total = 0usize;
    for (n, f) in fields(graph)? {
        let (5, Field::Len(tensor)) = (n, f) else {
            continue;
        };
        let mut dims: Vec<u64> = Vec::new();
        let mut data_type = 0;
        for (tn, tf) in fields(tensor)? {
            match (tn, tf) {
                (1, Field::Varint(d)) => dims.push(d),
                (2, Field::Varint(t)) => data_type = t,
                // Packed dims, as protobuf-python writes them for proto3 files.
                (1, Field::Len(packed)) => {
                    let mut rest = packed;
                    while !rest.is_empty() {
                        let mut v = 0u64;
                        let mut shift = 0;
                        loop {
                            let (&byte, r) = rest.split_first().ok_or("truncated packed dims")?;
                            rest = r;
                            v |= ((byte & 0x7f) as u64) << shift;
                            shift += 7;
                            if byte & 0x80 == 0 {
                                break;
                            }
                        }
                        dims.push(v);
                    }
                }
                _ => {}
            }
        }
        // FLOAT, FLOAT16, DOUBLE, BFLOAT16.
        if matches!(data_type, 1 | 10 | 11 | 16) {
            total += dims.iter().product::<u64>() as usize;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_through_the_reader() {
        let mut m = Pb::new();
        m.int(1, 300).int(2, -1).str(3, "hi");
        m.0.extend_from_slice(&[0x25, 0, 0, 0xc0, 0x3f]); // field 4, fixed32 1.5
                                                          // 300 = 0b1_0010_1100 → ac 02; -1 → ten bytes.
        assert_eq!(&m.0[..3], &[0x08, 0xac, 0x02]);
        let f = fields(&m.0).unwrap();
        assert!(matches!(f[0], (1, Field::Varint(300))));
        assert!(matches!(f[1], (2, Field::Varint(u64::MAX))));
        assert!(matches!(f[2], (3, Field::Len(b"hi"))));
        assert!(matches!(f[3], (4, Field::Fixed32)));
        assert!(fields(&m.0[..m.0.len() - 1]).is_err());
    }

    #[test]
    fn counts_initializer_elements_packed_or_not() {
        let mut t1 = Pb::new();
        t1.int(1, 3).int(1, 4).int(2, 1);
        let mut t2 = Pb::new();
        t2.bytes(1, &[2, 5]).int(2, 1); // packed dims [2, 5]
        let mut shape = Pb::new();
        shape.int(1, 4).int(2, 7); // an int64 shape constant: not a weight
        let mut g = Pb::new();
        g.msg(5, &t1).msg(5, &t2).msg(5, &shape).str(2, "g");
        let mut model = Pb::new();
        model.int(1, 8).msg(7, &g);
        assert_eq!(initializer_elements(&model.0).unwrap(), 22);
        assert!(initializer_elements(b"\x08\x08").is_err());
    }
}

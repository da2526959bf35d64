//! The emulated edge↔cloud link: round-trip time with jitter, uplink and downlink bandwidth,
//! and the payload codecs that decide how many bytes cross it.
//!
//! One request/response between the edge and the cloud is an [`Exchange`]: its round-trip time
//! is drawn once (`rtt ± jitter`, uniform, clamped at zero — like netem's default `delay RTT
//! JITTER`), half of it is charged to each direction, and each direction adds its payload's
//! transmission time `bytes · 8 / bandwidth`. In [`Timing::Virtual`] those durations are only
//! computed (fast, deterministic for a seed); in [`Timing::Sleep`] the calling thread really
//! sleeps for them and the measured wall time is reported, so end-to-end latencies include the
//! scheduler's real behaviour.
//!
//! Paradigms own the flow and call the link at the points where data crosses it, e.g.
//!
//! ```
//! use ianvs_paradigms::link::{Link, LinkSpec, Timing};
//! let mut link = Link::new(LinkSpec { rtt_ms: 20.0, jitter_ms: 0.0, uplink_mbps: 8.0, downlink_mbps: 80.0, timing: Timing::Virtual, seed: 0 });
//! let mut ex = link.exchange();
//! let up = ex.up(1000);      // 10 ms propagation + 1 ms transmission
//! let down = ex.down(10_000); // 10 ms propagation + 1 ms transmission
//! assert!((up.seconds - 0.011).abs() < 1e-12 && (down.seconds - 0.011).abs() < 1e-12);
//! ```

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::hp::{HpKind, HpSpec, Hyperparameters};

/// How link time is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    /// Link durations are computed and added to measured compute times; nothing waits.
    Virtual,
    /// The caller's thread sleeps for each link duration; reported times are measured.
    Sleep,
}

impl Timing {
    pub const NAMES: &'static [&'static str] = &["virtual", "sleep"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "virtual" => Some(Timing::Virtual),
            "sleep" => Some(Timing::Sleep),
            _ => None,
        }
    }
}

/// The parameters of one emulated link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Mean round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Each exchange's RTT is uniform in `[rtt − jitter, rtt + jitter]` (never below 0).
    pub jitter_ms: f64,
    /// Edge → cloud bandwidth, megabits per second.
    pub uplink_mbps: f64,
    /// Cloud → edge bandwidth, megabits per second.
    pub downlink_mbps: f64,
    pub timing: Timing,
    /// Seeds the jitter draws.
    pub seed: u64,
}

/// Why a [`LinkSpec`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link `{name}` must be a finite number of at least {min}, got {value}")]
    Range {
        name: &'static str,
        min: f64,
        value: f64,
    },
    #[error("link timing \"{0}\" is not one of virtual, sleep")]
    Timing(String),
    #[error(transparent)]
    Hp(#[from] crate::hp::HpError),
}

impl LinkSpec {
    /// Checks ranges (the hyperparameter specs already do for YAML; this guards library callers).
    pub fn validate(&self) -> Result<(), LinkError> {
        let check = |name, min: f64, value: f64, strict: bool| {
            let ok = value.is_finite() && if strict { value > min } else { value >= min };
            if ok {
                Ok(())
            } else {
                Err(LinkError::Range { name, min, value })
            }
        };
        check("rtt_ms", 0.0, self.rtt_ms, false)?;
        check("jitter_ms", 0.0, self.jitter_ms, false)?;
        check("uplink_mbps", 0.0, self.uplink_mbps, true)?;
        check("downlink_mbps", 0.0, self.downlink_mbps, true)
    }

    /// Reads a link from resolved hyperparameters named as in [`link_hps`].
    pub fn from_hps(h: &Hyperparameters) -> Result<Self, LinkError> {
        let timing = h.str("timing")?;
        let spec = LinkSpec {
            rtt_ms: h.float("rtt_ms")?,
            jitter_ms: h.float("jitter_ms")?,
            uplink_mbps: h.float("uplink_mbps")?,
            downlink_mbps: h.float("downlink_mbps")?,
            timing: Timing::parse(timing).ok_or_else(|| LinkError::Timing(timing.to_string()))?,
            seed: h.u64("seed")?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The defaults of [`link_hps`] (a wired LAN), with the given jitter seed.
    pub fn lan(seed: u64) -> Self {
        LinkSpec {
            rtt_ms: 1.0,
            jitter_ms: 0.0,
            uplink_mbps: 100.0,
            downlink_mbps: 100.0,
            timing: Timing::Virtual,
            seed,
        }
    }
}

/// Hyperparameters of a link module: what `ianvs list modules` shows and YAML may set.
pub fn link_hps() -> Vec<HpSpec> {
    vec![
        HpSpec::new("rtt_ms", HpKind::Float { min: 0.0, max: 600_000.0 }, json!(1.0), "mean round-trip time between edge and cloud, milliseconds"),
        HpSpec::new("jitter_ms", HpKind::Float { min: 0.0, max: 600_000.0 }, json!(0.0), "each exchange's RTT is uniform in [rtt − jitter, rtt + jitter], clamped at 0"),
        HpSpec::new("uplink_mbps", HpKind::Float { min: 1e-6, max: 1e6 }, json!(100.0), "edge → cloud bandwidth, Mbit/s"),
        HpSpec::new("downlink_mbps", HpKind::Float { min: 1e-6, max: 1e6 }, json!(100.0), "cloud → edge bandwidth, Mbit/s"),
        HpSpec::new("timing", HpKind::Choice(Timing::NAMES), json!("virtual"), "virtual: add modelled link time to measured compute time (fast); sleep: really wait for it"),
        HpSpec::new("seed", HpKind::Int { min: 0, max: i64::MAX }, None, "seeds the jitter draws (default: the job seed)"),
    ]
}

/// One direction of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    pub bytes: usize,
    /// Propagation (half the exchange's RTT) plus transmission; measured in sleep mode.
    pub seconds: f64,
}

/// An emulated link. Not `Sync`: each test case owns one, so jitter draws are reproducible.
#[derive(Debug, Clone)]
pub struct Link {
    spec: LinkSpec,
    rng: ChaCha8Rng,
}

impl Link {
    pub fn new(spec: LinkSpec) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(spec.seed);
        Self { spec, rng }
    }

    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    /// Starts one request/response: draws its round-trip time.
    pub fn exchange(&mut self) -> Exchange<'_> {
        let j = self.spec.jitter_ms;
        let jitter = if j > 0.0 {
            self.rng.random_range(-j..=j)
        } else {
            0.0
        };
        let rtt_s = (self.spec.rtt_ms + jitter).max(0.0) / 1e3;
        Exchange {
            spec: &self.spec,
            rtt_s,
        }
    }

    /// Seconds to transmit `bytes` at `mbps` (no propagation).
    pub fn transmission_s(bytes: usize, mbps: f64) -> f64 {
        bytes as f64 * 8.0 / (mbps * 1e6)
    }
}

/// One request/response over a [`Link`]: call [`Exchange::up`] when the request leaves the
/// edge and [`Exchange::down`] when the answer leaves the cloud.
#[derive(Debug)]
pub struct Exchange<'a> {
    spec: &'a LinkSpec,
    /// This exchange's round-trip time (jitter included), seconds.
    pub rtt_s: f64,
}

impl Exchange<'_> {
    /// Edge → cloud: half the RTT plus `bytes` at the uplink bandwidth.
    pub fn up(&mut self, bytes: usize) -> Hop {
        self.hop(bytes, self.spec.uplink_mbps)
    }

    /// Cloud → edge: half the RTT plus `bytes` at the downlink bandwidth.
    pub fn down(&mut self, bytes: usize) -> Hop {
        self.hop(bytes, self.spec.downlink_mbps)
    }

    fn hop(&self, bytes: usize, mbps: f64) -> Hop {
        let modelled = self.rtt_s / 2.0 + Link::transmission_s(bytes, mbps);
        let seconds = match self.spec.timing {
            Timing::Virtual => modelled,
            Timing::Sleep => {
                let t0 = Instant::now();
                std::thread::sleep(Duration::from_secs_f64(modelled));
                t0.elapsed().as_secs_f64()
            }
        };
        Hop { bytes, seconds }
    }
}

/// How an input sample (a vector of f32) is serialized before it crosses the link. The cloud
/// decodes what it received, so a lossy codec really changes what the cloud model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputCodec {
    /// 4 bytes per value, little-endian.
    F32,
    /// 8-byte header (min, max as f32) then one byte per value: `round((x − min) / (max − min) · 255)`.
    /// Exact for 8-bit images scaled by 255; lossy in general.
    U8,
    /// The f32 bytes compressed with DEFLATE (zlib framing, default level). Lossless.
    Deflate,
}

/// A payload that cannot be decoded (truncated or corrupt).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode a {codec:?} payload of {len} bytes: {reason}")]
pub struct CodecError {
    pub codec: InputCodec,
    pub len: usize,
    pub reason: String,
}

impl InputCodec {
    pub const NAMES: &'static [&'static str] = &["f32", "u8", "deflate"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(InputCodec::F32),
            "u8" => Some(InputCodec::U8),
            "deflate" => Some(InputCodec::Deflate),
            _ => None,
        }
    }

    pub fn encode(self, x: &[f32]) -> Vec<u8> {
        match self {
            InputCodec::F32 => f32_bytes(x),
            InputCodec::U8 => {
                let (lo, hi) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                let (lo, hi) = if x.is_empty() { (0.0, 0.0) } else { (lo, hi) };
                let mut out = Vec::with_capacity(8 + x.len());
                out.extend_from_slice(&lo.to_le_bytes());
                out.extend_from_slice(&hi.to_le_bytes());
                let span = hi - lo;
                out.extend(x.iter().map(|&v| {
                    if span > 0.0 {
                        ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8
                    } else {
                        0
                    }
                }));
                out
            }
            InputCodec::Deflate => {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                // Writing into a Vec cannot fail.
                let _ = enc.write_all(&f32_bytes(x));
                enc.finish().unwrap_or_default()
            }
        }
    }

    pub fn decode(self, bytes: &[u8]) -> Result<Vec<f32>, CodecError> {
        let err = |reason: String| CodecError {
            codec: self,
            len: bytes.len(),
            reason,
        };
        match self {
            InputCodec::F32 => {
                from_f32_bytes(bytes).ok_or_else(|| err("length is not a multiple of 4".into()))
            }
            InputCodec::U8 => {
                if bytes.len() < 8 {
                    return Err(err("shorter than its 8-byte header".into()));
                }
                let lo = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let hi = f32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                let span = hi - lo;
                Ok(bytes[8..]
                    .iter()
                    .map(|&q| lo + q as f32 / 255.0 * span)
                    .collect())
            }
            InputCodec::Deflate => {
                let mut raw = Vec::new();
                flate2::read::ZlibDecoder::new(bytes)
                    .read_to_end(&mut raw)
                    .map_err(|e| err(e.to_string()))?;
                from_f32_bytes(&raw)
                    .ok_or_else(|| err("decompressed length is not a multiple of 4".into()))
            }
        }
    }
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_f32_bytes(b: &[u8]) -> Option<Vec<f32>> {
    b.len().is_multiple_of(4).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The cloud's answer as it crosses the downlink: the class (u32) and its probability (f32),
/// little-endian, 8 bytes.
pub fn encode_answer(class: u32, confidence: f32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&class.to_le_bytes());
    out[4..].copy_from_slice(&confidence.to_le_bytes());
    out
}

pub fn decode_answer(b: &[u8; 8]) -> (u32, f32) {
    (
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(timing: Timing) -> LinkSpec {
        LinkSpec {
            rtt_ms: 40.0,
            jitter_ms: 0.0,
            uplink_mbps: 1.0,
            downlink_mbps: 10.0,
            timing,
            seed: 7,
        }
    }

    #[test]
    fn virtual_time_is_propagation_plus_transmission() {
        let mut link = Link::new(spec(Timing::Virtual));
        let mut ex = link.exchange();
        assert_eq!(ex.rtt_s, 0.04);
        // 3136 bytes (one MNIST sample as f32) at 1 Mbit/s: 25.088 ms, plus 20 ms.
        let up = ex.up(3136);
        assert!((up.seconds - (0.02 + 0.025088)).abs() < 1e-12, "{up:?}");
        let down = ex.down(8);
        assert!(
            (down.seconds - (0.02 + 64.0 / 10e6)).abs() < 1e-12,
            "{down:?}"
        );
    }

    #[test]
    fn jitter_stays_in_range_is_seeded_and_never_negative() {
        let s = LinkSpec {
            rtt_ms: 10.0,
            jitter_ms: 30.0,
            ..spec(Timing::Virtual)
        };
        let draws = |seed| {
            let mut l = Link::new(LinkSpec { seed, ..s.clone() });
            (0..500).map(|_| l.exchange().rtt_s).collect::<Vec<_>>()
        };
        let a = draws(1);
        assert_eq!(a, draws(1));
        assert_ne!(a, draws(2));
        assert!(a.iter().all(|&r| (0.0..=0.04).contains(&r)));
        // Clamping at zero: about a third of the draws (−20..0 ms of −20..40) become 0.
        let zeros = a.iter().filter(|&&r| r == 0.0).count();
        assert!((100..240).contains(&zeros), "{zeros}");
        let spread = a.iter().cloned().fold(0.0, f64::max);
        assert!(spread > 0.035, "{spread}");
    }

    #[test]
    fn sleep_mode_really_waits() {
        let mut link = Link::new(LinkSpec {
            rtt_ms: 20.0,
            ..spec(Timing::Sleep)
        });
        let t0 = Instant::now();
        let mut ex = link.exchange();
        let up = ex.up(0);
        let down = ex.down(0);
        let wall = t0.elapsed().as_secs_f64();
        assert!(
            up.seconds >= 0.01 && down.seconds >= 0.01,
            "{up:?} {down:?}"
        );
        assert!(wall >= 0.02 && (up.seconds + down.seconds) <= wall + 1e-9);
    }

    #[test]
    fn codecs_round_trip() {
        let x: Vec<f32> = (0..784)
            .map(|i| {
                if i % 7 == 0 {
                    (i % 256) as f32 / 255.0
                } else {
                    0.0
                }
            })
            .collect();
        for codec in [InputCodec::F32, InputCodec::Deflate, InputCodec::U8] {
            let bytes = codec.encode(&x);
            let back = codec.decode(&bytes).unwrap();
            assert_eq!(back.len(), x.len());
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() <= 1e-6, "{codec:?}: {a} vs {b}");
            }
        }
        assert_eq!(InputCodec::F32.encode(&x).len(), 3136);
        assert_eq!(InputCodec::U8.encode(&x).len(), 792);
        assert!(InputCodec::Deflate.encode(&x).len() < 1500);
        assert!(InputCodec::F32.decode(&[1, 2, 3]).is_err());
        assert!(InputCodec::U8.decode(&[1, 2]).is_err());
        assert!(InputCodec::Deflate.decode(&[1, 2, 3]).is_err());
        assert_eq!(decode_answer(&encode_answer(7, 0.25)), (7, 0.25));
    }

    #[test]
    fn spec_from_hps_and_validation() {
        let mut h = Hyperparameters::default();
        for spec in link_hps() {
            h.0.insert(spec.name.into(), spec.default.unwrap_or(json!(3)));
        }
        let s = LinkSpec::from_hps(&h).unwrap();
        assert_eq!(
            s,
            LinkSpec {
                seed: 3,
                ..LinkSpec::lan(0)
            }
        );
        assert!(LinkSpec {
            uplink_mbps: 0.0,
            ..s.clone()
        }
        .validate()
        .is_err());
        assert!(LinkSpec {
            rtt_ms: f64::NAN,
            ..s
        }
        .validate()
        .is_err());
    }
}

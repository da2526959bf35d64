//! Turning logits into token choices. The math is shared with the paradigms that decode
//! (speculative decoding verifies with exactly these functions), so it lives in
//! [`ianvs_paradigms::sampling`] and is re-exported here.

pub use ianvs_paradigms::sampling::*;

//! The key/value cache, owned by the caller so it can be truncated, reset or cloned (forked).
//!
//! Two layouts, matching the two attention implementations in `model.rs`:
//! - host (CPU): per layer one growable `Vec<f32>` for keys and one for values, laid out
//!   position-major (`[pos][kv_head][head_dim]`) so appending is `extend_from_slice` and
//!   truncating is `Vec::truncate`, with no reallocation of the whole cache per token;
//! - tensor (any device): per layer `[1, kv_heads, len, head_dim]` tensors grown with
//!   `Tensor::cat` and cut with `narrow`.

use candle_core::Tensor;

use super::error::{LlmError, Result};

/// Per-layer key/value storage.
#[derive(Debug, Clone)]
pub(crate) enum LayerKv {
    Host {
        k: Vec<f32>,
        v: Vec<f32>,
    },
    Tensor {
        k: Option<Tensor>,
        v: Option<Tensor>,
    },
}

/// Cached keys and values of every layer for the tokens seen so far.
///
/// Create it with [`crate::llm::LlmModel::new_cache`]; a cache only works with the model that
/// created it. `Clone` gives an independent copy (a fork of the sequence).
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    len: usize,
    /// Floats per position per layer: `kv_heads * head_dim`.
    pub(crate) kv_dim: usize,
    /// Identity of the model that created the cache.
    pub(crate) owner: u64,
}

impl KvCache {
    pub(crate) fn new(n_layers: usize, kv_dim: usize, host: bool, owner: u64) -> Self {
        let layer = if host {
            LayerKv::Host {
                k: Vec::new(),
                v: Vec::new(),
            }
        } else {
            LayerKv::Tensor { k: None, v: None }
        };
        Self {
            layers: vec![layer; n_layers],
            len: 0,
            kv_dim,
            owner,
        }
    }

    /// Number of cached positions (tokens already fed to the model).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` positions and forgets the rest (e.g. rejected draft tokens).
    ///
    /// Errors when `len` is larger than the current length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(LlmError::Cache(format!(
                "cannot truncate a cache of {} tokens to {len} tokens",
                self.len
            )));
        }
        self.cut_layers(len)?;
        self.len = len;
        Ok(())
    }

    /// Forgets every position, keeping the allocated host memory for reuse.
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            match layer {
                LayerKv::Host { k, v } => {
                    k.clear();
                    v.clear();
                }
                LayerKv::Tensor { k, v } => {
                    *k = None;
                    *v = None;
                }
            }
        }
        self.len = 0;
    }

    /// Called by the model once every layer has appended `n` positions.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Undoes a partial forward pass: layers may have appended before an error.
    pub(crate) fn rollback(&mut self) -> Result<()> {
        self.cut_layers(self.len)
    }

    fn cut_layers(&mut self, len: usize) -> Result<()> {
        let floats = len * self.kv_dim;
        for layer in &mut self.layers {
            match layer {
                LayerKv::Host { k, v } => {
                    k.truncate(floats);
                    v.truncate(floats);
                }
                LayerKv::Tensor { k, v } => {
                    if len == 0 {
                        *k = None;
                        *v = None;
                    } else {
                        for t in [k, v] {
                            if let Some(cur) = t.as_ref() {
                                if cur.dim(2)? > len {
                                    *t = Some(cur.narrow(2, 0, len)?);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_and_reset_host() -> Result<()> {
        let mut c = KvCache::new(2, 3, true, 1);
        for layer in &mut c.layers {
            if let LayerKv::Host { k, v } = layer {
                k.extend_from_slice(&[1.0; 12]);
                v.extend_from_slice(&[2.0; 12]);
            }
        }
        c.commit(4);
        assert_eq!(c.len(), 4);
        assert!(c.truncate(5).is_err());
        c.truncate(1)?;
        assert_eq!(c.len(), 1);
        for layer in &c.layers {
            if let LayerKv::Host { k, v } = layer {
                assert_eq!((k.len(), v.len()), (3, 3));
            }
        }
        c.reset();
        assert!(c.is_empty());
        Ok(())
    }
}

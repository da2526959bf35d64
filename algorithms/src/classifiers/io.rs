//! Saving and loading a [`Classifier`] as one safetensors file whose `__metadata__` holds the
//! architecture, input shape and number of classes, so a file is self-describing.

use super::{Architecture, Classifier, ClassifierError, Result};
use candle_core::safetensors::Load;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The `__metadata__` key that holds [`Header`] as JSON.
const METADATA_KEY: &str = "ianvs.classifier";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format_version: u32,
    architecture: Architecture,
    input_shape: (usize, usize, usize),
    num_classes: usize,
}

impl Classifier {
    /// Writes the weights (f32) and a description of the model to `path` as safetensors. The
    /// file is written to a temporary sibling and renamed, so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = Header {
            format_version: FORMAT_VERSION,
            architecture: self.architecture().clone(),
            input_shape: self.input_shape(),
            num_classes: self.num_classes(),
        };
        let json = serde_json::to_string(&header).map_err(|e| ClassifierError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
        let tensors = self.snapshot()?;
        safetensors::serialize_to_file(
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(metadata),
            path,
        )
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(source) => ClassifierError::Io {
                action: "write",
                path: path.to_path_buf(),
                source,
            },
            other => ClassifierError::Format {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })
    }

    /// Reads a classifier written by [`Classifier::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let format_err = |reason: String| ClassifierError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|source| ClassifierError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format_err(format!("not a safetensors file ({e})")))?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| format_err(format!("not a safetensors file ({e})")))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| format_err(format!("its metadata has no {METADATA_KEY:?} entry")))?;
        let header: Header = serde_json::from_str(json)
            .map_err(|e| format_err(format!("bad {METADATA_KEY:?} metadata: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(format_err(format!(
                "format version {} is not supported (this build reads version {FORMAT_VERSION})",
                header.format_version
            )));
        }
        let mut load_error = None;
        let model = Classifier::from_tensors(
            header.architecture,
            header.input_shape,
            header.num_classes,
            |name| match st.tensor(name).map(|view| view.load(device)) {
                Ok(Ok(t)) => Some(t),
                Ok(Err(e)) => {
                    load_error = Some(e);
                    None
                }
                Err(_) => None,
            },
            device,
        );
        if let Some(e) = load_error {
            return Err(e.into());
        }
        model.map_err(|e| match e {
            ClassifierError::Parameter { .. } | ClassifierError::InvalidModel(_) => {
                format_err(e.to_string())
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Architecture::Cnn {
            conv_channels: (2, 3),
            fc_hidden: 8,
        };
        let m = Classifier::new(arch, (1, 12, 12), 4, 5, &Device::Cpu).unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path).unwrap();
        let back = Classifier::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.architecture(), m.architecture());
        assert_eq!(back.input_shape(), (1, 12, 12));
        assert_eq!(back.num_classes(), 4);
        let x: Vec<f32> = (0..2 * 144).map(|i| (i % 7) as f32 / 7.0).collect();
        assert_eq!(
            back.predict_proba(&x).unwrap(),
            m.predict_proba(&x).unwrap()
        );

        // Missing file, not safetensors, safetensors without our metadata.
        let err = Classifier::load(&dir.path().join("nope"), &Device::Cpu).unwrap_err();
        assert!(matches!(err, ClassifierError::Io { .. }), "{err}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        let err = Classifier::load(&junk, &Device::Cpu).unwrap_err();
        assert!(matches!(err, ClassifierError::Format { .. }), "{err}");
        let plain = dir.path().join("plain.safetensors");
        m.var_map().save(&plain).unwrap();
        let err = Classifier::load(&plain, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
        // Weights that do not fit the header.
        let wrong = dir.path().join("wrong.safetensors");
        let header = r#"{"format_version":1,"architecture":{"type":"mlp","hidden":[]},"input_shape":[1,12,12],"num_classes":4}"#;
        let meta = HashMap::from([(METADATA_KEY.to_string(), header.to_string())]);
        let snap = m.snapshot().unwrap();
        safetensors::serialize_to_file(
            snap.iter().map(|(n, t)| (n.as_str(), t)),
            Some(meta),
            &wrong,
        )
        .unwrap();
        let err = Classifier::load(&wrong, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("fc0.weight"), "{err}");
    }
}

//! The `testenv.dataset` section: which files, how to read them (data loading itself lives in
//! `ianvs_paradigms::data`), the split, the input shape and class count.

use std::sync::Arc;

use ianvs_paradigms::data::{self, Dataset, LabelColumn, LoadOptions, SplitMethod};
use ianvs_paradigms::DataSplits;

use super::keys::*;
use super::walker::*;
use super::yaml::{Node, NodeKind};

pub(super) fn read_dataset(w: &mut Walker, node: &Node) -> Option<DataSplits> {
    let p = "testenv.dataset";
    let f = w.map(node, p, DATASET_KEYS, DATASET_UNSUPPORTED)?;
    let errors_before = w.diags.len();
    let mut opts = LoadOptions::default();
    if let Some(l) = f.get("label") {
        opts.label = match &l.kind {
            NodeKind::Int(i) if *i >= 0 => LabelColumn::Index(*i as usize),
            NodeKind::Str(s) => LabelColumn::parse(s),
            _ => {
                w.expected(
                    l,
                    &format!("{p}.label"),
                    "a column name, a 0-based column index, `first` or `last`",
                );
                LabelColumn::Last
            }
        };
    }
    if let Some(s) = f.get("feature_scale") {
        match &s.kind {
            NodeKind::Int(i) if *i > 0 => opts.feature_scale = *i as f32,
            NodeKind::Float(x) if *x > 0.0 => opts.feature_scale = *x as f32,
            _ => w.expected(
                s,
                &format!("{p}.feature_scale"),
                "a positive number (each feature is divided by it)",
            ),
        }
    }
    if let Some(n) = f.get("num_classes") {
        match &n.kind {
            NodeKind::Int(i) if *i >= 1 && *i <= u32::MAX as i64 => {
                opts.num_classes = Some(*i as u32)
            }
            _ => w.expected(
                n,
                &format!("{p}.num_classes"),
                "a positive integer (labels run from 0 to num_classes - 1)",
            ),
        }
    }
    if let Some(t) = f.get("text_field") {
        opts.text_field = w.string(t, &format!("{p}.text_field"));
    }
    let mut shape = None;
    if let Some(s) = f.get("shape") {
        match s.to_json().as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .filter(|v| *v > 0)
                .map(|v| v as usize)
                .collect::<Vec<_>>()
        }) {
            Some(v) if v.len() == 3 => shape = Some((v[0], v[1], v[2])),
            _ => w.expected(
                s,
                &format!("{p}.shape"),
                "a list of three positive integers [channels, height, width]",
            ),
        }
    }

    let key_of = |a: &str, b: &str| {
        if f.get(a).is_some() {
            Some(a.to_string())
        } else if f.get(b).is_some() {
            Some(b.to_string())
        } else {
            None
        }
    };
    let train_key = key_of("train_data", "train_index")
        .or_else(|| f.get("train_url").map(|_| "train_url".to_string()));
    let test_key = key_of("test_data", "test_index")
        .or_else(|| f.get("test_url").map(|_| "test_url".to_string()));
    for pair in [
        ["train_data", "train_index"],
        ["test_data", "test_index"],
        ["train_index", "train_url"],
        ["test_index", "test_url"],
    ] {
        if let (Some(_), Some(b)) = (f.get(pair[0]), f.get(pair[1])) {
            w.err(
                Some(b.mark),
                &format!("{p}.{}", pair[1]),
                format!("give either `{}` or `{}`, not both", pair[0], pair[1]),
            );
        }
    }
    let load = |w: &mut Walker, key: &str| -> Option<Dataset> {
        let n = f.get(key)?;
        let path = w.existing_path(n, &format!("{p}.{key}"))?;
        if (key.ends_with("_index") || key.ends_with("_url"))
            && data::Format::of(&path) != Some(data::Format::Index)
        {
            w.err(Some(n.mark), &format!("{p}.{key}"), format!("`{key}` naming {} is not supported yet: ianvs reads index files as .txt with `<sample path> <label>` lines (Ianvs's JSON annotation indexes are not read)", path.display()));
            return None;
        }
        match data::load(&path, &opts) {
            Ok(d) => Some(d),
            Err(e) => {
                w.err(
                    Some(n.mark),
                    &format!("{p}.{key}"),
                    format!("cannot load `{key}`: {e}"),
                );
                None
            }
        }
    };
    let (train, test) = match (&train_key, &test_key, f.get("data")) {
        (None, None, Some(_)) => {
            let all = load(w, "data");
            let mut method = SplitMethod::Interleaved;
            let mut fraction = 0.2;
            let mut seed = 0u64;
            if let Some(s) = f.get("split") {
                let sp = format!("{p}.split");
                if let Some(sf) = w.map(s, &sp, &["method", "test_fraction", "seed"], &[]) {
                    if let Some(m) = sf.get("method") {
                        if let Some(ms) = w.string(m, &format!("{sp}.method")) {
                            match SplitMethod::parse(&ms) {
                                Some(x) => method = x,
                                None => {
                                    w.err(
                                        Some(m.mark),
                                        &format!("{sp}.method"),
                                        format!("split method \"{ms}\" is not valid"),
                                    )
                                    .choices(&ms, SplitMethod::NAMES);
                                }
                            }
                        }
                    }
                    if let Some(t) = sf.get("test_fraction") {
                        match &t.kind {
                            NodeKind::Float(x) if *x > 0.0 && *x < 1.0 => fraction = *x,
                            _ => {
                                w.err(Some(t.mark), &format!("{sp}.test_fraction"), format!("`{sp}.test_fraction` must be a number strictly between 0 and 1, found {}", t.to_json()));
                            }
                        }
                    }
                    if let Some(s) = sf.get("seed") {
                        match &s.kind {
                            NodeKind::Int(i) if *i >= 0 => seed = *i as u64,
                            _ => w.expected(s, &format!("{sp}.seed"), "a non-negative integer"),
                        }
                    }
                }
            }
            match all {
                Some(d) => {
                    let (tr, te) = data::split(&d, method, fraction, seed);
                    (Some(tr), Some(te))
                }
                None => (None, None),
            }
        }
        (_, _, Some(d)) => {
            w.err(Some(d.mark), &format!("{p}.data"), "give either `data` (one file, split by `split`) or separate train/test files, not both");
            (None, None)
        }
        (tr, te, None) => {
            if let Some(s) = f.get("split") {
                w.err(
                    Some(s.mark),
                    &format!("{p}.split"),
                    "`split` only applies to a single `data` file",
                );
            }
            // `test_data_info` was already reported as not supported yet.
            if te.is_none()
                && !w
                    .diags
                    .items
                    .iter()
                    .any(|d| d.path == "testenv.dataset.test_data_info")
            {
                w.err(Some(f.mark), p, "`testenv.dataset` needs test data: `test_data`, `test_index`, or one `data` file with a `split`");
            }
            (
                tr.as_ref().and_then(|k| load(w, k)),
                te.as_ref().and_then(|k| load(w, k)),
            )
        }
    };
    if w.diags.len() > errors_before {
        return None;
    }
    let test = test?;
    // Undecoded index-file samples (images ianvs does not read) have no features to compare:
    // they reach plug-ins as paths, and built-in modules refuse them in the preflight.
    let undecoded =
        test.undecoded().is_some() || train.as_ref().is_some_and(|t| t.undecoded().is_some());
    if let Some(tr) = &train {
        if tr.dim != test.dim && !undecoded {
            w.err(
                Some(f.mark),
                p,
                format!(
                    "train samples have {} features but test samples have {}",
                    tr.dim, test.dim
                ),
            );
            return None;
        }
    }
    let dim = test.dim;
    let input_shape = match shape {
        Some((c, h, wd)) => {
            if c * h * wd != dim && !undecoded {
                w.err(
                    f.get("shape").map(|n| n.mark),
                    &format!("{p}.shape"),
                    format!(
                        "shape [{c}, {h}, {wd}] holds {} values but each sample has {dim}",
                        c * h * wd
                    ),
                );
                return None;
            }
            (c, h, wd)
        }
        None => {
            // A square single-channel image when the feature count is a perfect square
            // (MNIST 784 = 28²), otherwise flat features.
            let side = (dim as f64).sqrt().round() as usize;
            if side * side == dim && side > 1 {
                (1, side, side)
            } else {
                (1, 1, dim)
            }
        }
    };
    let num_classes = train
        .as_ref()
        .map_or(0, |t| t.num_classes())
        .max(test.num_classes())
        .max(opts.num_classes.unwrap_or(0) as usize);
    Some(DataSplits {
        train: train.map(Arc::new),
        test: Arc::new(test),
        input_shape,
        num_classes,
    })
}

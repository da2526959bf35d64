//! Atomic file writes shared by every crate: a uniquely named temporary file in the target's
//! folder, synced, then renamed over the final name, so a reader sees the old content or all of
//! the new, never a prefix, and two writers never share a temporary.
//!
//! Named here rather than by `tempfile`, whose errors append the temporary's name and whose
//! files are owner-only.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (unique temporary sibling, fsync, rename). On failure the
/// temporary is removed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = unique_name(parent_of(path), path, ".tmp", |p| {
        OpenOptions::new().write(true).create_new(true).open(p)
    })?;
    let r = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Calls `write` on a fresh, uniquely named sibling of `path` (for writers that only take a
/// path, such as `safetensors::save`), then renames it into place. On failure the temporary
/// is removed and `write`'s error, or the I/O error turned into `E` by `io_err`, is returned.
pub fn atomic_write_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io_err: impl FnOnce(&Path, std::io::Error) -> E,
) -> Result<(), E> {
    let (tmp, f) = match unique_name(parent_of(path), path, ".tmp", |p| {
        OpenOptions::new().write(true).create_new(true).open(p)
    }) {
        Ok(x) => x,
        Err(e) => return Err(io_err(path, e)),
    };
    drop(f);
    let r = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_err(path, e)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Creates `.<name of target>.<pid>-<n><suffix>` in `dir` with `create` (which must fail when
/// the name exists), trying the next `n` on a clash. pid + counter make the name unique between
/// processes and threads; `create_new` makes it safe even against a leftover file.
pub fn unique_name<T>(
    dir: &Path,
    target: &Path,
    suffix: &str,
    create: impl Fn(&Path) -> std::io::Result<T>,
) -> std::io::Result<(PathBuf, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".{name}.{}-{n}{suffix}", std::process::id()));
        match create(&p) {
            Ok(t) => return Ok((p, t)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        let io = |_: &Path, e: std::io::Error| e;
        atomic_write_with(&p, |t| std::fs::write(t, b"three"), io).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let failed = atomic_write_with(&p, |_| Err(std::io::Error::other("boom")), io);
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }
}

//! Safe writes into a job folder: atomic files (a uniquely named temporary file in the target's
//! folder, synced, then renamed over the final name; named here rather than by `tempfile`, whose
//! errors append the temporary's name and whose files are owner-only) and the advisory lock that keeps two ianvs
//! processes from writing the same job at once.
//!
//! Why unique temporary names: two renders of one job used to share `leaderboard.tmp` for
//! `leaderboard.md` and `leaderboard.json`, so one process renamed the other's bytes into place.
//! Why a lock as well: unique names stop torn files, not two runs doing every case twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` so that `path` is either its old content or all of `bytes`, never a
/// prefix: a temporary file named uniquely in the same folder, fsynced, renamed into place.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    let (tmp, mut f) = unique_name(dir, path, ".tmp", |p| {
        OpenOptions::new().write(true).create_new(true).open(p)
    })
    .with_context(|| format!("cannot write {}", path.display()))?;
    let r = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `.<name of target>.<pid>-<n>.<suffix>` in `dir` with `create` (which must fail when
/// the name exists), trying the next `n` on a clash. pid + counter make the name unique between
/// processes and threads; `create_new` makes it safe even against a leftover file.
fn unique_name<T>(
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

/// A new, uniquely named hidden folder beside `final_dir` to fill and then move into place with
/// [`commit_dir`]. Unique, so two writers of the same name never share it.
pub fn staging_dir(final_dir: &Path) -> Result<PathBuf> {
    let parent = parent_of(final_dir);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let (p, ()) = unique_name(parent, final_dir, ".partial", |p| std::fs::create_dir(p))
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    Ok(p)
}

/// Writes one file into a staging folder, synced (the folder is renamed into place afterwards,
/// so the file itself need not be atomic).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Moves a filled staging folder to `final_dir`, replacing what was there. On failure the
/// staging folder is removed, so no half-written folder is left behind under any name.
pub fn commit_dir(staging: &Path, final_dir: &Path) -> Result<()> {
    let r = (|| {
        if final_dir.exists() {
            std::fs::remove_dir_all(final_dir)
                .with_context(|| format!("cannot replace {}", final_dir.display()))?;
        }
        std::fs::rename(staging, final_dir)
            .with_context(|| format!("cannot move {} into place", final_dir.display()))?;
        if let Ok(d) = File::open(parent_of(final_dir)) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(staging);
    }
    r
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The lock file inside a job folder. Hidden, so result collection skips it.
pub const LOCK_FILE: &str = ".ianvs.lock";

/// An exclusive advisory lock on a job folder, held until dropped (or the process ends: the OS
/// releases it, so a killed run never leaves a stale lock).
#[derive(Debug)]
pub struct JobLock {
    file: File,
}

/// Another process holds the job folder's lock.
#[derive(Debug, thiserror::Error)]
#[error("{job} is in use by another ianvs process ({holder}); wait for it to finish, or pass --wait to queue behind it")]
pub struct Locked {
    pub job: String,
    pub holder: String,
}

impl JobLock {
    /// Takes the lock on `job_dir` (created if missing), recording this process's pid and command
    /// line in it. Without `wait`, a held lock is an immediate [`Locked`] error naming the
    /// holder; with `wait`, blocks until the holder ends.
    pub fn acquire(job_dir: &Path, wait: bool) -> Result<JobLock> {
        std::fs::create_dir_all(job_dir)
            .with_context(|| format!("cannot create {}", job_dir.display()))?;
        let path = job_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "pid unknown".to_string(),
                    h => h.to_string(),
                };
                if !wait {
                    return Err(Locked {
                        job: job_dir.display().to_string(),
                        holder,
                    }
                    .into());
                }
                eprintln!(
                    "waiting for {} ({holder}) to release {}",
                    job_dir.display(),
                    path.display()
                );
                fs4::FileExt::lock(&file)
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let cmd: Vec<String> = std::env::args().collect();
        let who = format!("pid {}: {}", std::process::id(), cmd.join(" "));
        // Best effort: the lock itself is what excludes; the text only names the holder.
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(who.as_bytes()))
            .and_then(|_| file.flush());
        Ok(JobLock { file })
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("leaderboard.json");
        atomic_write(&f, b"one").unwrap();
        atomic_write(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        // The same permissions as a file written the plain way (0o666 less the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = d.path().join("plain");
            std::fs::write(&plain, b"x").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&f), mode(&plain));
            std::fs::remove_file(plain).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("leaderboard.json")]);
    }

    #[test]
    fn atomic_write_into_a_missing_folder_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("nope").join("a.md");
        let e = format!("{:#}", atomic_write(&f, b"x").unwrap_err());
        assert!(e.contains("a.md") && e.contains("No such file"), "{e}");
        assert!(
            !e.contains(".a.md.") && !e.contains("at path"),
            "the temporary's name leaks: {e}"
        );
    }

    #[test]
    fn a_second_lock_on_a_job_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let held = JobLock::acquire(d.path(), false).unwrap();
        let e = JobLock::acquire(d.path(), false).unwrap_err();
        let locked = e.downcast_ref::<Locked>().expect("a Locked error");
        assert!(
            locked
                .holder
                .contains(&format!("pid {}", std::process::id())),
            "{}",
            locked.holder
        );
        drop(held);
        JobLock::acquire(d.path(), false).unwrap();
    }

    #[test]
    fn staging_folders_are_unique_and_commit_replaces() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("alg").join("abc");
        let a = staging_dir(&fin).unwrap();
        let b = staging_dir(&fin).unwrap();
        assert_ne!(a, b);
        write_synced(&a.join("m.json"), b"1").unwrap();
        commit_dir(&a, &fin).unwrap();
        write_synced(&b.join("m.json"), b"2").unwrap();
        commit_dir(&b, &fin).unwrap();
        assert_eq!(std::fs::read(fin.join("m.json")).unwrap(), b"2");
        assert!(!a.exists() && !b.exists());
    }
}

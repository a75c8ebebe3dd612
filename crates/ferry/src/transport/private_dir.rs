//! Private directories owned by a host process: `BASE/<prefix><host pid>-<random hex>`,
//! mode 0700, removed with their contents when dropped, and swept at the next start when
//! their host died without removing them (SIGKILL).
//!
//! Used for local socket directories (prefix `ferry-`) and for each worker's private temp
//! folder (prefix `ferry-tmp-`, the worker's `TMPDIR`), so what a killed worker left in
//! its temp folder goes with it.

use std::path::{Path, PathBuf};

/// A private directory, removed (with what is in it) when dropped.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Creates `base/<prefix><pid>-<12 hex digits>` with mode 0700 (and `base` if
    /// missing).
    pub fn create(base: &Path, prefix: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(base)?;
        let path = base.join(unique_name(prefix)?);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?;
        Ok(PrivateDir(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove private directory");
            }
        }
    }
}

fn random_suffix() -> std::io::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `<prefix><this pid>-<random hex>`.
pub(crate) fn unique_name(prefix: &str) -> std::io::Result<String> {
    Ok(format!(
        "{prefix}{}-{}",
        std::process::id(),
        random_suffix()?
    ))
}

/// The host pid in a name made by [`unique_name`] with `prefix`.
fn owner_pid(file_name: &str, prefix: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(prefix)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        None => false,
        // EPERM means it exists (another user's); only ESRCH means gone.
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
    }
}

/// Removes the directories named `<prefix><pid>-<hex>` in `base` that belong to this user
/// and whose host `pid` is gone. Best effort: errors are logged.
#[cfg(unix)]
pub fn remove_stale(base: &Path, prefix: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = rustix::process::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| owner_pid(n, prefix)) else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: never follow a link planted under our prefix.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me || pid_alive(pid) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(dir = %path.display(), pid, "removed stale private directory"),
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove stale private directory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_names_of_its_own_prefix() {
        assert_eq!(owner_pid("ferry-12-abc0", "ferry-"), Some(12));
        assert_eq!(owner_pid("ferry-tmp-12-abc0", "ferry-"), None);
        assert_eq!(owner_pid("ferry-tmp-12-abc0", "ferry-tmp-"), Some(12));
        assert_eq!(owner_pid("ferry-12-xyz", "ferry-"), None);
        assert_eq!(owner_pid("ferry-12-", "ferry-"), None);
    }
}

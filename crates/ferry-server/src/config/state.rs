//! `[state]`: where sessions, batches, API-made workflows and idempotency keys live.

use serde::{Deserialize, Serialize};

/// The file name of the default SQLite database, beside the configuration file.
pub const DEFAULT_SQLITE_FILE: &str = "ferry-state.db";

/// `[state]`.
///
/// ```
/// use ferry_server::config::FerryConfig;
/// let c = FerryConfig::parse("[state]\nurl = \"memory\"\nlease_ms = 5000\n", "t")?;
/// assert_eq!(c.state.url, "memory");
/// assert_eq!(c.state.lease_ms, 5000);
/// # Ok::<(), ferry_server::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite://PATH` (relative to the configuration file's folder), `postgres://...`, or
    /// `memory` (nothing survives the process). Empty: `ferry-state.db` beside the
    /// configuration file when it was loaded from one, else `memory`.
    pub url: String,
    /// Name of an environment variable holding the URL (used when `url` is empty), so a
    /// database password stays out of the file.
    pub url_env: String,
    /// This host's name in leases. Empty: `$FERRY_HOST_ID`, else the machine's hostname.
    /// Hosts sharing a database must have different ids.
    pub host_id: String,
    /// How long a lease on a running batch item or session lasts without renewal; a dead
    /// host's work is taken over once it runs out. Renewed every third of it.
    pub lease_ms: u64,
    /// Finished sessions and batches are deleted after this many seconds.
    pub keep_finished_s: u64,
    /// How long an `Idempotency-Key`'s first answer is kept, in seconds.
    pub idempotency_ttl_s: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            url: String::new(),
            url_env: String::new(),
            host_id: String::new(),
            lease_ms: 15_000,
            keep_finished_s: 7 * 24 * 3600,
            idempotency_ttl_s: 24 * 3600,
        }
    }
}

impl StateConfig {
    /// The URL in force: `url`, else the variable `url_env` names, else `memory`.
    pub fn effective_url(&self) -> String {
        if !self.url.is_empty() {
            return self.url.clone();
        }
        if !self.url_env.is_empty() {
            if let Ok(url) = std::env::var(&self.url_env) {
                if !url.is_empty() {
                    return url;
                }
            }
        }
        "memory".to_owned()
    }

    /// The host id in force: `host_id`, else `$FERRY_HOST_ID`, else the hostname.
    pub fn effective_host_id(&self) -> String {
        if !self.host_id.is_empty() {
            return self.host_id.clone();
        }
        if let Ok(id) = std::env::var("FERRY_HOST_ID") {
            if !id.is_empty() {
                return id;
            }
        }
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }

    /// Checks the URL's scheme and the numbers.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let url = &self.url;
        let known = url.is_empty()
            || url == "memory"
            || url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !known {
            return Err((
                "state.url".into(),
                "expected `memory`, `sqlite://PATH` or `postgres://...`".into(),
            ));
        }
        if url == "sqlite://" {
            return Err(("state.url".into(), "`sqlite://` needs a path".into()));
        }
        if !url.is_empty() && !self.url_env.is_empty() {
            return Err((
                "state.url_env".into(),
                "give either `url` or `url_env`, not both".into(),
            ));
        }
        if self.lease_ms < 100 {
            return Err(("state.lease_ms".into(), "must be at least 100".into()));
        }
        if self.host_id.len() > 200 {
            return Err(("state.host_id".into(), "at most 200 bytes".into()));
        }
        Ok(())
    }

    /// Makes a relative `sqlite://` path relative to `base`, and gives an empty URL (with
    /// no `url_env`) the default file in `base`.
    pub(super) fn resolve_paths(&mut self, base: &std::path::Path) {
        if self.url.is_empty() && self.url_env.is_empty() {
            self.url = format!("sqlite://{}", base.join(DEFAULT_SQLITE_FILE).display());
        } else if let Some(path) = self.url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(path);
            if path.is_relative() {
                self.url = format!("sqlite://{}", base.join(path).display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::FerryConfig;
    use std::path::Path;

    #[test]
    fn the_shipped_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in ["ferry.toml", "deploy/kubernetes/ferry.toml"] {
            let c = FerryConfig::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.workers.is_empty(), "{file}");
        }
        let k8s = FerryConfig::load(&root.join("deploy/kubernetes/ferry.toml")).unwrap();
        assert_eq!(k8s.state.url_env, "FERRY_STATE_URL");
        assert!(k8s.state.url.is_empty(), "url_env, not a default file");
    }

    #[test]
    fn an_empty_url_is_the_file_beside_the_configuration_and_relative_paths_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "").unwrap();
        let c = FerryConfig::load(&path).unwrap();
        assert_eq!(
            c.state.url,
            format!("sqlite://{}", dir.path().join("ferry-state.db").display())
        );
        std::fs::write(&path, "[state]\nurl = \"sqlite://db/s.db\"\n").unwrap();
        let c = FerryConfig::load(&path).unwrap();
        assert_eq!(
            c.state.url,
            format!("sqlite://{}", dir.path().join("db/s.db").display())
        );
        // Parsed without a file: nothing to put a file beside.
        let c = FerryConfig::parse("", "t").unwrap();
        assert_eq!(c.state.effective_url(), "memory");
    }

    #[test]
    fn bad_state_settings_are_refused_with_their_key() {
        for (text, key) in [
            ("[state]\nurl = \"mysql://x\"\n", "state.url"),
            ("[state]\nurl = \"sqlite://\"\n", "state.url"),
            (
                "[state]\nurl = \"memory\"\nurl_env = \"X\"\n",
                "state.url_env",
            ),
            ("[state]\nlease_ms = 5\n", "state.lease_ms"),
            ("[state]\nkeep = 1\n", "keep"),
        ] {
            let e = FerryConfig::parse(text, "t").unwrap_err();
            assert!(e.key.starts_with(key), "{text}: {e}");
        }
    }
}

//! Hot reload: a new rule set replaces the running one without a restart.
//!
//! A [`Reloader`] holds the rule set in use behind an atomic pointer: a detector takes the current
//! set once per batch, so a swap happens between batches, never inside one, and no event is
//! dropped or evaluated twice by it. A reload is attempted on SIGHUP and when the rule files
//! change (their paths, sizes and modification times are polled, which also sees the symlink
//! swap of a Kubernetes ConfigMap volume; a change is loaded once it has held still for one
//! poll, so a file being written is not read half-way). A set that fails to load changes
//! nothing: the old one keeps running, every problem is logged with its file and line, and
//! `kaudit_rules_reload_failed` is 1 until a load succeeds.
//!
//! Dedup and window state are keyed by rule name and key values, not by position, so they carry
//! over for rules that still exist; a removed rule's state ages out.

use crate::engine::{Matching, RuleSet};
use crate::telemetry::metrics;
use arc_swap::ArcSwap;
use opentelemetry::KeyValue;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What the polled rule files look like: path, size, modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

pub struct Reloader {
    paths: Vec<PathBuf>,
    matching: Matching,
    current: ArcSwap<RuleSet>,
    loaded: Mutex<Fingerprint>,
    last_error: Mutex<Option<String>>,
}

impl Reloader {
    /// Loads the first set; an error here is the process's to report (nothing runs yet).
    pub fn new(paths: Vec<PathBuf>, matching: Matching) -> Result<Reloader, crate::engine::rules::LoadErrors> {
        let loaded = fingerprint(&paths);
        let set = RuleSet::load(&paths, matching)?;
        let reloader = Reloader {
            paths,
            matching,
            current: ArcSwap::from_pointee(set),
            loaded: Mutex::new(loaded),
            last_error: Mutex::new(None),
        };
        reloader.publish_metrics();
        Ok(reloader)
    }

    /// The set in use now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// The problems of the last failed reload (`None` once one succeeds).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the rule files again; on success the new set replaces the old one.
    pub fn reload(&self) -> Result<usize, String> {
        let seen = fingerprint(&self.paths);
        let result = RuleSet::load(&self.paths, self.matching);
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        match result {
            Ok(set) => {
                let n = set.rules().len();
                self.current.store(Arc::new(set));
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                metrics().rules_reloads.add(1, &[KeyValue::new("result", "ok")]);
                self.publish_metrics();
                tracing::info!(rules = n, "rules reloaded");
                Ok(n)
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("rules not reloaded, the previous set keeps running: {e}");
                }
                let text = errors.to_string();
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.clone());
                metrics().rules_reloads.add(1, &[KeyValue::new("result", "error")]);
                metrics().rules_reload_failed.record(1, &[]);
                Err(text)
            }
        }
    }

    fn publish_metrics(&self) {
        let set = self.rules();
        metrics().rules_loaded.record(set.rules().len() as u64, &[]);
        metrics().rules_reload_failed.record(0, &[]);
        metrics().watch_rule_errors(move |observe| {
            for rule in set.rules() {
                observe(&rule.name, rule.stats.errors.load(std::sync::atomic::Ordering::Relaxed));
            }
        });
    }

    /// Reloads on SIGHUP and, with a `poll` interval, when the files change; until `stop`.
    pub async fn watch(self: Arc<Self>, poll: Option<Duration>, mut stop: crate::shutdown::Shutdown) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut previous = fingerprint(&self.paths);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let tick = async {
                match poll {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.stopped() => return,
                _ = hangup => {
                    tracing::info!("SIGHUP: reloading rules");
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                }
                _ = tick => {
                    let now = fingerprint(&self.paths);
                    let changed = now != *self.loaded.lock().unwrap_or_else(|e| e.into_inner());
                    // Load a change once it held still for a poll.
                    if changed && now == previous {
                        tracing::info!("rule files changed: reloading rules");
                        let this = self.clone();
                        let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                    }
                    previous = now;
                }
            }
        }
    }
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    for path in paths {
        let files = crate::engine::rules::rule_files(path).unwrap_or_default();
        for file in files {
            let meta = std::fs::metadata(&file).ok();
            out.push((
                file,
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "- rule: One\n  desc: d\n  condition: verb == 'create'\n  output: o\n  priority: notice\n";

    #[test]
    fn a_broken_file_keeps_the_old_set_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(&file, RULE).unwrap();
        let reloader = Reloader::new(vec![dir.path().to_path_buf()], Matching::All).unwrap();
        assert_eq!(reloader.rules().rules().len(), 1);
        std::fs::write(
            &file,
            format!("{RULE}- rule: Two\n  desc: d\n  condition: verb == 'delete'\n  output: o\n  priority: notice\n"),
        )
        .unwrap();
        assert_eq!(reloader.reload(), Ok(2));
        std::fs::write(
            &file,
            format!("{RULE}- rule: Broken\n  desc: d\n  condition: verb ==\n  output: o\n  priority: notice\n"),
        )
        .unwrap();
        let err = reloader.reload().unwrap_err();
        assert!(err.contains("r.yaml:") && err.contains("Broken"), "{err}");
        assert_eq!(reloader.rules().rules().len(), 2, "the previous set keeps running");
        assert!(reloader.last_error().is_some());
        std::fs::write(&file, RULE).unwrap();
        assert_eq!(reloader.reload(), Ok(1));
        assert_eq!(reloader.last_error(), None);
    }

    /// A ConfigMap volume as the kubelet writes it: `rules.yaml -> ..data/rules.yaml`, `..data ->
    /// ..<timestamp>`; an update writes a new timestamped folder and swaps `..data` by rename.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_configmap_volume_swap_is_reloaded() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let version = |name: &str, text: &str| {
            let at = dir.path().join(name);
            std::fs::create_dir(&at).unwrap();
            std::fs::write(at.join("rules.yaml"), text).unwrap();
        };
        version("..2026_12_01_10_00_00.1", RULE);
        symlink("..2026_12_01_10_00_00.1", dir.path().join("..data")).unwrap();
        symlink("..data/rules.yaml", dir.path().join("rules.yaml")).unwrap();
        let reloader = Arc::new(Reloader::new(vec![dir.path().to_path_buf()], Matching::All).unwrap());
        assert_eq!(
            reloader.rules().rules().len(),
            1,
            "only the visible file, not the folders"
        );
        let (stop, stopped) = crate::shutdown::channel();
        let watching = tokio::spawn(reloader.clone().watch(Some(Duration::from_millis(20)), stopped));

        let two =
            format!("{RULE}- rule: Two\n  desc: d\n  condition: verb == 'delete'\n  output: o\n  priority: notice\n");
        version("..2026_12_01_10_05_00.2", &two);
        symlink("..2026_12_01_10_05_00.2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(dir.path().join("..2026_12_01_10_00_00.1")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reloader.rules().rules().len() != 2 {
            assert!(std::time::Instant::now() < deadline, "the swap was not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.stop();
        let _ = watching.await;
    }
}

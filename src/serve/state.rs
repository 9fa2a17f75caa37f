//! The live model behind one atomic pointer, and how new versions replace it.
//!
//! Architecture Invariant: a request loads the pointer once and uses that model to the end, so
//! a swap never mixes two versions in one answer; a version that fails to load or verify never
//! replaces the live one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Mutex;

use crate::error::StoreError;
use crate::model::Model;
use crate::model::store;

/// A loaded model and when it was loaded.
#[derive(Debug)]
pub struct LiveModel {
    pub model: Model,
    pub built_at: String,
    pub loaded_at: i64,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub previous: Option<String>,
    pub current: String,
    pub changed: bool,
}

/// Shared serving state.
#[derive(Debug)]
pub struct ModelState {
    dir: PathBuf,
    live: ArcSwapOption<LiveModel>,
    /// Serialises reloads (watcher and admin calls) so one version loads once.
    reload_lock: Mutex<()>,
    /// The last version that failed to load, so the watcher does not retry it every tick.
    failed: std::sync::Mutex<Option<String>>,
}

impl ModelState {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            live: ArcSwapOption::empty(),
            reload_lock: Mutex::new(()),
            failed: std::sync::Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live model, if any. Cheap: one atomic load.
    pub fn current(&self) -> Option<Arc<LiveModel>> {
        self.live.load_full()
    }

    /// Installs an already loaded model (tests, `--noop` targets). The replaced model is freed
    /// off the request path (see [`release_in_background`]).
    pub fn install(&self, model: Model, built_at: String) {
        let previous = self.live.swap(Some(Arc::new(LiveModel {
            model,
            built_at,
            loaded_at: chrono::Utc::now().timestamp(),
        })));
        if let Some(previous) = previous {
            release_in_background(previous);
        }
    }

    /// Loads the version `CURRENT` names unless it is already live. Blocking work runs off the
    /// async executor. On failure the live model stays.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadOutcome, StoreError> {
        let _guard = self.reload_lock.lock().await;
        let previous = self.current().map(|m| m.model.version.clone());
        let dir = self.dir.clone();
        let version = store::current_version(&dir)?;
        if previous.as_deref() == Some(version.as_str()) {
            return Ok(ReloadOutcome {
                previous: previous.clone(),
                current: version,
                changed: false,
            });
        }
        let span = tracing::info_span!("model_load", version = %version);
        let started = std::time::Instant::now();
        let version_dir = dir.join(&version);
        let (done, loaded) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("cobuy-model-load".into())
            .spawn(move || {
                lower_own_priority();
                let result = store::read_manifest(&version_dir).and_then(|manifest| {
                    store::load_version(&version_dir).map(|model| (model, manifest.built_at))
                });
                let _ = done.send(result);
            })
            .map_err(|e| StoreError::Invalid {
                path: dir.clone(),
                what: format!("cannot start the model load thread: {e}"),
            })?;
        let loaded = loaded.await.map_err(|e| StoreError::Invalid {
            path: dir.clone(),
            what: format!("model load thread failed: {e}"),
        })?;
        let _entered = span.enter();
        match loaded {
            Ok((model, built_at)) => {
                let current = model.version.clone();
                self.install(model, built_at);
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = None;
                }
                tracing::info!(version = %current, previous = ?previous, seconds = started.elapsed().as_secs_f64(), "model swapped in");
                Ok(ReloadOutcome {
                    previous,
                    current,
                    changed: true,
                })
            }
            Err(e) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some(version.clone());
                }
                tracing::error!(version = %version, error = %e, "model refused; the live model keeps serving");
                Err(e)
            }
        }
    }

    /// Polls `CURRENT` every `interval` and reloads when it names a new version, until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            let Ok(version) = store::current_version(&self.dir) else {
                continue;
            };
            let live = self.current().map(|m| m.model.version.clone());
            let failed = self.failed.lock().ok().and_then(|f| f.clone());
            if live.as_deref() == Some(version.as_str())
                || failed.as_deref() == Some(version.as_str())
            {
                continue;
            }
            // Errors are logged inside reload; the next new version is tried on a later tick.
            let _ = self.reload().await;
        }
    }
}

/// How long the release thread waits for in-flight calls to let go of a replaced model before
/// it leaves the freeing to the last of them.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Frees a replaced model on a low-priority thread once the calls still using it have finished.
/// Whichever thread drops the last reference pays for the freeing (about 60 ms for a
/// completejourney model, more with an HNSW graph's per-node vectors); without this that is a
/// request worker or the runtime thread that ran the reload, and every call queued behind it
/// waits (the slowest call of a swap under 1,000/s: 30-39 ms before, 6.5-12 ms after;
/// `benches/RESULTS.md`, session 8).
fn release_in_background(mut model: Arc<LiveModel>) {
    let spawned = std::thread::Builder::new()
        .name("cobuy-model-release".into())
        .spawn(move || {
            lower_own_priority();
            let version = model.model.version.clone();
            let waited = std::time::Instant::now();
            loop {
                match Arc::try_unwrap(model) {
                    Ok(unique) => {
                        let started = std::time::Instant::now();
                        drop(unique);
                        tracing::info!(
                            version = %version,
                            seconds = started.elapsed().as_secs_f64(),
                            "replaced model freed"
                        );
                        return;
                    }
                    Err(shared) if waited.elapsed() < RELEASE_WAIT => {
                        model = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => {
                        tracing::warn!(version = %version, "replaced model still in use; the last call using it frees it");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // The model moved into the closure that failed to start and is dropped here.
        tracing::warn!(error = %e, "could not start the model release thread; freed inline");
    }
}

/// Model loads and releases run under SCHED_IDLE: a load is a second of CPU that must not steal
/// it from request workers sharing its core. A load at normal priority on the server's one
/// pinned core raised p99 fourfold during a swap. An idle-policy thread is preempted by any
/// waking normal thread and runs only on a core's spare time (or a tiny share of a saturated
/// one), so it still finishes on a busy machine. Failing to lower it (no permission) only costs
/// that.
fn lower_own_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::warn!(error = ?e, "could not lower a model load or release thread's priority");
    }
}

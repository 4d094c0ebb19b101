//! What the daemon keeps across restarts: `<state_dir>/state.json`, holding the paused flag
//! and the accepted remote configuration changes (merged), so that neither is lost on a
//! restart (a device switched to `presence` must not come back as `fine` after a power cut).
//!
//! The file is read and written only through the state directory's handle (no link is
//! followed, reads are capped at [`MAX_STATE_BYTES`]). A state file that is damaged, unreadable
//! or no longer valid **fails closed**: the daemon starts paused (the camera closed, nothing
//! inferred), with the reason in `status`, keeps the damaged file as `state.json.damaged`, and
//! waits for a `resume` command; it never falls back to a less private setting on its own.

use serde::{Deserialize, Serialize};

use crate::daemon::config::ValidatedConfig;
use crate::daemon::state_dir::StateDir;

/// File name of the daemon state in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Where a damaged state file is kept for inspection.
pub const DAMAGED_STATE_FILE: &str = "state.json.damaged";
/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 1 << 20;
const STATE_SCHEMA: &str = "caer.state.v1";

/// The daemon state kept in `<state_dir>/state.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistentState {
    /// Paused by a `pause` command (or because the state file was damaged).
    pub paused: bool,
    /// Accepted remote configuration changes, merged, applied on top of the file.
    pub remote_config: Option<serde_json::Value>,
    /// The bundle that runs.
    pub bundle: BundleRef,
    /// The bundle that ran before the last switch (what `rollback` returns to).
    pub previous_bundle: Option<BundleRef>,
    /// Starts since the last switch, while the new bundle is on trial (see
    /// [`crate::daemon::update`]); none once it ran long enough.
    pub trial_starts: Option<u32>,
}

/// A model bundle: the configured one (`model.bundle`) or one delivered over the fleet,
/// `<state_dir>/bundles/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleRef {
    /// `model.bundle` of the configuration.
    #[default]
    Configured,
    /// A delivered bundle, by id (the sha256 of its manifest).
    Delivered(String),
}

impl BundleRef {
    fn is_valid(&self) -> bool {
        match self {
            BundleRef::Configured => true,
            BundleRef::Delivered(id) => {
                id.len() == 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    schema: String,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    remote_config: Option<serde_json::Value>,
    #[serde(default)]
    bundle: BundleRef,
    #[serde(default)]
    previous_bundle: Option<BundleRef>,
    #[serde(default)]
    trial_starts: Option<u32>,
}

/// A failure to read or write `state.json`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file could not be read or written (a link in its place is refused).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// `read`, `write`.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid state file (the JSON error's position only, never its text).
    #[error("{} is not a valid state file: {message}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl PersistentState {
    /// Reads `state.json`; a missing file is the default state.
    pub fn load(dir: &StateDir) -> Result<PersistentState, StateError> {
        let path = dir.join(STATE_FILE);
        let data = match dir.read(STATE_FILE, MAX_STATE_BYTES) {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(PersistentState::default()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let file: StateFile = serde_json::from_slice(&data).map_err(|e| StateError::Invalid {
            path: path.clone(),
            message: format!(
                "not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
        if file.schema != STATE_SCHEMA {
            return Err(StateError::Invalid {
                path,
                message: format!("schema is not {STATE_SCHEMA:?}"),
            });
        }
        let bundles_ok = file.bundle.is_valid()
            && file
                .previous_bundle
                .as_ref()
                .is_none_or(BundleRef::is_valid);
        if !bundles_ok {
            return Err(StateError::Invalid {
                path,
                message: "a bundle id is not 64 lowercase hex digits".into(),
            });
        }
        Ok(PersistentState {
            paused: file.paused,
            remote_config: file.remote_config,
            bundle: file.bundle,
            previous_bundle: file.previous_bundle,
            trial_starts: file.trial_starts,
        })
    }

    /// Replaces `state.json` atomically (see [`StateDir::replace`]).
    pub fn save(&self, dir: &StateDir) -> Result<(), StateError> {
        let file = StateFile {
            schema: STATE_SCHEMA.to_string(),
            paused: self.paused,
            remote_config: self.remote_config.clone(),
            bundle: self.bundle.clone(),
            previous_bundle: self.previous_bundle.clone(),
            trial_starts: self.trial_starts,
        };
        let data = serde_json::to_vec_pretty(&file).expect("state serialises");
        dir.replace(STATE_FILE, &data)
            .map_err(|source| StateError::Io {
                action: "write",
                path: dir.join(STATE_FILE),
                source,
            })
    }
}

/// Merges an accepted patch into the accumulated remote configuration: objects key by key;
/// anything else, `null` included (reset to default), replaces.
pub(super) fn accumulate_patch(acc: &mut serde_json::Value, patch: &serde_json::Value) {
    match (acc, patch) {
        (serde_json::Value::Object(acc), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                match acc.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        accumulate_patch(existing, value)
                    }
                    _ => {
                        acc.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (acc, patch) => *acc = patch.clone(),
    }
}

/// The configuration and state the daemon starts from: the file's configuration with the
/// kept remote changes on top. A state file that cannot be used fails closed (module docs):
/// paused, file configuration alone, and the reason returned for `status`.
pub(super) fn initial_config(
    file_config: &ValidatedConfig,
    dir: &StateDir,
) -> (ValidatedConfig, PersistentState, Option<String>) {
    let fail_closed = |reason: String| {
        tracing::error!(%reason, "starting paused: resume with the cmd \"resume\" once checked");
        if let Err(e) = dir.rename(STATE_FILE, DAMAGED_STATE_FILE) {
            tracing::warn!(error = %e, "cannot keep the damaged state file aside");
        }
        let persistent = PersistentState {
            paused: true,
            ..PersistentState::default()
        };
        if let Err(e) = persistent.save(dir) {
            tracing::warn!(error = %e, "cannot write the paused state");
        }
        (file_config.clone(), persistent, Some(reason))
    };
    let mut persistent = match PersistentState::load(dir) {
        Ok(s) => s,
        Err(e) => {
            return fail_closed(format!(
                "the daemon state file cannot be used ({e}): paused"
            ))
        }
    };
    let on_trial = persistent.trial_starts.is_some();
    if let Some(note) = count_trial_start(&mut persistent) {
        tracing::error!(%note, "model trial");
    }
    if on_trial {
        if let Err(e) = persistent.save(dir) {
            tracing::warn!(error = %e, "cannot save the model trial");
        }
    }
    let config = match &persistent.remote_config {
        None => file_config.clone(),
        Some(remote) => match file_config.merge_remote(remote) {
            Ok(merged) => {
                tracing::info!("applying the remote configuration kept in the state directory");
                merged
            }
            Err(errors) => {
                return fail_closed(format!(
                    "the kept remote configuration is no longer accepted ({errors}): paused"
                ))
            }
        },
    };
    let config = match &persistent.bundle {
        BundleRef::Configured => config,
        BundleRef::Delivered(id) => config.with_model_bundle(
            dir.join(crate::daemon::update::transfer::BUNDLES_DIR)
                .join(id),
        ),
    };
    (config, persistent, None)
}

/// Counts a start of a bundle on trial; after [`MAX_TRIAL_STARTS`] starts within its trial
/// (a crash loop after a switch), goes back to the previous bundle. Returns what it did
/// when it rolled back.
pub(super) fn count_trial_start(state: &mut PersistentState) -> Option<String> {
    use crate::daemon::update::MAX_TRIAL_STARTS;
    let starts = state.trial_starts? + 1;
    if starts < MAX_TRIAL_STARTS {
        state.trial_starts = Some(starts);
        return None;
    }
    let previous = state.previous_bundle.take().unwrap_or_default();
    let note = format!(
        "the daemon started {starts} times since it switched to {:?} without running it for \
         its trial period: back to {previous:?}",
        state.bundle
    );
    state.bundle = previous;
    state.trial_starts = None;
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        (tmp, dir)
    }

    fn file_config() -> ValidatedConfig {
        let text =
            "[device]\nsite = \"s\"\nroom = \"r\"\nid = \"d\"\n[source]\nkind = \"generated\"\n";
        crate::daemon::config::DaemonConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn state_round_trips_and_missing_is_default() {
        let (_tmp, dir) = dir();
        assert_eq!(
            PersistentState::load(&dir).unwrap(),
            PersistentState::default()
        );
        let state = PersistentState {
            paused: true,
            remote_config: Some(serde_json::json!({"policy": {}})),
            bundle: BundleRef::Delivered("ab".repeat(32)),
            previous_bundle: Some(BundleRef::Configured),
            trial_starts: Some(1),
        };
        state.save(&dir).unwrap();
        assert_eq!(PersistentState::load(&dir).unwrap(), state);
    }

    #[test]
    fn a_damaged_state_file_fails_closed_and_is_kept_aside() {
        let (_tmp, dir) = dir();
        let secret = "hunter2";
        dir.replace(
            STATE_FILE,
            format!("{{\"schema\": \"caer.state.v1\", \"x\": \"{secret}\"").as_bytes(),
        )
        .unwrap();
        let (config, state, reason) = initial_config(&file_config(), &dir);
        assert!(state.paused && state.remote_config.is_none());
        let reason = reason.expect("a reason for status");
        assert!(
            reason.contains("paused") && !reason.contains(secret),
            "{reason}"
        );
        assert_eq!(
            config.config().policy.profile,
            file_config().config().policy.profile
        );
        assert!(dir.read(DAMAGED_STATE_FILE, 1000).unwrap().is_some());
        assert!(PersistentState::load(&dir).unwrap().paused, "saved paused");
    }

    #[test]
    fn a_kept_change_no_longer_accepted_fails_closed_too() {
        let (_tmp, dir) = dir();
        PersistentState {
            paused: false,
            remote_config: Some(
                serde_json::json!({"policy": {"profile": "presence"}, "source": {"max_frames": 1}}),
            ),
            ..PersistentState::default()
        }
        .save(&dir)
        .unwrap();
        let (_, state, reason) = initial_config(&file_config(), &dir);
        assert!(state.paused);
        assert!(reason.unwrap().contains("source.max_frames"));
    }

    #[test]
    fn a_crash_loop_after_a_switch_goes_back_to_the_previous_bundle() {
        let new = BundleRef::Delivered("cd".repeat(32));
        let mut state = PersistentState {
            bundle: new.clone(),
            previous_bundle: Some(BundleRef::Configured),
            trial_starts: Some(0),
            ..PersistentState::default()
        };
        assert_eq!(count_trial_start(&mut state), None);
        assert_eq!(count_trial_start(&mut state), None);
        assert_eq!((&state.bundle, state.trial_starts), (&new, Some(2)));
        let note = count_trial_start(&mut state).expect("rolled back at the third start");
        assert!(note.contains("3 times"), "{note}");
        assert_eq!(state.bundle, BundleRef::Configured);
        assert_eq!(
            (state.previous_bundle.as_ref(), state.trial_starts),
            (None, None)
        );
        // Not on trial: starts are not counted.
        assert_eq!(count_trial_start(&mut state), None);
    }

    #[test]
    fn a_bundle_id_that_is_not_a_hash_fails_closed() {
        let (_tmp, dir) = dir();
        dir.replace(
            STATE_FILE,
            br#"{"schema": "caer.state.v1", "bundle": {"delivered": "../../etc"}}"#,
        )
        .unwrap();
        let (_, state, reason) = initial_config(&file_config(), &dir);
        assert!(state.paused);
        assert!(reason.unwrap().contains("bundle id"));
    }

    #[test]
    fn accumulated_patches_keep_nulls_and_merge_sections() {
        let mut acc = serde_json::json!({});
        accumulate_patch(
            &mut acc,
            &serde_json::json!({"policy": {"profile": "fine"}}),
        );
        accumulate_patch(
            &mut acc,
            &serde_json::json!({"policy": {"min_group_size": 3}, "report": {"interval_secs": null}}),
        );
        assert_eq!(
            acc,
            serde_json::json!({"policy": {"profile": "fine", "min_group_size": 3}, "report": {"interval_secs": null}})
        );
    }
}

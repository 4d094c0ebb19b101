//! Remote configuration kept across restarts: the accumulated patch in `state.json`, and
//! the configuration the daemon starts from.

use std::path::Path;

use crate::daemon::config::ValidatedConfig;
use crate::daemon::fleet::PersistentState;

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

/// Loads `state.json` and applies its remote configuration on top of `file_config`.
pub(super) fn initial_config(
    file_config: &ValidatedConfig,
    state_dir: &Path,
) -> (ValidatedConfig, PersistentState) {
    let mut persistent = match PersistentState::load(state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "ignoring the daemon state file (not paused, no remote configuration)");
            PersistentState::default()
        }
    };
    let config = match &persistent.remote_config {
        None => file_config.clone(),
        Some(remote) => match file_config.merge_remote(remote) {
            Ok(merged) => {
                tracing::info!("applying the remote configuration kept in the state directory");
                merged
            }
            Err(errors) => {
                tracing::error!(%errors, "the kept remote configuration no longer validates; using the file alone");
                persistent.remote_config = None;
                file_config.clone()
            }
        },
    };
    (config, persistent)
}

#[cfg(test)]
mod tests {
    use super::*;

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

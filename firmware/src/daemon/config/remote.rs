//! The remote-configuration policy: what a `config/set` may change, within which bounds, and
//! how a change is merged. Written down and enforced here, and nowhere else.
//!
//! - **Keys.** Only the keys in [`REMOTE_KEYS`] may change remotely: the tuning of detection,
//!   tracking, context boxes, sampling, the backend, the privacy policy and reporting. Every
//!   key that names a program, a device node or a file (`source.video_file.ffmpeg`,
//!   `source.v4l2.device`, `source.frame_dir.annotations`, ...), the source itself (a finite
//!   source or a frame limit would make the daemon exit), the device identity, the broker,
//!   the state directory, the outbox, the privacy pins, the thermal guard and `[remote]`
//!   stay as the local file says.
//! - **Paths.** `model.bundle` and `model.calibration` may change remotely only to an existing
//!   path below one of `remote.allowed_roots` (none by default), resolved with every symlink
//!   followed: a link inside a root that points out of it is refused.
//! - **Memory.** Every configuration, local or remote, must fit `remote.memory_budget_mib`:
//!   the frame queue (and the two frames in the stages) at the source's frame size, plus every
//!   track's feature window ([`check_memory_budget`]); at run time the frame queue also drops
//!   its oldest frames past its share of the budget ([`queue_byte_budget`]), which bounds the
//!   frames of file sources, whose size is known only once read.
//! - **Rate.** The supervisor applies at most one remote change per
//!   `remote.min_change_interval_secs`; changes that arrive together are coalesced into one.
//!
//! A change is all or nothing: any refused key, bad value or unmet bound refuses the whole
//! change, with every reason in the ack, and the running configuration stays.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{path_key, ConfigErrors, ConfigIssue, DaemonConfig, ValidatedConfig};
use crate::pipeline::settings::Issues;

/// Keys a remote `config/set` may change (dotted paths of leaves). `null` resets one to its
/// default.
pub const REMOTE_KEYS: &[&str] = &[
    "source.fps",
    "detect.kind",
    "detect.full_every",
    "detect.blaze.tile_sizes",
    "detect.blaze.score_threshold",
    "detect.blaze.nms_iou",
    "detect.blaze.second_look_threshold",
    "detect.blaze.sure_score",
    "detect.seeta.min_face_size",
    "detect.seeta.score_threshold",
    "detect.seeta.pyramid_scale_factor",
    "detect.seeta.window_step",
    "track.iou_threshold",
    "track.min_hits",
    "track.max_misses",
    "track.max_tracks",
    "context.width_factor",
    "context.height_factor",
    "context.above_factor",
    "sampling.rate_hz",
    "sampling.queue_frames",
    "sampling.window_stride",
    "model.backend",
    "model.threads",
    "model.bundle",
    "model.calibration",
    "policy.profile",
    "policy.min_group_size",
    "report.interval_secs",
    "report.stats_interval_secs",
];

/// Remote keys that name a file: allowed only below `remote.allowed_roots`.
pub const REMOTE_PATH_KEYS: &[&str] = &["model.bundle", "model.calibration"];

/// Embedding size assumed for the memory budget (ViT-B/32's; the fixture's is smaller).
const BUDGET_EMBED_DIM: u64 = 512;
/// Window length assumed for the memory budget (CLIP-CAER's `T`).
const BUDGET_FRAMES_PER_CLIP: u64 = 16;

/// What a remote change may do: the `[remote]` section. Local only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// Directories below which a remote change may point `model.bundle` and
    /// `model.calibration` (absolute; e.g. where model updates are unpacked). Empty: those
    /// keys are local only.
    pub allowed_roots: Vec<PathBuf>,
    /// Memory the frame queue and the per-student windows may take, in MiB (128 to 65536).
    /// Every configuration must fit, local or remote.
    pub memory_budget_mib: u64,
    /// Shortest time between two applied remote changes, in seconds (0 to 3600); a change
    /// sooner is refused with an ack saying when to retry.
    pub min_change_interval_secs: u64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            allowed_roots: Vec::new(),
            memory_budget_mib: 1024,
            min_change_interval_secs: 5,
        }
    }
}

impl RemoteConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        for root in &self.allowed_roots {
            if !root.is_absolute() {
                v.push(
                    "allowed_roots",
                    format!("{root:?} must be an absolute path"),
                );
            }
        }
        v.range("memory_budget_mib", self.memory_budget_mib, 128, 65_536);
        v.at_most(
            "min_change_interval_secs",
            self.min_change_interval_secs,
            3600,
        );
    }
}

/// Bytes of every track's feature window.
fn windows_bytes(config: &DaemonConfig) -> u64 {
    let window = 2 * BUDGET_FRAMES_PER_CLIP * BUDGET_EMBED_DIM * 4;
    (config.track.max_tracks.get() as u64).saturating_mul(window)
}

/// The memory a configuration takes at most, in bytes: the frame queue plus the frames held
/// by capture and inference at the source's frame size, and every track's window; none for
/// file sources (see [`queue_byte_budget`]).
pub fn memory_estimate(config: &DaemonConfig) -> Option<u64> {
    let frame = config.source.frame_pixels()?.saturating_mul(3);
    let frames = (config.sampling.queue_frames.get() as u64).saturating_add(2);
    Some(
        frame
            .saturating_mul(frames)
            .saturating_add(windows_bytes(config)),
    )
}

/// The pixel bytes the frame queue may hold: the budget less the windows and the two frames
/// the stages hold (at most [`crate::pipeline::decode::MAX_PIXELS`] each).
pub fn queue_byte_budget(config: &DaemonConfig) -> usize {
    let budget = config.remote.memory_budget_mib.saturating_mul(1 << 20);
    let in_stages = 2 * crate::pipeline::decode::MAX_PIXELS * 3;
    let left = budget.saturating_sub(windows_bytes(config) + in_stages);
    usize::try_from(left).unwrap_or(usize::MAX)
}

/// Refuses a configuration whose [`memory_estimate`] exceeds `remote.memory_budget_mib`.
pub fn check_memory_budget(config: &DaemonConfig, v: &mut Issues) {
    let budget = config.remote.memory_budget_mib.saturating_mul(1 << 20);
    let Some(needed) = memory_estimate(config) else {
        return;
    };
    if needed > budget {
        v.push(
            "sampling.queue_frames",
            format!(
                "the frame queue and the track windows need {} MiB at the source's frame size, \
                 more than remote.memory_budget_mib ({} MiB): lower sampling.queue_frames, \
                 track.max_tracks or the frame size",
                needed.div_ceil(1 << 20),
                config.remote.memory_budget_mib
            ),
        );
    }
}

/// Every leaf of `patch` that the policy refuses, with the reason.
fn policy_issues(patch: &serde_json::Value, roots: &[PathBuf]) -> Vec<ConfigIssue> {
    let mut leaves = Vec::new();
    collect_leaves("", patch, &mut leaves);
    let mut issues = Vec::new();
    for (key, value) in leaves {
        if !REMOTE_KEYS.contains(&key.as_str()) {
            issues.push(ConfigIssue {
                reason: "cannot be changed remotely; edit the configuration file".into(),
                key,
            });
        } else if REMOTE_PATH_KEYS.contains(&key.as_str()) && !value.is_null() {
            if let Err(reason) = check_remote_path(value, roots) {
                issues.push(ConfigIssue { key, reason });
            }
        }
    }
    issues
}

fn collect_leaves<'a>(
    prefix: &str,
    value: &'a serde_json::Value,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(&path, value, out);
            }
        }
        // An empty object or a scalar at the top level is a leaf too (refused by name).
        _ => out.push((prefix.to_owned(), value)),
    }
}

/// A remote path must name an existing file or directory whose real path lies below the
/// real path of an allowed root. Reasons never say whether a path outside the roots exists.
fn check_remote_path(value: &serde_json::Value, roots: &[PathBuf]) -> Result<(), String> {
    if roots.is_empty() {
        return Err("is local only (remote.allowed_roots is empty)".into());
    }
    let outside = || "must be an existing path below one of remote.allowed_roots".to_string();
    let path = Path::new(value.as_str().ok_or("must be a path string")?);
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    // Only paths that are below a root by name are looked at on disk at all.
    let named_roots: Vec<&PathBuf> = roots.iter().filter(|r| path.starts_with(r)).collect();
    if named_roots.is_empty() {
        return Err(outside());
    }
    let real = std::fs::canonicalize(path).map_err(|_| outside())?;
    for root in named_roots {
        if let Ok(real_root) = std::fs::canonicalize(root) {
            if real.starts_with(&real_root) {
                return Ok(());
            }
        }
    }
    Err(outside())
}

impl ValidatedConfig {
    /// Applies a remote partial change (a JSON object shaped like the TOML file, `null`
    /// resetting a key to its default) on top of this configuration: the policy first (see
    /// the module docs), then the merge and the same validation as the file. All or nothing:
    /// on error, `self` is what stays in force.
    pub fn merge_remote(&self, patch: &serde_json::Value) -> Result<ValidatedConfig, ConfigErrors> {
        if !patch.is_object() {
            return Err(ConfigErrors::one(
                "",
                "a configuration change must be a JSON object",
            ));
        }
        let issues = policy_issues(patch, &self.config.remote.allowed_roots);
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        let mut merged = serde_json::to_value(&self.config).map_err(|e| {
            ConfigErrors::one("", format!("cannot serialise the configuration: {e}"))
        })?;
        merge_json(&mut merged, patch);
        let config: DaemonConfig = serde_path_to_error::deserialize(merged)
            .map_err(|e| ConfigErrors::one(path_key(e.path()), e.inner().to_string()))?;
        config.validate()
    }
}

/// The checks a fleet tool makes before it sends a change: every key must be one a remote
/// change may touch, and the values must pass the same validation as the file, on top of the
/// defaults. Paths name the device's files, so only their form is checked here (a string, an
/// absolute path); the device checks them against its own `remote.allowed_roots`.
pub fn check_change(patch: &serde_json::Value) -> Result<(), ConfigErrors> {
    if !patch.is_object() {
        return Err(ConfigErrors::one(
            "",
            "a configuration change must be a JSON object",
        ));
    }
    let mut leaves = Vec::new();
    collect_leaves("", patch, &mut leaves);
    let mut issues = Vec::new();
    let mut without_paths = patch.clone();
    for (key, value) in leaves {
        if !REMOTE_KEYS.contains(&key.as_str()) {
            issues.push(ConfigIssue {
                reason: "cannot be changed remotely; edit the configuration file".into(),
                key,
            });
        } else if REMOTE_PATH_KEYS.contains(&key.as_str()) {
            match value.as_str() {
                Some(path) if Path::new(path).is_absolute() => {}
                None if value.is_null() => {}
                _ => issues.push(ConfigIssue {
                    key: key.clone(),
                    reason: "must be an absolute path string".into(),
                }),
            }
            if let Some((section, leaf)) = key.split_once('.') {
                if let Some(map) = without_paths
                    .get_mut(section)
                    .and_then(|s| s.as_object_mut())
                {
                    map.remove(leaf);
                }
            }
        }
    }
    if !issues.is_empty() {
        return Err(ConfigErrors(issues));
    }
    let base = DaemonConfig::from_toml(
        "[device]\nsite = \"fleet\"\nroom = \"check\"\nid = \"check\"\n[source]\nkind = \"generated\"\n",
    )?;
    let mut merged = serde_json::to_value(&base)
        .map_err(|e| ConfigErrors::one("", format!("cannot serialise the defaults: {e}")))?;
    merge_json(&mut merged, &without_paths);
    let config: DaemonConfig = serde_path_to_error::deserialize(merged)
        .map_err(|e| ConfigErrors::one(path_key(e.path()), e.inner().to_string()))?;
    config.validate().map(|_| ())
}

/// Recursive merge: objects merge key by key, `null` removes the key (back to its
/// default), anything else replaces.
fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge_json(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(extra: &str) -> ValidatedConfig {
        let text = format!(
            "[device]\nsite = \"s\"\nroom = \"r\"\nid = \"d\"\n[source]\nkind = \"generated\"\n{extra}"
        );
        DaemonConfig::from_toml(&text).unwrap().validate().unwrap()
    }

    fn refused_keys(v: &ValidatedConfig, patch: serde_json::Value) -> Vec<String> {
        v.merge_remote(&patch)
            .unwrap_err()
            .0
            .into_iter()
            .map(|i| i.key)
            .collect()
    }

    #[test]
    fn a_fleet_tool_checks_keys_and_values_but_leaves_paths_to_the_device() {
        assert!(check_change(&serde_json::json!({"sampling": {"rate_hz": 1.0}})).is_ok());
        assert!(check_change(&serde_json::json!({"model": {"bundle": "/var/lib/caer/b"}})).is_ok());
        let keys = |patch| -> Vec<String> {
            check_change(&patch)
                .unwrap_err()
                .0
                .into_iter()
                .map(|i| i.key)
                .collect()
        };
        assert_eq!(
            keys(serde_json::json!({"source": {"kind": "v4l2"}})),
            ["source.kind"]
        );
        assert_eq!(
            keys(serde_json::json!({"model": {"bundle": "rel/b"}})),
            ["model.bundle"]
        );
        assert_eq!(
            keys(serde_json::json!({"model": {"trusted_keys": ["00"]}})),
            ["model.trusted_keys"]
        );
        assert_eq!(
            keys(serde_json::json!({"sampling": {"rate_hz": -1.0}})),
            ["sampling.rate_hz"]
        );
        assert_eq!(
            keys(serde_json::json!({"sampling": {"rate_hz": "fast"}})),
            ["sampling.rate_hz"]
        );
        assert!(check_change(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn programs_devices_files_and_the_source_are_local_only() {
        let v = base("");
        let keys = refused_keys(
            &v,
            serde_json::json!({
                "source": {"video_file": {"path": "/v", "ffmpeg": "/bin/sh"}, "max_frames": 1,
                           "kind": "frame_dir", "v4l2": {"device": "/dev/mem"}},
                "model": {"calibration": "/dev/zero"},
                "mqtt": {"url": "mqtt://evil"},
                "remote": {"memory_budget_mib": 65536},
            }),
        );
        assert_eq!(
            keys,
            [
                "model.calibration",
                "mqtt.url",
                "remote.memory_budget_mib",
                "source.kind",
                "source.max_frames",
                "source.v4l2.device",
                "source.video_file.ffmpeg",
                "source.video_file.path",
            ]
        );
        assert!(v
            .merge_remote(&serde_json::json!({"track": {"max_misses": 9}, "source": {"fps": 5}}))
            .is_ok());
        assert_eq!(
            refused_keys(&v, serde_json::json!({"track": null})),
            ["track"]
        );
    }

    #[test]
    fn remote_paths_must_resolve_below_an_allowed_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        std::fs::create_dir_all(root.join("b1")).unwrap();
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let v = base(&format!(
            "[remote]\nallowed_roots = [{:?}]\n",
            root.display().to_string()
        ));
        let bundle = |p: &Path| serde_json::json!({"model": {"bundle": p}});
        let reason = |p: &Path| v.merge_remote(&bundle(p)).unwrap_err().0[0].reason.clone();
        assert!(v.merge_remote(&bundle(&root.join("b1"))).is_ok());
        let refusal = "must be an existing path below one of remote.allowed_roots";
        assert_eq!(
            reason(&root.join("link")),
            refusal,
            "a symlink out of the root"
        );
        assert_eq!(reason(&root.join("b1/../../secret")), refusal, "dot-dot");
        assert_eq!(reason(&root.join("missing")), refusal);
        assert_eq!(reason(&outside), refusal);
        assert_eq!(reason(Path::new("relative")), "must be an absolute path");
        let none = base("");
        assert!(
            none.merge_remote(&bundle(&root.join("b1"))).unwrap_err().0[0]
                .reason
                .contains("local only")
        );
    }

    #[test]
    fn every_configuration_must_fit_the_memory_budget() {
        let v = base("[source.generated]\nwidth = 4096\nheight = 4096\n");
        let err = v
            .merge_remote(&serde_json::json!({"sampling": {"queue_frames": 256}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "sampling.queue_frames");
        assert!(err.0[0].reason.contains("memory_budget_mib"), "{err}");
        let text = "[device]\nsite = \"s\"\nroom = \"r\"\nid = \"d\"\n[source]\nkind = \"generated\"\n\
                    [source.generated]\nwidth = 4096\nheight = 4096\n[sampling]\nqueue_frames = 256\n";
        assert!(DaemonConfig::from_toml(text).unwrap().validate().is_err());
    }
}

//! The daemon's configuration: one TOML file, one typed [`DaemonConfig`].
//!
//! Each section is the settings type of the stage it configures, defined beside that stage
//! with a doc comment and a default per field and an `issues` check that states each range
//! once ([`crate::pipeline::settings`]): `[source]` ([`SourceConfig`]), `[detect]`, `[track]`,
//! `[context]`, `[sampling]`, `[model]`, `[policy]` in the pipeline; `[mqtt]`, `[outbox]`,
//! `[privacy]`, `[thermal]` in the daemon; `[device]`, `[report]` and `[remote]` here.
//! `caerd.example.toml` (beside this crate's `Cargo.toml`) lists every key with its default;
//! a test fails if a key is missing from it.
//!
//! Life of a configuration:
//!
//! 1. [`DaemonConfig::from_toml`] parses (unknown keys and wrong types are errors that name
//!    the key); [`DaemonConfig::load`] reads the file first.
//! 2. [`DaemonConfig::validate`] runs every section's check and the rules between sections
//!    **without I/O**, collects every problem ([`ConfigErrors`], each naming its key and the
//!    reason) and returns a [`ValidatedConfig`], the only thing the daemon builds from;
//!    building the pipeline is then wiring only.
//! 3. A remote change (`config/set`) is a partial JSON object checked against the remote
//!    policy ([`remote`]), merged onto the running configuration and validated the same way.
//!
//! Whether a valid configuration can *run* (the bundle exists, the frame directory exists)
//! is decided when the daemon builds its pipeline, not here.

use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::board::{privacy_issues, LineConfig, PrivacyPinsConfig, ThermalConfig};
pub use super::outbox::OutboxConfig;
pub use super::publish::mqtt::{BrokerAddress, MqttConfig};
pub use crate::pipeline::aggregate::{PolicyConfig, Profile};
pub use crate::pipeline::crop::ContextConfig;
pub use crate::pipeline::detect::{BlazeConfig, DetectConfig, DetectorKind, SeetaConfig};
pub use crate::pipeline::model::ModelConfig;
pub use crate::pipeline::schedule::SamplingConfig;
use crate::pipeline::settings::Issues;
pub use crate::pipeline::settings::SettingIssue as ConfigIssue;
pub use crate::pipeline::source::generated::GeneratedConfig;
pub use crate::pipeline::source::{
    FrameDirConfig, SourceConfig, SourceKind, V4l2Config, VideoFileConfig,
};
pub use crate::pipeline::track::TrackerConfig;
pub use device::{is_topic_name, DeviceConfig, Topics};
pub use remote::RemoteConfig;

mod device;
pub mod remote;

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/caer/caerd.toml";

/// Largest accepted TOML file or remote change, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Everything `caerd` reads from its configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory for the daemon's own state: the aggregate outbox and `state.json` (paused
    /// flag, remote configuration). Nothing derived from pixels is ever written here.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Who this device is; names the MQTT topics.
    pub device: DeviceConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// How faces are found in a frame.
    #[serde(default)]
    pub detect: DetectConfig,
    /// How faces are followed from frame to frame.
    #[serde(default)]
    pub track: TrackerConfig,
    /// The context region around each face.
    #[serde(default)]
    pub context: ContextConfig,
    /// Which frames of each tracked face the model sees.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// The model bundle and the inference backend.
    #[serde(default)]
    pub model: ModelConfig,
    /// What may leave the device.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How often records are published.
    #[serde(default)]
    pub report: ReportConfig,
    /// The MQTT broker; without `mqtt.url` payloads are written to stdout as JSON lines.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The on-disk outbox of aggregate records.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The privacy LED and hardware privacy switch (caerd built with the cargo feature
    /// `gpio`); none: no LED, no switch. With it, the camera is open only while the switch is
    /// released, and the LED is lit whenever it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyPinsConfig>,
    /// The thermal guard: board temperature in stats, lower sampling rate while hot.
    #[serde(default)]
    pub thermal: ThermalConfig,
    /// What a remote `config/set` may change, and the bounds it must stay within. Local only.
    #[serde(default)]
    pub remote: RemoteConfig,
}

/// Default of `state_dir`.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/caer")
}

/// Publication intervals: the `[report]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Seconds per engagement record, 1 to 86400.
    pub interval_secs: NonZeroU64,
    /// Seconds between `stats` records, 1 to 86400.
    pub stats_interval_secs: NonZeroU64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            interval_secs: NonZeroU64::new(60).expect("60 is not zero"),
            stats_interval_secs: NonZeroU64::new(60).expect("60 is not zero"),
        }
    }
}

impl ReportConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.at_most("interval_secs", self.interval_secs.get(), 86_400);
        v.at_most(
            "stats_interval_secs",
            self.stats_interval_secs.get(),
            86_400,
        );
    }
}

/// Every problem found in one configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} configuration error{}: ",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// One problem.
    pub fn one(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigIssue {
            key: key.into(),
            reason: reason.into(),
        }])
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid, or not a valid configuration.
    #[error("{}: {errors}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        errors: ConfigErrors,
    },
}

/// A configuration that passed [`DaemonConfig::validate`]: the only input the daemon
/// builds from.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedConfig {
    config: DaemonConfig,
    broker: Option<BrokerAddress>,
    topics: Topics,
}

impl ValidatedConfig {
    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }
    /// The broker, if one is configured (else payloads go to stdout).
    pub fn broker(&self) -> Option<&BrokerAddress> {
        self.broker.as_ref()
    }
    /// This device's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }
    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        let d = &self.config.device;
        self.config
            .mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("caerd-{}-{}", d.site, d.id))
    }
    /// The report interval.
    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.config.report.interval_secs.get())
    }
    /// This configuration with the model bundle at `path` (one delivered over the fleet, or
    /// the configured one again after a rollback).
    pub(crate) fn with_model_bundle(&self, path: PathBuf) -> ValidatedConfig {
        let mut next = self.clone();
        next.config.model.bundle = path;
        next
    }
    /// The stats interval.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.config.report.stats_interval_secs.get())
    }
}

/// A serde path rendered as a dotted key (`?` segments of untagged data dropped).
pub(crate) fn path_key(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        String::new()
    } else {
        key
    }
}

impl DaemonConfig {
    /// Parses a TOML document. Unknown keys, missing required keys and wrong types are
    /// errors naming the key (parsing stops at the first of these).
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigErrors> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigErrors::one(
                "",
                format!(
                    "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                    text.len()
                ),
            ));
        }
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| ConfigErrors::one("", one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(deserializer)
            .map_err(|e| ConfigErrors::one(path_key(e.path()), one_line(&e.inner().to_string())))
    }

    /// Reads and parses the file at `path` (not validated yet).
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DaemonConfig::from_toml(&text).map_err(|errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Runs every section's check and the rules between sections, without I/O, and reports
    /// every problem.
    pub fn validate(self) -> Result<ValidatedConfig, ConfigErrors> {
        let mut v = Issues::default();
        if self.state_dir.as_os_str().is_empty() {
            v.push("state_dir", "must not be empty");
        } else if !self.state_dir.is_absolute() {
            v.push(
                "state_dir",
                format!("{:?} must be an absolute path", self.state_dir),
            );
        }
        v.section("device", |v| self.device.issues(v));
        v.section("source", |v| self.source.issues(v));
        v.section("detect", |v| self.detect.issues(v));
        if self.detect.kind == DetectorKind::Annotated && !self.source.has_annotations() {
            v.push(
                "detect.kind",
                "\"annotated\" needs a source with known face boxes (generated, or frame_dir \
                 with annotations); use \"blaze\" or \"seeta\" for real frames",
            );
        }
        v.section("track", |v| self.track.issues(v));
        v.section("context", |v| self.context.issues(v));
        v.section("sampling", |v| self.sampling.issues(v));
        v.section("model", |v| self.model.issues(v));
        if self.policy.profile.runs_model() && self.model.bundle.as_os_str().is_empty() {
            v.push("model.bundle", "must not be empty");
        }
        v.section("policy", |v| self.policy.issues(v));
        v.section("report", |v| self.report.issues(v));
        let mut broker = None;
        v.section("mqtt", |v| broker = self.mqtt.check(v));
        v.section("outbox", |v| self.outbox.issues(v));
        if let Some(pins) = &self.privacy {
            v.section("privacy", |v| privacy_issues(pins, v));
        }
        v.section("thermal", |v| self.thermal.issues(v));
        v.section("remote", |v| self.remote.issues(v));
        remote::check_memory_budget(&self, &mut v);
        if !v.is_empty() {
            return Err(ConfigErrors(v.into_vec()));
        }
        let topics = Topics::new(&self.device);
        Ok(ValidatedConfig {
            config: self,
            broker,
            topics,
        })
    }

    /// A configuration with built-in defaults for the demo: the synthetic classroom, the
    /// annotated detector, no broker, a short report interval.
    pub fn demo(bundle: PathBuf, state_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            state_dir,
            device: DeviceConfig {
                site: "demo".into(),
                room: "room-1".into(),
                id: "caerd-demo".into(),
            },
            source: SourceConfig {
                generated: GeneratedConfig {
                    width: 960,
                    height: 540,
                    students: std::num::NonZeroUsize::new(12).expect("12 is not zero"),
                    // a new scripted state every 30 s at 10 fps: the room changes as you watch
                    state_frames: 300,
                    ..GeneratedConfig::default()
                },
                ..SourceConfig::of_kind(SourceKind::Generated)
            },
            detect: DetectConfig::default(),
            track: TrackerConfig::default(),
            context: ContextConfig::default(),
            sampling: SamplingConfig {
                rate_hz: 10.0,
                window_stride: std::num::NonZeroUsize::new(4),
                ..SamplingConfig::default()
            },
            model: ModelConfig {
                bundle,
                ..ModelConfig::default()
            },
            policy: PolicyConfig {
                profile: Profile::Fine,
                ..PolicyConfig::default()
            },
            report: ReportConfig {
                interval_secs: NonZeroU64::new(5).expect("5 is not zero"),
                stats_interval_secs: NonZeroU64::new(10).expect("10 is not zero"),
            },
            mqtt: MqttConfig::default(),
            outbox: OutboxConfig::default(),
            privacy: None,
            thermal: ThermalConfig::default(),
            remote: RemoteConfig::default(),
        }
    }
}

/// toml's messages span several lines (a code excerpt); keep them on one for logs and acks.
fn one_line(message: &str) -> String {
    message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;
    use crate::daemon::publish::mqtt::parse_broker_url;

    const MINIMAL: &str = r#"
        [device]
        site = "school-1"
        room = "3b"
        id = "cam-01"
        [source]
        kind = "generated"
    "#;

    fn issues(text: &str) -> Vec<ConfigIssue> {
        DaemonConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .0
    }

    fn keys(issues: &[ConfigIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn minimal_file_takes_every_default() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let c = v.config();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/caer"));
        assert_eq!(c.policy.profile, Profile::Coarse);
        assert_eq!(c.policy.min_group_size.get(), 5);
        assert_eq!(c.report.interval_secs.get(), 60);
        assert_eq!(c.model.bundle, PathBuf::from("/opt/caer/bundle"));
        assert!(v.broker().is_none());
        assert_eq!(v.topics().engagement(), "caer/school-1/cam-01/engagement");
        assert_eq!(v.client_id(), "caerd-school-1-cam-01");
    }

    #[test]
    fn example_file_is_valid_and_mentions_every_key() {
        let text = include_str!("../../../caerd.example.toml");
        let config = DaemonConfig::from_toml(text).unwrap();
        config.clone().validate().unwrap();
        // Every key of a fully populated configuration must be documented in the example.
        let mut full = DaemonConfig::demo("/b".into(), "/s".into());
        full.source.max_frames = NonZeroU64::new(1);
        full.source.frame_dir = Some(FrameDirConfig {
            path: "/f".into(),
            annotations: Some("/a".into()),
        });
        full.source.video_file = Some(VideoFileConfig {
            path: "/v.mp4".into(),
            ffmpeg: crate::pipeline::source::settings::default_ffmpeg(),
            ffprobe: crate::pipeline::source::settings::default_ffprobe(),
        });
        full.model.threads = NonZeroUsize::new(1);
        full.model.calibration = Some("/c".into());
        full.mqtt = MqttConfig {
            url: Some("mqtt://h".into()),
            client_id: Some("c".into()),
            username: Some("u".into()),
            password_file: Some("/p".into()),
            password_env: Some("E".into()),
            ca_file: Some("/ca".into()),
            client_cert_file: Some("/c".into()),
            client_key_file: Some("/k".into()),
            ..MqttConfig::default()
        };
        full.privacy = Some(PrivacyPinsConfig {
            led: LineConfig {
                chip: "/dev/gpiochip0".into(),
                line: 1,
                active_low: false,
            },
            switch: LineConfig {
                chip: "/dev/gpiochip0".into(),
                line: 2,
                active_low: true,
            },
            release_after: NonZeroU32::MIN,
        });
        let mut paths = Vec::new();
        collect_keys("", &serde_json::to_value(&full).unwrap(), &mut paths);
        let documented: Vec<String> = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
        let mut section = String::new();
        let mut seen = Vec::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if l.starts_with('[') && l.ends_with(']') {
                section = l.trim_matches(['[', ']']).to_string();
            } else if let Some((k, _)) = l.split_once('=') {
                let k = k.trim();
                seen.push(if section.is_empty() {
                    k.to_string()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
        assert!(!documented.is_empty());
        let missing: Vec<_> = paths.iter().filter(|p| !seen.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "keys missing from caerd.example.toml: {missing:?}"
        );
    }

    fn collect_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    collect_keys(&path, v, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let err = DaemonConfig::from_toml(&format!("{MINIMAL}\n[policy]\nprofil = \"fine\""))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.profil");
        assert!(err.0[0].reason.contains("unknown field `profil`"), "{err}");
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[policy]\nmin_group_size = \"five\""))
                .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size", "{err}");
        let err = DaemonConfig::from_toml(&format!("{MINIMAL}\n[report]\ninterval_secs = 0"))
            .unwrap_err();
        assert_eq!(err.0[0].key, "report.interval_secs", "{err}");
        let err = DaemonConfig::from_toml("[source]\nkind = \"generated\"").unwrap_err();
        assert!(err.to_string().contains("missing field `device`"), "{err}");
    }

    #[test]
    fn camera_settings_are_validated() {
        let text = format!(
            "{MINIMAL}\n[source.v4l2]\nformats = []\nbuffers = 1\nreopen_min_ms = 5000\nreopen_max_ms = 1000"
        )
        .replace("kind = \"generated\"", "kind = \"v4l2\"");
        let errors = DaemonConfig::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "source.v4l2.formats",
            "source.v4l2.buffers",
            "source.v4l2.reopen_min_ms",
        ] {
            assert!(keys.contains(&key), "{key} missing: {errors}");
        }
        assert_eq!(
            keys.contains(&"source.kind"),
            !cfg!(feature = "v4l2"),
            "without the v4l2 feature the kind itself is refused: {errors}"
        );
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[source.v4l2]\nformats = [\"h264\"]"))
                .unwrap_err();
        assert_eq!(err.0[0].key, "source.v4l2.formats[0]", "{err}");
    }

    #[test]
    fn privacy_pins_are_validated_and_need_the_gpio_feature() {
        let pins = "[privacy]\nrelease_after = 500\n\
                    led = { chip = \"/dev/gpiochip0\", line = 7 }\n\
                    switch = { chip = \"/dev/gpiochip0\", line = 7, active_low = true }";
        let config = DaemonConfig::from_toml(&format!("{MINIMAL}\n{pins}")).unwrap();
        let p = config.privacy.as_ref().unwrap();
        assert!(p.switch.active_low && !p.led.active_low);
        let found = issues(&format!("{MINIMAL}\n{pins}"));
        let found = keys(&found);
        assert!(found.contains(&"privacy.switch.line"), "{found:?}");
        assert!(found.contains(&"privacy.release_after"), "{found:?}");
        assert_eq!(
            found.contains(&"privacy"),
            !cfg!(feature = "gpio"),
            "without the gpio feature the section itself is refused: {found:?}"
        );

        let lines = "led = { chip = \"/dev/gpiochip0\", line = 7 }\n\
                     switch = { chip = \"/dev/gpiochip0\", line = 8 }";
        let good = format!("[privacy]\n{lines}");
        let result = DaemonConfig::from_toml(&format!("{MINIMAL}\n{good}"))
            .unwrap()
            .validate();
        if cfg!(feature = "gpio") {
            let v = result.unwrap();
            let p = v.config().privacy.as_ref().unwrap();
            assert_eq!(p.release_after.get(), 3, "default");
        } else {
            let errors = result.unwrap_err();
            assert_eq!(keys(&errors.0), ["privacy"]);
            assert!(errors.0[0].reason.contains("feature gpio"), "{errors}");
        }

        // Parse errors name the key.
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[privacy]\nrelease_after = 0\n{lines}"))
                .unwrap_err();
        assert_eq!(err.0[0].key, "privacy.release_after", "{err}");
        let err = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[privacy]\nled = {{ chip = \"/dev/gpiochip0\", line = 7, pin = 3 }}"
        ))
        .unwrap_err();
        assert_eq!(err.0[0].key, "privacy.led.pin", "{err}");
        let err = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[privacy]\nled = {{ chip = \"/dev/gpiochip0\", line = 7 }}"
        ))
        .unwrap_err();
        assert!(err.0[0].reason.contains("switch"), "{err}");
        // Not changeable remotely.
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let err = v
            .merge_remote(&serde_json::json!({"privacy": null, "thermal": {"enabled": false}}))
            .unwrap_err();
        assert_eq!(keys(&err.0), ["privacy", "thermal.enabled"]);
    }

    #[test]
    fn thermal_settings_default_to_on_and_are_validated() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let t = &v.config().thermal;
        assert!(t.enabled);
        assert_eq!(t.root, PathBuf::from("/sys/class/thermal"));
        assert_eq!(t.guard(), caer_board::thermal::ThermalConfig::default());

        let found = issues(&format!(
            "{MINIMAL}\n[thermal]\nhysteresis_celsius = 0\nthrottled_sampling_factor = 1.5\nroot = \"\""
        ));
        assert_eq!(
            keys(&found),
            [
                "thermal.hysteresis_celsius",
                "thermal.throttled_sampling_factor",
                "thermal.root"
            ]
        );
        assert!(found[1].reason.contains("1.5"), "{found:?}");
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[thermal]\nthreshold = 80")).unwrap_err();
        assert_eq!(err.0[0].key, "thermal.threshold", "{err}");
        let off = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[thermal]\nenabled = false\nthrottle_above_celsius = 70"
        ))
        .unwrap()
        .validate()
        .unwrap();
        assert!(!off.config().thermal.enabled);
        assert_eq!(off.config().thermal.throttle_above_celsius, 70.0);
    }

    #[test]
    fn validation_collects_every_error() {
        let text = r#"
            state_dir = "relative"
            [device]
            site = "a/b"
            room = ""
            id = "ok"
            [source]
            kind = "frame_dir"
            fps = 0.0
            [detect]
            kind = "annotated"
            [policy]
            min_group_size = 1
            [mqtt]
            url = "http://broker"
            max_in_flight = 100
        "#;
        let found = issues(text);
        let found = keys(&found);
        for key in [
            "state_dir",
            "device.site",
            "device.room",
            "source.fps",
            "source.frame_dir",
            "detect.kind",
            "policy.min_group_size",
            "mqtt.url",
            "mqtt.max_in_flight",
        ] {
            assert!(found.contains(&key), "{key} not in {found:?}");
        }
        assert!(!found.contains(&"device.id"));
    }

    #[test]
    fn detector_settings_out_of_range_are_each_named_by_key() {
        let text = format!(
            "{MINIMAL}\n[detect.blaze]\ntile_sizes = [224, 8]\nscore_threshold = 1.5\nnms_iou = 0.0\n\
             [detect.seeta]\nmin_face_size = 10\nwindow_step = 0\n"
        );
        let found = issues(&text);
        assert_eq!(
            keys(&found),
            [
                "detect.blaze.tile_sizes",
                "detect.blaze.score_threshold",
                "detect.blaze.nms_iou",
                "detect.seeta.min_face_size",
                "detect.seeta.window_step",
            ],
            "{found:?}"
        );
        assert!(found[1].reason.contains("1.5"), "{found:?}");
    }

    #[test]
    fn broker_urls() {
        let ok = |u: &str| parse_broker_url(u).unwrap();
        assert_eq!(
            ok("mqtt://localhost"),
            BrokerAddress {
                host: "localhost".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(
            ok("mqtts://b.example:8884"),
            BrokerAddress {
                host: "b.example".into(),
                port: 8884,
                tls: true
            }
        );
        assert_eq!(ok("mqtt://[::1]:1999").host, "::1");
        assert_eq!(ok("mqtts://h").port, 8883);
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/x",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_and_credentials_rules() {
        let base = format!("{MINIMAL}\n[mqtt]\n");
        let found = issues(&format!(
            "{base}url = \"mqtts://h\"\npassword_file = \"/p\"\npassword_env = \"P\""
        ));
        let found = keys(&found);
        assert!(found.contains(&"mqtt.ca_file"));
        assert!(found.contains(&"mqtt.username"));
        assert!(found.contains(&"mqtt.password_env"));
        let found = issues(&format!("{MINIMAL}\n[mqtt]\nusername = \"u\""));
        assert_eq!(keys(&found), ["mqtt.username"]);
    }

    #[test]
    fn remote_merge_is_all_or_nothing() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let merged = v
            .merge_remote(
                &serde_json::json!({"policy": {"profile": "fine"}, "report": {"interval_secs": 5}}),
            )
            .unwrap();
        assert_eq!(merged.config().policy.profile, Profile::Fine);
        assert_eq!(merged.config().report.interval_secs.get(), 5);
        assert_eq!(merged.config().policy.min_group_size.get(), 5);
        // null resets to the default.
        let back = merged
            .merge_remote(&serde_json::json!({"report": {"interval_secs": null}}))
            .unwrap();
        assert_eq!(back.config().report.interval_secs.get(), 60);

        let err = v
            .merge_remote(&serde_json::json!({"policy": {"min_group_size": "x"}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size");
        let err = v
            .merge_remote(&serde_json::json!({"policy": {"colour": 1}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.colour");
        assert!(err.0[0].reason.contains("cannot be changed remotely"));
        let err = v
            .merge_remote(&serde_json::json!({"policy": {"min_group_size": 1}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size");
        let err = v
            .merge_remote(&serde_json::json!({"mqtt": {"url": "mqtt://evil"}, "device": {}}))
            .unwrap_err();
        assert_eq!(keys(&err.0), ["device", "mqtt.url"]);
        assert!(v.merge_remote(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn demo_config_is_valid() {
        let v = DaemonConfig::demo("/b".into(), "/tmp/s".into())
            .validate()
            .unwrap();
        assert_eq!(v.config().policy.profile, Profile::Fine);
    }
}

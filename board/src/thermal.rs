//! The thermal guard: reads the board's thermal zones from sysfs and lowers the sampling rate
//! while the board is hot.
//!
//! Each [`ThermalGuard::poll`] lists `<root>/thermal_zone*` (root `/sys/class/thermal` on a
//! board, a temp dir in tests), reads every zone's `temp` (millidegrees Celsius) and `type`, and
//! takes the hottest usable zone. A zone that cannot be read, holds no integer, reads outside a
//! plausible range, or whose type is on the ignore list is skipped, and the reading lists it
//! with the reason; a poll fails only when no zone at all is usable.
//!
//! Throttling has hysteresis: the guard throttles when the hottest zone reaches
//! `throttle_above_celsius` and restores below `throttle_above_celsius - hysteresis_celsius`.
//! While throttled, [`ThermalReading::sampling_factor`] is `throttled_sampling_factor`, else 1;
//! the daemon multiplies its sampling rate by it. A failed poll leaves the state unchanged.
//!
//! Reads are blocking sysfs reads (some sensors sit behind I²C and take milliseconds): call
//! `poll` from a blocking thread, every few seconds, not from an async worker.
//!
//! On Jetson Nano / TX1-class boards the `PMIC-Die` zone is a trip-point sensor that reads a
//! fixed 100 °C, so it is ignored by default.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{InvalidThermalConfig, ThermalConfigError, ThermalError};

/// Where sysfs puts the thermal zones.
pub const DEFAULT_THERMAL_ROOT: &str = "/sys/class/thermal";

/// Temperatures outside this range (millidegrees) are sensor errors, not readings.
pub const PLAUSIBLE_MILLIDEGREES: std::ops::RangeInclusive<i64> = -50_000..=200_000;

/// Thermal guard settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalConfig {
    /// The directory holding `thermal_zone*/` (sysfs; a fake tree in tests).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Lower the sampling rate when the hottest zone reaches this temperature (°C).
    #[serde(default = "default_throttle_above_celsius")]
    pub throttle_above_celsius: f32,
    /// Restore the rate once the hottest zone is below `throttle_above_celsius` minus this (°C).
    #[serde(default = "default_hysteresis_celsius")]
    pub hysteresis_celsius: f32,
    /// Sampling-rate multiplier while throttled, in (0, 1].
    #[serde(default = "default_throttled_sampling_factor")]
    pub throttled_sampling_factor: f32,
    /// Zone types (the `type` file, exact match) never used, e.g. fixed or estimated sensors.
    #[serde(default = "default_ignore_zone_types")]
    pub ignore_zone_types: Vec<String>,
}

/// Default for [`ThermalConfig::root`]: [`DEFAULT_THERMAL_ROOT`].
pub fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_THERMAL_ROOT)
}

/// Default for [`ThermalConfig::throttle_above_celsius`]: 85 °C, below the Jetson's own
/// throttling points so that the daemon sheds work first.
pub const fn default_throttle_above_celsius() -> f32 {
    85.0
}

/// Default for [`ThermalConfig::hysteresis_celsius`]: 10 °C (restore below 75 °C by default).
pub const fn default_hysteresis_celsius() -> f32 {
    10.0
}

/// Default for [`ThermalConfig::throttled_sampling_factor`]: half the rate.
pub const fn default_throttled_sampling_factor() -> f32 {
    0.5
}

/// Default for [`ThermalConfig::ignore_zone_types`]: `PMIC-Die` (fixed 100 °C on Jetson Nano).
pub fn default_ignore_zone_types() -> Vec<String> {
    vec!["PMIC-Die".to_owned()]
}

impl Default for ThermalConfig {
    fn default() -> Self {
        Self {
            root: default_root(),
            throttle_above_celsius: default_throttle_above_celsius(),
            hysteresis_celsius: default_hysteresis_celsius(),
            throttled_sampling_factor: default_throttled_sampling_factor(),
            ignore_zone_types: default_ignore_zone_types(),
        }
    }
}

impl ThermalConfig {
    /// Checks the numbers; does no I/O. Reports every problem, not just the first.
    ///
    /// # Errors
    ///
    /// [`InvalidThermalConfig`] listing each [`ThermalConfigError`].
    pub fn validate(&self) -> Result<(), InvalidThermalConfig> {
        let mut errors = Vec::new();
        if !self.throttle_above_celsius.is_finite() {
            errors.push(ThermalConfigError::ThrottleNotFinite(
                self.throttle_above_celsius,
            ));
        }
        if !(self.hysteresis_celsius.is_finite() && self.hysteresis_celsius > 0.0) {
            errors.push(ThermalConfigError::HysteresisNotPositive(
                self.hysteresis_celsius,
            ));
        }
        let factor = self.throttled_sampling_factor;
        if !(factor > 0.0 && factor <= 1.0) {
            errors.push(ThermalConfigError::FactorOutOfRange(factor));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidThermalConfig(errors))
        }
    }

    /// The temperature below which a throttled guard restores the rate (°C).
    pub fn restore_below_celsius(&self) -> f32 {
        self.throttle_above_celsius - self.hysteresis_celsius
    }
}

/// One usable zone's temperature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneTemp {
    /// The sysfs directory name, e.g. `thermal_zone1`.
    pub zone: String,
    /// The zone's `type`, e.g. `GPU-therm`; `None` when it could not be read.
    pub kind: Option<String>,
    /// Degrees Celsius.
    pub celsius: f32,
}

/// A zone left out of a reading, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedZone {
    /// The sysfs directory name, e.g. `thermal_zone4`.
    pub zone: String,
    /// The zone's `type` when it could be read.
    pub kind: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a zone was left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
#[non_exhaustive]
pub enum SkipReason {
    /// Its type is on [`ThermalConfig::ignore_zone_types`].
    Ignored,
    /// Reading `temp` failed (many drivers answer EINVAL or ENODATA for a sensor that is off).
    Unreadable {
        /// The I/O error, as text.
        error: String,
    },
    /// `temp` did not hold an integer.
    Garbage {
        /// What it held (trimmed, at most 32 characters).
        content: String,
    },
    /// `temp` was outside [`PLAUSIBLE_MILLIDEGREES`].
    Implausible {
        /// The value read.
        millidegrees: i64,
    },
}

impl fmt::Display for SkippedZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.zone)?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        match &self.reason {
            SkipReason::Ignored => write!(f, " ignored by config"),
            SkipReason::Unreadable { error } => write!(f, " unreadable: {error}"),
            SkipReason::Garbage { content } => write!(f, " holds no temperature: {content:?}"),
            SkipReason::Implausible { millidegrees } => {
                write!(f, " implausible reading {millidegrees} m°C")
            }
        }
    }
}

/// A change of the throttle state in one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleChange {
    /// The hottest zone reached the threshold: sampling lowered.
    Throttled,
    /// The hottest zone fell below the restore point: sampling restored.
    Restored,
}

/// The result of one [`ThermalGuard::poll`]; the daemon reports it in its stats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThermalReading {
    /// The hottest usable zone's temperature (°C).
    pub max_celsius: f32,
    /// The hottest usable zone.
    pub zone: ZoneTemp,
    /// Whether the guard is throttling after this poll.
    pub throttled: bool,
    /// The sampling-rate multiplier after this poll: 1, or the throttled factor.
    pub sampling_factor: f32,
    /// Set when this poll changed the throttle state.
    pub change: Option<ThrottleChange>,
    /// Every usable zone, in zone-number order.
    pub zones: Vec<ZoneTemp>,
    /// Every skipped zone, with its reason.
    pub skipped: Vec<SkippedZone>,
}

/// Reads the thermal zones and keeps the throttle state. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ThermalGuard {
    config: ThermalConfig,
    throttled: bool,
}

impl ThermalGuard {
    /// Validates the config (no I/O); the guard starts unthrottled.
    ///
    /// # Errors
    ///
    /// [`InvalidThermalConfig`] listing every problem.
    pub fn new(config: ThermalConfig) -> Result<Self, InvalidThermalConfig> {
        config.validate()?;
        Ok(Self {
            config,
            throttled: false,
        })
    }

    /// Reads every zone and updates the throttle state.
    ///
    /// # Errors
    ///
    /// [`ThermalError`] when the root cannot be listed, has no zones, or no zone is usable; the
    /// throttle state is then unchanged.
    pub fn poll(&mut self) -> Result<ThermalReading, ThermalError> {
        let (zones, skipped) = read_zones(&self.config)?;
        let Some(hottest) = zones
            .iter()
            .max_by(|a, b| a.celsius.total_cmp(&b.celsius))
            .cloned()
        else {
            return Err(ThermalError::NoUsableZone {
                root: self.config.root.clone(),
                skipped,
            });
        };
        let change = self.update(hottest.celsius);
        if let Some(change) = change {
            tracing::info!(
                ?change,
                celsius = hottest.celsius,
                zone = %hottest.zone,
                kind = hottest.kind.as_deref().unwrap_or("?"),
                sampling_factor = self.sampling_factor(),
                "thermal throttle state changed"
            );
        }
        Ok(ThermalReading {
            max_celsius: hottest.celsius,
            zone: hottest,
            throttled: self.throttled,
            sampling_factor: self.sampling_factor(),
            change,
            zones,
            skipped,
        })
    }

    /// Whether the guard is throttling.
    pub fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// The sampling-rate multiplier now: 1, or the throttled factor.
    pub fn sampling_factor(&self) -> f32 {
        if self.throttled {
            self.config.throttled_sampling_factor
        } else {
            1.0
        }
    }

    /// The config in use.
    pub fn config(&self) -> &ThermalConfig {
        &self.config
    }

    /// The hysteresis step, on the hottest temperature.
    fn update(&mut self, celsius: f32) -> Option<ThrottleChange> {
        if !self.throttled && celsius >= self.config.throttle_above_celsius {
            self.throttled = true;
            Some(ThrottleChange::Throttled)
        } else if self.throttled && celsius < self.config.restore_below_celsius() {
            self.throttled = false;
            Some(ThrottleChange::Restored)
        } else {
            None
        }
    }
}

/// Lists and reads the zones, in zone-number order.
fn read_zones(config: &ThermalConfig) -> Result<(Vec<ZoneTemp>, Vec<SkippedZone>), ThermalError> {
    let root = &config.root;
    let list_error = |source| ThermalError::ListZones {
        root: root.clone(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in fs::read_dir(root).map_err(list_error)? {
        let name = entry.map_err(list_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name
            .strip_prefix("thermal_zone")
            .and_then(|n| n.parse::<u32>().ok())
        {
            dirs.push((number, name.to_owned()));
        }
    }
    if dirs.is_empty() {
        return Err(ThermalError::NoZones { root: root.clone() });
    }
    dirs.sort_unstable();

    let mut zones = Vec::with_capacity(dirs.len());
    let mut skipped = Vec::new();
    for (_, zone) in dirs {
        let dir = root.join(&zone);
        let kind = read_type(&dir);
        if kind
            .as_ref()
            .is_some_and(|k| config.ignore_zone_types.iter().any(|i| i == k))
        {
            skipped.push(SkippedZone {
                zone,
                kind,
                reason: SkipReason::Ignored,
            });
            continue;
        }
        match read_temp(&dir.join("temp")) {
            Ok(millidegrees) => zones.push(ZoneTemp {
                zone,
                kind,
                // Exact for every plausible value: |m°C| < 2^24.
                celsius: millidegrees as f32 / 1000.0,
            }),
            Err(reason) => skipped.push(SkippedZone { zone, kind, reason }),
        }
    }
    Ok((zones, skipped))
}

/// The zone's `type`, trimmed; `None` when missing, unreadable or empty.
fn read_type(dir: &Path) -> Option<String> {
    let kind = fs::read_to_string(dir.join("type")).ok()?;
    let kind = kind.trim();
    (!kind.is_empty()).then(|| kind.to_owned())
}

/// The zone's `temp` in millidegrees, or why it is unusable.
fn read_temp(path: &Path) -> Result<i64, SkipReason> {
    let text = fs::read(path).map_err(|e: io::Error| SkipReason::Unreadable {
        error: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&text);
    let trimmed = text.trim();
    let millidegrees = trimmed.parse::<i64>().map_err(|_| SkipReason::Garbage {
        content: trimmed.chars().take(32).collect(),
    })?;
    if PLAUSIBLE_MILLIDEGREES.contains(&millidegrees) {
        Ok(millidegrees)
    } else {
        Err(SkipReason::Implausible { millidegrees })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> ThermalGuard {
        ThermalGuard::new(ThermalConfig {
            root: PathBuf::from("/unused"),
            ..ThermalConfig::default()
        })
        .expect("default config is valid")
    }

    #[test]
    fn hysteresis_throttles_at_the_threshold_and_restores_below_the_restore_point() {
        let mut g = guard();
        assert_eq!(g.update(84.9), None);
        assert_eq!(g.update(85.0), Some(ThrottleChange::Throttled));
        assert_eq!(g.sampling_factor(), 0.5);
        // Between restore point (75) and threshold: stays throttled.
        assert_eq!(g.update(80.0), None);
        assert_eq!(g.update(75.0), None);
        assert!(g.is_throttled());
        assert_eq!(g.update(74.9), Some(ThrottleChange::Restored));
        assert_eq!(g.sampling_factor(), 1.0);
        // Between the two again: stays restored.
        assert_eq!(g.update(80.0), None);
        assert!(!g.is_throttled());
    }

    #[test]
    fn validate_reports_every_problem() {
        let config = ThermalConfig {
            throttle_above_celsius: f32::NAN,
            hysteresis_celsius: 0.0,
            throttled_sampling_factor: 1.5,
            ..ThermalConfig::default()
        };
        let err = ThermalGuard::new(config).expect_err("three problems");
        assert_eq!(err.0.len(), 3, "{err}");
        let message = err.to_string();
        assert!(message.contains("hysteresis_celsius = 0"), "{message}");
        assert!(
            message.contains("throttled_sampling_factor = 1.5"),
            "{message}"
        );
    }
}

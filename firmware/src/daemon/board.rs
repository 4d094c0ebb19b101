//! Board support as the daemon uses it: the privacy LED and switch, and the thermal guard.
//!
//! - [`Privacy`] wraps the board crate's [`PrivacyController`] with its pin types erased
//!   ([`CameraGate`]), so that only the daemon's construction names the Linux pins and the
//!   capture stage is tested with fake pins. The capture stage calls [`Privacy::allow`] once
//!   per iteration; the supervisor reads the last decision for stats.
//! - [`Thermal`] wraps [`ThermalGuard`]: polled by the supervisor every few seconds, it gives
//!   the sampling-rate factor and the temperature for stats. A board without readable thermal
//!   zones is logged once and reports no temperature; it never stops the daemon.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use caer_board::privacy::{Decision, PrivacyController, SwitchState};
use caer_board::thermal::{ThermalConfig as GuardConfig, ThermalGuard};
use caer_board::InvalidThermalConfig;
use embedded_hal::digital::{InputPin, OutputPin};
use serde::{Deserialize, Serialize};

use crate::pipeline::settings::Issues;
pub use caer_board::linux_gpio::{LineConfig, PrivacyPinsConfig};

/// The thermal guard: the `[thermal]` section (the board crate's settings, plus `enabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalConfig {
    /// Read the thermal zones at all (only sysfs reads; a board without zones reports no
    /// temperature and is never throttled).
    #[serde(default = "default_thermal_enabled")]
    pub enabled: bool,
    /// The directory holding `thermal_zone*/`.
    #[serde(default = "caer_board::thermal::default_root")]
    pub root: PathBuf,
    /// Lower the sampling rate when the hottest zone reaches this temperature (°C).
    #[serde(default = "caer_board::thermal::default_throttle_above_celsius")]
    pub throttle_above_celsius: f32,
    /// Restore it once the hottest zone is below `throttle_above_celsius` minus this (°C).
    #[serde(default = "caer_board::thermal::default_hysteresis_celsius")]
    pub hysteresis_celsius: f32,
    /// Sampling-rate multiplier while throttled, in (0, 1].
    #[serde(default = "caer_board::thermal::default_throttled_sampling_factor")]
    pub throttled_sampling_factor: f32,
    /// Zone types (the `type` file, exact match) never used, e.g. fixed sensors.
    #[serde(default = "caer_board::thermal::default_ignore_zone_types")]
    pub ignore_zone_types: Vec<String>,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        let board = caer_board::thermal::ThermalConfig::default();
        ThermalConfig {
            enabled: default_thermal_enabled(),
            root: board.root,
            throttle_above_celsius: board.throttle_above_celsius,
            hysteresis_celsius: board.hysteresis_celsius,
            throttled_sampling_factor: board.throttled_sampling_factor,
            ignore_zone_types: board.ignore_zone_types,
        }
    }
}

impl ThermalConfig {
    /// The board crate's guard settings.
    pub fn guard(&self) -> caer_board::thermal::ThermalConfig {
        caer_board::thermal::ThermalConfig {
            root: self.root.clone(),
            throttle_above_celsius: self.throttle_above_celsius,
            hysteresis_celsius: self.hysteresis_celsius,
            throttled_sampling_factor: self.throttled_sampling_factor,
            ignore_zone_types: self.ignore_zone_types.clone(),
        }
    }
}

/// Default of `thermal.enabled`.
pub const fn default_thermal_enabled() -> bool {
    true
}

impl ThermalConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        if let Err(e) = self.guard().validate() {
            use caer_board::ThermalConfigError as E;
            for problem in e.0 {
                let key = match problem {
                    E::ThrottleNotFinite(_) => "throttle_above_celsius",
                    E::HysteresisNotPositive(_) => "hysteresis_celsius",
                    E::FactorOutOfRange(_) => "throttled_sampling_factor",
                    _ => "",
                };
                v.push(key, problem.to_string());
            }
        }
        if self.enabled && self.root.as_os_str().is_empty() {
            v.push("root", "must not be empty");
        }
    }
}

/// Every problem with the `[privacy]` section, keyed relative to it.
pub fn privacy_issues(p: &PrivacyPinsConfig, v: &mut Issues) {
    if !cfg!(feature = "gpio") {
        v.push(
            "",
            "needs caerd built with the cargo feature gpio \
             (cargo build --release --features caer-firmware/gpio)",
        );
    }
    for (key, line) in [("led.chip", &p.led), ("switch.chip", &p.switch)] {
        if line.chip.as_os_str().is_empty() {
            v.push(key, "must not be empty");
        }
    }
    if p.led.chip == p.switch.chip && p.led.line == p.switch.line {
        v.push(
            "switch.line",
            format!(
                "is line {} of {}, the same as privacy.led",
                p.led.line,
                p.led.chip.display()
            ),
        );
    }
    v.at_most("release_after", p.release_after.get(), 100);
}

/// A privacy pin that failed, its error rendered (the pin types are erased here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy pin: {0}")]
pub struct PinError(pub String);

/// A privacy controller with its pin types erased.
pub trait CameraGate: Send {
    /// One [`PrivacyController::update`].
    fn update(&mut self, camera_wanted: bool, camera_open: bool) -> Result<Decision, PinError>;
}

impl<L, S, E> CameraGate for PrivacyController<L, S>
where
    L: OutputPin<Error = E> + Send,
    S: InputPin<Error = E> + Send,
    E: std::fmt::Debug,
{
    fn update(&mut self, camera_wanted: bool, camera_open: bool) -> Result<Decision, PinError> {
        PrivacyController::update(self, camera_wanted, camera_open)
            .map_err(|e| PinError(e.to_string()))
    }
}

/// The privacy controller shared by the capture thread (which drives it) and the supervisor
/// (which reports it).
pub type SharedPrivacy = Arc<Mutex<Privacy>>;

/// Locks the shared controller; a panic elsewhere leaves it usable (the pins hold no
/// half-written state the next update does not redo).
pub fn lock_privacy(privacy: &SharedPrivacy) -> MutexGuard<'_, Privacy> {
    privacy.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The privacy LED and switch, deciding whether the camera may be open.
pub struct Privacy {
    gate: Box<dyn CameraGate>,
    allowed: bool,
    switch: Option<SwitchState>,
    errors: u64,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("allowed", &self.allowed)
            .field("switch", &self.switch)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// Wraps a controller; the camera is not allowed until the first [`allow`](Self::allow).
    pub fn new(gate: impl CameraGate + 'static) -> Self {
        Privacy {
            gate: Box::new(gate),
            allowed: false,
            switch: None,
            errors: 0,
        }
    }

    /// Shares it between the capture thread and the supervisor.
    pub fn shared(self) -> SharedPrivacy {
        Arc::new(Mutex::new(self))
    }

    /// One step: samples the switch, drives the LED, and says whether the camera may be open.
    /// `camera_open`: the source is open, or is about to be opened after this call. Any pin
    /// error denies the camera (logged at the 1st, 2nd, 4th, ... error).
    pub fn allow(&mut self, camera_wanted: bool, camera_open: bool) -> bool {
        match self.gate.update(camera_wanted, camera_open) {
            Ok(decision) => {
                if self.switch != Some(decision.switch) {
                    tracing::info!(switch = ?decision.switch, "privacy switch");
                }
                self.switch = Some(decision.switch);
                self.allowed = decision.camera_allowed;
            }
            Err(error) => {
                self.errors += 1;
                if self.errors.is_power_of_two() {
                    tracing::warn!(%error, count = self.errors, "privacy pins failed; camera denied");
                }
                self.allowed = false;
            }
        }
        self.allowed
    }

    /// Whether the last step allowed the camera.
    pub fn camera_allowed(&self) -> bool {
        self.allowed
    }

    /// The debounced switch at the last successful step; none before it.
    pub fn switch(&self) -> Option<SwitchState> {
        self.switch
    }
}

/// The thermal guard, polled by the supervisor.
#[derive(Debug)]
pub struct Thermal {
    guard: ThermalGuard,
    celsius: Option<f32>,
    failing: bool,
}

impl Thermal {
    /// A guard that has not polled yet (no temperature, not throttled).
    ///
    /// # Errors
    ///
    /// [`InvalidThermalConfig`] (the daemon's config validation rules these out).
    pub fn new(config: GuardConfig) -> Result<Self, InvalidThermalConfig> {
        Ok(Thermal {
            guard: ThermalGuard::new(config)?,
            celsius: None,
            failing: false,
        })
    }

    /// Reads the zones (blocking sysfs reads) and updates the throttle state. A failure is
    /// logged once, until a poll succeeds again; the temperature is then unknown and the
    /// throttle state unchanged.
    pub fn poll(&mut self) {
        match self.guard.poll() {
            Ok(reading) => {
                if self.failing {
                    tracing::info!(
                        celsius = reading.max_celsius,
                        "thermal zones readable again"
                    );
                }
                self.failing = false;
                self.celsius = Some(reading.max_celsius);
            }
            Err(e) => {
                if !self.failing {
                    let mut error = e.to_string();
                    let mut source = e.source();
                    while let Some(s) = source {
                        error = format!("{error}: {s}");
                        source = s.source();
                    }
                    tracing::warn!(%error, "no board temperature (stats report null)");
                }
                self.failing = true;
                self.celsius = None;
            }
        }
    }

    /// The hottest zone at the last poll, °C (millidegree precision); none if unknown.
    pub fn temperature_c(&self) -> Option<f64> {
        self.celsius
            .map(|c| (f64::from(c) * 1000.0).round() / 1000.0)
    }

    /// Whether the sampling rate is lowered.
    pub fn throttled(&self) -> bool {
        self.guard.is_throttled()
    }

    /// The sampling-rate multiplier: 1, or the throttled factor.
    pub fn sampling_factor(&self) -> f32 {
        self.guard.sampling_factor()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    fn write_zone(root: &Path, millidegrees: i64) {
        let zone = root.join("thermal_zone0");
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("type"), "CPU-therm\n").unwrap();
        fs::write(zone.join("temp"), format!("{millidegrees}\n")).unwrap();
    }

    #[test]
    fn thermal_throttling_follows_a_fake_sysfs_tree() {
        let dir = tempfile::tempdir().unwrap();
        write_zone(dir.path(), 50_000);
        let mut thermal = Thermal::new(GuardConfig {
            root: dir.path().to_path_buf(),
            throttle_above_celsius: 80.0,
            hysteresis_celsius: 10.0,
            throttled_sampling_factor: 0.25,
            ..GuardConfig::default()
        })
        .unwrap();
        assert_eq!(thermal.temperature_c(), None, "before the first poll");
        thermal.poll();
        assert_eq!(thermal.temperature_c(), Some(50.0));
        assert!(!thermal.throttled());
        assert_eq!(thermal.sampling_factor(), 1.0);

        write_zone(dir.path(), 81_500);
        thermal.poll();
        assert_eq!(thermal.temperature_c(), Some(81.5));
        assert!(thermal.throttled());
        assert_eq!(thermal.sampling_factor(), 0.25);

        // Inside the hysteresis band: still throttled.
        write_zone(dir.path(), 75_000);
        thermal.poll();
        assert_eq!(thermal.sampling_factor(), 0.25);

        write_zone(dir.path(), 69_000);
        thermal.poll();
        assert!(!thermal.throttled());
        assert_eq!(thermal.sampling_factor(), 1.0);
    }

    #[test]
    fn a_board_without_thermal_zones_reports_no_temperature() {
        let dir = tempfile::tempdir().unwrap();
        let mut thermal = Thermal::new(GuardConfig {
            root: dir.path().to_path_buf(),
            ..GuardConfig::default()
        })
        .unwrap();
        thermal.poll();
        thermal.poll();
        assert_eq!(thermal.temperature_c(), None);
        assert_eq!(thermal.sampling_factor(), 1.0);
        // Zones that appear later are used.
        write_zone(dir.path(), 40_000);
        thermal.poll();
        assert_eq!(thermal.temperature_c(), Some(40.0));
    }
}

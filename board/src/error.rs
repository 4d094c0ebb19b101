//! Error types of the board crate.
//!
//! Messages are lowercase and name the pin, path or socket involved. [`BoardError`] is generic
//! over the pin error `E` (no boxing), so a caller can still match on the underlying GPIO
//! error; the other errors keep their `std::io::Error` as `source()` rather than in the message,
//! so that `{:#}` chains print each cause once.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::thermal::SkippedZone;

/// An error from the privacy LED or switch pin, generic over the pin error `E`.
///
/// Whichever variant, the camera is not allowed while the error persists (the drivers fail
/// closed).
#[derive(Debug, thiserror::Error)]
pub enum BoardError<E> {
    /// Driving the privacy LED failed; its state is unknown until the next successful write.
    #[error("privacy led pin: {0:?}")]
    Led(E),
    /// Reading the privacy switch failed; the switch is treated as engaged.
    #[error("privacy switch pin: {0:?}")]
    Switch(E),
}

impl<E: embedded_hal::digital::Error> BoardError<E> {
    /// The embedded-hal error kind of the underlying pin error.
    pub fn kind(&self) -> embedded_hal::digital::ErrorKind {
        match self {
            BoardError::Led(e) | BoardError::Switch(e) => e.kind(),
        }
    }
}

/// One problem in a [`ThermalConfig`](crate::thermal::ThermalConfig).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ThermalConfigError {
    /// The throttle threshold is NaN or infinite.
    #[error("throttle_above_celsius = {0} is not a finite temperature")]
    ThrottleNotFinite(f32),
    /// The hysteresis is not a positive, finite number of degrees.
    #[error(
        "hysteresis_celsius = {0} must be a finite number > 0 (the rate is restored below \
         throttle_above_celsius - hysteresis_celsius)"
    )]
    HysteresisNotPositive(f32),
    /// The throttled sampling factor is outside (0, 1].
    #[error("throttled_sampling_factor = {0} must be in (0, 1] (0.5 halves the sampling rate)")]
    FactorOutOfRange(f32),
}

/// Every problem found in a thermal config, reported together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid thermal config: {}", Joined(&.0))]
pub struct InvalidThermalConfig(pub Vec<ThermalConfigError>);

/// An error from [`ThermalGuard::poll`](crate::thermal::ThermalGuard::poll). The throttle state
/// is left unchanged when a poll fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThermalError {
    /// The thermal root directory could not be listed.
    #[error("listing thermal zones in '{}'", .root.display())]
    ListZones {
        /// The configured thermal root, e.g. `/sys/class/thermal`.
        root: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The thermal root holds no `thermal_zone*` directory.
    #[error(
        "no thermal_zone* directories in '{}' (set the thermal root to the board's \
         /sys/class/thermal, or disable the thermal guard)",
        .root.display()
    )]
    NoZones {
        /// The configured thermal root.
        root: PathBuf,
    },
    /// Zones exist but none gave a usable temperature; each one's reason is listed.
    #[error("no usable thermal zone in '{}': {}", .root.display(), Joined(.skipped))]
    NoUsableZone {
        /// The configured thermal root.
        root: PathBuf,
        /// Every zone, with the reason it was skipped.
        skipped: Vec<SkippedZone>,
    },
}

/// A notification could not be sent to the systemd notify socket.
#[derive(Debug, thiserror::Error)]
#[error("sending '{message}' to the systemd notify socket '{}'", .socket.display())]
pub struct NotifyError {
    /// The notification, e.g. `READY=1` (newlines shown as `\n`).
    pub message: String,
    /// `$NOTIFY_SOCKET` at the time of the failure (`@` starts an abstract socket name).
    pub socket: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: io::Error,
}

/// Displays a list as `a; b; c`.
struct Joined<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

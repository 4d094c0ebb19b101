//! The privacy indicator LED and the hardware privacy switch.
//!
//! - [`PrivacyLed`] drives an LED through an embedded-hal [`OutputPin`](embedded_hal::digital::OutputPin).
//! - [`PrivacySwitch`] reads a switch through an [`InputPin`](embedded_hal::digital::InputPin),
//!   with an asymmetric debounce: engaging takes effect on the first engaged sample, releasing
//!   only after `release_after` consecutive released samples. It starts engaged.
//! - [`PrivacyGuard`] is the pure decision: from the switch state, whether the capture stage
//!   wants the camera, and whether the camera is (still) open, it derives whether the camera may
//!   be open and whether the LED must be lit.
//! - [`PrivacyController`] ties them together, once per loop iteration, and applies the decision
//!   in the safe order: LED on before the camera is allowed; LED off only after the camera has
//!   reported itself closed.
//!
//! # Invariants
//!
//! - The LED is lit whenever the camera is open or allowed to open.
//! - While the switch is engaged the camera is not allowed; once the camera reports closed the
//!   LED goes off.
//! - Any pin error denies the camera: a failed switch read counts as engaged, a failed LED write
//!   leaves the LED state unknown and the camera denied until a write succeeds.
//!
//! Polarity (active-low wiring) is handled here, in the drivers, for every pin backend alike.

mod controller;
mod guard;
mod led;
mod switch;

use embedded_hal::digital::PinState;
use serde::{Deserialize, Serialize};

pub use controller::{Decision, PrivacyController};
pub use guard::{GuardInput, GuardOutput, GuardState, PrivacyGuard};
pub use led::PrivacyLed;
pub use switch::{PrivacySwitch, SwitchState};

/// Which electrical level means "active": the LED lit, or the switch engaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Polarity {
    /// Active at the high level (LED between the pin and ground; switch pulls the line up).
    #[default]
    ActiveHigh,
    /// Active at the low level (LED between supply and the pin; switch to ground with a
    /// pull-up, the usual wiring for a push button).
    ActiveLow,
}

impl Polarity {
    /// `ActiveLow` when `active_low` is true, else `ActiveHigh`.
    pub const fn from_active_low(active_low: bool) -> Self {
        if active_low {
            Polarity::ActiveLow
        } else {
            Polarity::ActiveHigh
        }
    }

    /// The pin level for a logical state (`true` = active).
    pub const fn level(self, active: bool) -> PinState {
        match (self, active) {
            (Polarity::ActiveHigh, true) | (Polarity::ActiveLow, false) => PinState::High,
            (Polarity::ActiveHigh, false) | (Polarity::ActiveLow, true) => PinState::Low,
        }
    }

    /// Whether a pin that reads high (`is_high`) is active.
    pub const fn is_active(self, is_high: bool) -> bool {
        match self {
            Polarity::ActiveHigh => is_high,
            Polarity::ActiveLow => !is_high,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_low_inverts_both_ways() {
        assert_eq!(Polarity::ActiveLow.level(true), PinState::Low);
        assert_eq!(Polarity::ActiveLow.level(false), PinState::High);
        assert!(Polarity::ActiveLow.is_active(false));
        assert_eq!(Polarity::ActiveHigh.level(true), PinState::High);
        assert!(Polarity::ActiveHigh.is_active(true));
        assert_eq!(Polarity::from_active_low(true), Polarity::ActiveLow);
    }
}

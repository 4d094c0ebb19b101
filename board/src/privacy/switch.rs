//! The hardware privacy switch driver.
//!
//! Owns its [`InputPin`]; [`PrivacySwitch::release`] hands it back. The switch is level
//! triggered: it is engaged while the button is held or the slide/latching switch is in its
//! privacy position. Debouncing is asymmetric, so that privacy never waits: one engaged sample
//! engages it at once, and it counts as released only after `release_after` consecutive released
//! samples. It starts engaged, and a failed read counts as engaged.

use std::num::NonZeroU32;

use embedded_hal::digital::InputPin;
use serde::{Deserialize, Serialize};

use super::Polarity;
use crate::error::BoardError;

/// The debounced state of the privacy switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchState {
    /// Privacy requested: the camera must be closed.
    Engaged,
    /// No privacy request.
    Released,
}

impl SwitchState {
    /// Whether privacy is requested.
    pub const fn is_engaged(self) -> bool {
        matches!(self, SwitchState::Engaged)
    }
}

/// The hardware privacy switch.
#[derive(Debug)]
pub struct PrivacySwitch<P> {
    pin: P,
    polarity: Polarity,
    release_after: NonZeroU32,
    released_streak: u32,
    state: SwitchState,
}

impl<P: InputPin> PrivacySwitch<P> {
    /// Takes ownership of the pin. Does no I/O; the switch starts [`SwitchState::Engaged`] and
    /// releases after `release_after` consecutive released samples.
    pub fn new(pin: P, polarity: Polarity, release_after: NonZeroU32) -> Self {
        Self {
            pin,
            polarity,
            release_after,
            released_streak: 0,
            state: SwitchState::Engaged,
        }
    }

    /// Reads the pin once and returns the debounced state.
    ///
    /// # Errors
    ///
    /// [`BoardError::Switch`] with the pin error; the switch is then engaged and the release
    /// count starts over.
    pub fn sample(&mut self) -> Result<SwitchState, BoardError<P::Error>> {
        let is_high = match self.pin.is_high() {
            Ok(is_high) => is_high,
            Err(e) => {
                self.engage();
                return Err(BoardError::Switch(e));
            }
        };
        if self.polarity.is_active(is_high) {
            self.engage();
        } else {
            self.released_streak = self.released_streak.saturating_add(1);
            if self.released_streak >= self.release_after.get() {
                self.state = SwitchState::Released;
            }
        }
        Ok(self.state)
    }

    /// The debounced state after the last sample.
    pub fn state(&self) -> SwitchState {
        self.state
    }

    /// The configured polarity.
    pub fn polarity(&self) -> Polarity {
        self.polarity
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }

    fn engage(&mut self) {
        self.released_streak = 0;
        self.state = SwitchState::Engaged;
    }
}

//! The privacy controller: switch, guard and LED, applied once per loop iteration.
//!
//! Each [`PrivacyController::update`] reads the switch once, steps the [`PrivacyGuard`], drives
//! the LED if its state changes, and returns whether the camera may be open. The camera is
//! allowed only when the LED write succeeded; on any error the camera is denied.

use embedded_hal::digital::{InputPin, OutputPin};

use super::{GuardInput, GuardState, PrivacyGuard, PrivacyLed, PrivacySwitch, SwitchState};
use crate::error::BoardError;

/// The outcome of one [`PrivacyController::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The camera may be open (or be opened) until the next update.
    pub camera_allowed: bool,
    /// The LED is lit (it was driven on, or already known on).
    pub led_on: bool,
    /// The debounced switch state used for this decision.
    pub switch: SwitchState,
    /// The guard's state after this decision.
    pub state: GuardState,
}

/// Owns the privacy LED and switch and decides whether the camera may be open.
///
/// Both pins share one error type `E`, as pins from the same GPIO backend do.
#[derive(Debug)]
pub struct PrivacyController<L, S> {
    led: PrivacyLed<L>,
    switch: PrivacySwitch<S>,
    guard: PrivacyGuard,
    camera_allowed: bool,
}

impl<L, S, E> PrivacyController<L, S>
where
    L: OutputPin<Error = E>,
    S: InputPin<Error = E>,
{
    /// Takes ownership of both drivers. Does no I/O; the camera is not allowed until the first
    /// [`update`](Self::update).
    pub fn new(led: PrivacyLed<L>, switch: PrivacySwitch<S>) -> Self {
        Self {
            led,
            switch,
            guard: PrivacyGuard::new(),
            camera_allowed: false,
        }
    }

    /// One iteration: samples the switch, decides, drives the LED, and returns the decision.
    ///
    /// `camera_wanted`: the capture stage wants to run. `camera_open`: the camera is open or
    /// being opened, i.e. frames may be captured; report `true` from the moment the capture
    /// stage starts opening the device until it has closed it. The caller may open the camera
    /// only while the last decision allows it, and must close it when a decision denies it.
    ///
    /// # Errors
    ///
    /// A pin error. The camera is then **not allowed** (treat it as `camera_allowed == false`):
    /// a failed switch read counts as engaged, and a failed LED write denies the camera until a
    /// later write succeeds. The LED is still driven for the switch-error case.
    pub fn update(
        &mut self,
        camera_wanted: bool,
        camera_open: bool,
    ) -> Result<Decision, BoardError<E>> {
        // Deny first, so that an early return leaves the camera denied.
        self.camera_allowed = false;
        let (switch, switch_error) = match self.switch.sample() {
            Ok(state) => (state, None),
            Err(e) => (self.switch.state(), Some(e)),
        };
        let out = self.guard.step(GuardInput {
            switch,
            camera_wanted,
            camera_open,
        });
        self.led.set(out.led_on)?;
        if let Some(e) = switch_error {
            return Err(e);
        }
        self.camera_allowed = out.camera_allowed;
        Ok(Decision {
            camera_allowed: out.camera_allowed,
            led_on: out.led_on,
            switch,
            state: self.guard.state(),
        })
    }

    /// Whether the last update allowed the camera (`false` after an error).
    pub fn camera_allowed(&self) -> bool {
        self.camera_allowed
    }

    /// The guard's state after the last update.
    pub fn state(&self) -> GuardState {
        self.guard.state()
    }

    /// Gives both pins back, LED first.
    pub fn release(self) -> (L, S) {
        (self.led.release(), self.switch.release())
    }
}

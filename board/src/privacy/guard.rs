//! The privacy decision, as a pure state machine with no I/O.
//!
//! Inputs: the debounced switch state, whether the capture stage wants the camera, and whether
//! the camera is open (from the moment the capture stage starts opening it until it has fully
//! closed it). Outputs: whether the camera may be open, and whether the LED must be lit.
//!
//! ```text
//! allowed = switch released && camera wanted
//! led_on  = allowed || camera open
//! state   = Open if allowed, else Closing if the camera is still open, else Closed
//! ```
//!
//! So the LED is lit whenever frames may be captured (the camera is open or allowed to open),
//! and after a revocation it stays lit ([`GuardState::Closing`]) until the camera reports
//! closed. The caller applies the output in order: LED first, and the camera only once the LED
//! write succeeded ([`PrivacyController`](super::PrivacyController) does this).

use serde::{Deserialize, Serialize};

use super::SwitchState;

/// One step's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardInput {
    /// The debounced privacy switch.
    pub switch: SwitchState,
    /// The capture stage wants the camera open.
    pub camera_wanted: bool,
    /// The camera is open or being opened (frames may be captured).
    pub camera_open: bool,
}

/// One step's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardOutput {
    /// The camera may be open (granted only once the LED is lit).
    pub camera_allowed: bool,
    /// The LED must be lit.
    pub led_on: bool,
}

/// Where the guard stands, for logs and the daemon's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardState {
    /// Camera closed and not allowed; LED off.
    #[default]
    Closed,
    /// Camera allowed; LED on.
    Open,
    /// Camera no longer allowed but still open; LED on until it reports closed. If this lasts,
    /// the capture stage is not closing the camera.
    Closing,
}

/// The privacy state machine, with no I/O.
///
/// ```text
/// allowed = switch released && camera wanted
/// led_on  = allowed || camera open
/// state   = Open if allowed, else Closing if the camera is still open, else Closed
/// ```
///
/// Apply the output LED first, and allow the camera only once the LED write succeeded
/// ([`PrivacyController`](super::PrivacyController) does this).
#[derive(Debug, Clone, Default)]
pub struct PrivacyGuard {
    state: GuardState,
}

impl PrivacyGuard {
    /// A guard in [`GuardState::Closed`].
    pub const fn new() -> Self {
        Self {
            state: GuardState::Closed,
        }
    }

    /// Advances one step.
    pub fn step(&mut self, input: GuardInput) -> GuardOutput {
        let camera_allowed = !input.switch.is_engaged() && input.camera_wanted;
        let led_on = camera_allowed || input.camera_open;
        self.state = if camera_allowed {
            GuardState::Open
        } else if input.camera_open {
            GuardState::Closing
        } else {
            GuardState::Closed
        };
        GuardOutput {
            camera_allowed,
            led_on,
        }
    }

    /// The state after the last step.
    pub fn state(&self) -> GuardState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(switch: SwitchState, camera_wanted: bool, camera_open: bool) -> GuardInput {
        GuardInput {
            switch,
            camera_wanted,
            camera_open,
        }
    }

    #[test]
    fn engaged_switch_denies_the_camera_and_the_led_goes_off_once_it_is_closed() {
        let mut guard = PrivacyGuard::new();
        let out = guard.step(input(SwitchState::Released, true, false));
        assert!(out.camera_allowed && out.led_on);
        assert_eq!(guard.state(), GuardState::Open);

        let out = guard.step(input(SwitchState::Engaged, true, true));
        assert!(!out.camera_allowed && out.led_on, "{out:?}");
        assert_eq!(guard.state(), GuardState::Closing);

        let out = guard.step(input(SwitchState::Engaged, true, false));
        assert!(!out.camera_allowed && !out.led_on, "{out:?}");
        assert_eq!(guard.state(), GuardState::Closed);
    }

    #[test]
    fn led_is_on_in_every_step_where_frames_may_be_captured() {
        for switch in [SwitchState::Engaged, SwitchState::Released] {
            for camera_wanted in [false, true] {
                for camera_open in [false, true] {
                    let mut guard = PrivacyGuard::new();
                    let out = guard.step(input(switch, camera_wanted, camera_open));
                    if out.camera_allowed || camera_open {
                        assert!(out.led_on, "{switch:?} {camera_wanted} {camera_open}");
                    }
                    if switch.is_engaged() {
                        assert!(!out.camera_allowed);
                    }
                }
            }
        }
    }

    #[test]
    fn unwanted_camera_is_not_allowed_even_with_the_switch_released() {
        let mut guard = PrivacyGuard::new();
        let out = guard.step(input(SwitchState::Released, false, false));
        assert_eq!(
            out,
            GuardOutput {
                camera_allowed: false,
                led_on: false
            }
        );
    }
}

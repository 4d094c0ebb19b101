//! Board support for caer-edge: the privacy LED and switch, the thermal guard and systemd
//! integration of the `caerd` daemon on a Jetson or another Linux board.
//!
//! # Main types
//!
//! - [`privacy::PrivacyController`]: owns the privacy LED ([`privacy::PrivacyLed`]) and the
//!   hardware privacy switch ([`privacy::PrivacySwitch`]) and decides, once per loop iteration,
//!   whether the camera may be open. The decision itself is the pure state machine
//!   [`privacy::PrivacyGuard`].
//! - [`thermal::ThermalGuard`]: reads the thermal zones from sysfs and lowers the sampling rate
//!   above a threshold, restoring it with hysteresis.
//! - [`systemd`]: readiness, status and watchdog notifications, and [`systemd::Watchdog`], which
//!   pings from the run loop's own iteration.
//! - [`linux_gpio`]: the Linux GPIO character-device pins (cargo feature `linux-gpio`, on by
//!   default). Only the daemon's `main` names these types; everything else is generic.
//!
//! # Invariants
//!
//! - **The privacy LED is never off while frames may be captured.** The camera may be open only
//!   after the LED has been driven on successfully, and the LED goes off only once the camera
//!   reports itself closed. Any pin error denies the camera (fails closed).
//! - **The privacy switch wins.** While it is engaged the camera is not allowed; an engaged
//!   sample takes effect at once, a release only after a configured number of stable samples.
//! - **A stalled loop stops pinging the watchdog.** Nothing here pings from a background thread.
//!
//! # Example
//!
//! The drivers are generic over embedded-hal 1.0 pins; here with the mock pins the tests use.
//!
//! ```
//! use std::num::NonZeroU32;
//! use caer_board::privacy::{Polarity, PrivacyController, PrivacyLed, PrivacySwitch};
//! use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
//!
//! let led = Mock::new(&[Transaction::set(State::High)]);
//! let switch = Mock::new(&[Transaction::get(State::Low)]);
//! let mut privacy = PrivacyController::new(
//!     PrivacyLed::new(led, Polarity::ActiveHigh),
//!     PrivacySwitch::new(switch, Polarity::ActiveHigh, NonZeroU32::MIN),
//! );
//! // The capture stage wants to run and its camera is closed: the LED goes on first.
//! let decision = privacy.update(true, false).expect("mock pins do not fail");
//! assert!(decision.camera_allowed && decision.led_on);
//! let (mut led, mut switch) = privacy.release();
//! led.done();
//! switch.done();
//! ```
//!
//! # Design
//!
//! The drivers follow the embedded-hal driver practice: they own their pins, `release()` hands
//! them back, and their error type [`BoardError<E>`] wraps the pin error without boxing, so
//! tests run on the host against `embedded-hal-mock` with every pin transaction listed. The
//! polarity (active-low wiring) is handled in the drivers, in one place, rather than by the
//! GPIO backend, so the same driver code and tests cover every board.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod error;
pub mod linux_gpio;
pub mod privacy;
pub mod systemd;
pub mod thermal;

pub use error::{BoardError, InvalidThermalConfig, NotifyError, ThermalConfigError, ThermalError};

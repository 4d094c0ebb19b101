//! Linux GPIO character-device pins for the privacy LED and switch.
//!
//! The config types are always available (the daemon's config embeds them); opening pins needs
//! the cargo feature `linux-gpio` (on by default), which brings linux-embedded-hal's
//! [`CdevPin`](linux_embedded_hal::CdevPin) over gpio-cdev (GPIO uAPI v1, `/dev/gpiochipN`).
//! Only the daemon's `main` should call these functions; everything else takes generic pins.
//!
//! Lines are requested **without** the kernel's active-low flag: `CdevPin` then reads and writes
//! physical levels, and the drivers apply [`Polarity`] themselves. (`CdevPin` would otherwise
//! invert a second time on top of the kernel's inversion.) The uAPI v1 has no bias flags, so a
//! switch input needs its pull-up or pull-down from the board (Jetson: the pinmux / device tree).
//!
//! Find a line with `gpioinfo` (package `gpiod`); on a Jetson the 40-pin header lines sit on the
//! main Tegra GPIO chip (`tegra-gpio` / `tegra234-gpio`).

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::privacy::Polarity;

/// The consumer label the daemon's lines show in `gpioinfo`.
pub const CONSUMER: &str = "caerd";

/// One GPIO line: chip device, line offset and polarity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// GPIO character device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// Line offset on that chip (the number `gpioinfo` shows, not the header pin number).
    pub line: u32,
    /// The line is active-low: LED lit, or switch engaged, at the low level.
    #[serde(default)]
    pub active_low: bool,
}

impl LineConfig {
    /// The polarity this line is wired with.
    pub const fn polarity(&self) -> Polarity {
        Polarity::from_active_low(self.active_low)
    }
}

/// The privacy LED and switch lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyPinsConfig {
    /// The privacy indicator LED (output).
    pub led: LineConfig,
    /// The hardware privacy switch (input).
    pub switch: LineConfig,
    /// Consecutive released samples before the switch counts as released (engaging is
    /// immediate). One sample per daemon loop iteration.
    #[serde(default = "default_release_after")]
    pub release_after: NonZeroU32,
}

/// Default for [`PrivacyPinsConfig::release_after`]: 3 samples.
pub const fn default_release_after() -> NonZeroU32 {
    match NonZeroU32::new(3) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

#[cfg(feature = "linux-gpio")]
pub use cdev::*;

#[cfg(feature = "linux-gpio")]
mod cdev {
    use std::num::NonZeroU32;
    use std::path::PathBuf;

    use embedded_hal::digital::PinState;
    use linux_embedded_hal::gpio_cdev::{self, Chip, LineRequestFlags};
    use linux_embedded_hal::CdevPin;

    use super::{LineConfig, PrivacyPinsConfig, CONSUMER};
    use crate::privacy::{PrivacyController, PrivacyLed, PrivacySwitch};

    /// A GPIO line could not be opened.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum GpioOpenError {
        /// The chip device could not be opened (missing, or no permission).
        #[error(
            "opening gpio chip '{}' (does it exist, and is the user in the group that owns it, \
             'gpio' with the caer udev rule?)",
            .chip.display()
        )]
        Chip {
            /// The chip device path.
            chip: PathBuf,
            /// The gpio-cdev error.
            #[source]
            source: gpio_cdev::Error,
        },
        /// The line offset does not exist on the chip.
        #[error("gpio line {line} on '{}' (the chip has {lines} lines; see gpioinfo)", .chip.display())]
        Line {
            /// The chip device path.
            chip: PathBuf,
            /// The requested line offset.
            line: u32,
            /// How many lines the chip has.
            lines: u32,
            /// The gpio-cdev error.
            #[source]
            source: gpio_cdev::Error,
        },
        /// The kernel refused the request (line busy: used by a driver or another process).
        #[error("requesting gpio line {line} on '{}' as {direction} (is it in use? see gpioinfo)", .chip.display())]
        Request {
            /// The chip device path.
            chip: PathBuf,
            /// The requested line offset.
            line: u32,
            /// `input` or `output`.
            direction: &'static str,
            /// The gpio-cdev error.
            #[source]
            source: gpio_cdev::Error,
        },
    }

    fn request(
        config: &LineConfig,
        flags: LineRequestFlags,
        default: u8,
    ) -> Result<CdevPin, GpioOpenError> {
        let direction = if flags.contains(LineRequestFlags::OUTPUT) {
            "output"
        } else {
            "input"
        };
        let request_error = |source| GpioOpenError::Request {
            chip: config.chip.clone(),
            line: config.line,
            direction,
            source,
        };
        let mut chip = Chip::new(&config.chip).map_err(|source| GpioOpenError::Chip {
            chip: config.chip.clone(),
            source,
        })?;
        let lines = chip.num_lines();
        let line = chip
            .get_line(config.line)
            .map_err(|source| GpioOpenError::Line {
                chip: config.chip.clone(),
                line: config.line,
                lines,
                source,
            })?;
        // No ACTIVE_LOW flag: physical levels; the drivers apply the polarity.
        let handle = line
            .request(flags, default, CONSUMER)
            .map_err(request_error)?;
        CdevPin::new(handle).map_err(request_error)
    }

    /// Requests a line as an output, initially at its inactive level.
    ///
    /// # Errors
    ///
    /// [`GpioOpenError`] naming the chip and line.
    pub fn open_output(config: &LineConfig) -> Result<CdevPin, GpioOpenError> {
        let inactive = u8::from(config.polarity().level(false) == PinState::High);
        request(config, LineRequestFlags::OUTPUT, inactive)
    }

    /// Requests a line as an input.
    ///
    /// # Errors
    ///
    /// [`GpioOpenError`] naming the chip and line.
    pub fn open_input(config: &LineConfig) -> Result<CdevPin, GpioOpenError> {
        request(config, LineRequestFlags::INPUT, 0)
    }

    /// Opens the privacy LED (requested with the LED off).
    ///
    /// # Errors
    ///
    /// [`GpioOpenError`] naming the chip and line.
    pub fn open_privacy_led(config: &LineConfig) -> Result<PrivacyLed<CdevPin>, GpioOpenError> {
        Ok(PrivacyLed::new(open_output(config)?, config.polarity()))
    }

    /// Opens the privacy switch.
    ///
    /// # Errors
    ///
    /// [`GpioOpenError`] naming the chip and line.
    pub fn open_privacy_switch(
        config: &LineConfig,
        release_after: NonZeroU32,
    ) -> Result<PrivacySwitch<CdevPin>, GpioOpenError> {
        Ok(PrivacySwitch::new(
            open_input(config)?,
            config.polarity(),
            release_after,
        ))
    }

    /// Opens both privacy pins and builds the controller.
    ///
    /// # Errors
    ///
    /// [`GpioOpenError`] naming the chip and line that failed.
    pub fn open_privacy_controller(
        config: &PrivacyPinsConfig,
    ) -> Result<PrivacyController<CdevPin, CdevPin>, GpioOpenError> {
        Ok(PrivacyController::new(
            open_privacy_led(&config.led)?,
            open_privacy_switch(&config.switch, config.release_after)?,
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn missing_chip_is_reported_with_its_path() {
            let config = LineConfig {
                chip: PathBuf::from("/nonexistent/gpiochip9"),
                line: 3,
                active_low: false,
            };
            let Err(err) = open_output(&config) else {
                panic!("no such chip, yet it opened");
            };
            assert!(matches!(err, GpioOpenError::Chip { .. }), "{err:?}");
            assert!(err.to_string().contains("/nonexistent/gpiochip9"), "{err}");
        }

        #[test]
        fn a_file_that_is_not_a_gpio_chip_is_refused() {
            let config = LineConfig {
                chip: PathBuf::from("/dev/null"),
                line: 0,
                active_low: true,
            };
            let Err(err) = open_input(&config) else {
                panic!("/dev/null is no gpio chip, yet it opened");
            };
            assert!(matches!(err, GpioOpenError::Chip { .. }), "{err:?}");
            assert!(err.to_string().contains("/dev/null"), "{err}");
        }
    }
}

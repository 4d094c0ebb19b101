//! The privacy indicator LED driver.
//!
//! Owns its [`OutputPin`]; [`PrivacyLed::release`] hands it back. The driver remembers the last
//! state it wrote successfully and skips redundant writes; after a failed write the state is
//! unknown (`None`) and the next [`PrivacyLed::set`] writes again.

use embedded_hal::digital::OutputPin;

use super::Polarity;
use crate::error::BoardError;

/// The privacy indicator LED.
#[derive(Debug)]
pub struct PrivacyLed<P> {
    pin: P,
    polarity: Polarity,
    lit: Option<bool>,
}

impl<P: OutputPin> PrivacyLed<P> {
    /// Takes ownership of the pin. Does no I/O: the LED state is unknown until the first
    /// [`set`](Self::set).
    pub fn new(pin: P, polarity: Polarity) -> Self {
        Self {
            pin,
            polarity,
            lit: None,
        }
    }

    /// Drives the LED on (`true`) or off. Writes the pin unless the LED is already known to be in
    /// that state.
    ///
    /// # Errors
    ///
    /// [`BoardError::Led`] with the pin error; the LED state is then unknown.
    pub fn set(&mut self, lit: bool) -> Result<(), BoardError<P::Error>> {
        if self.lit == Some(lit) {
            return Ok(());
        }
        self.lit = None;
        self.pin
            .set_state(self.polarity.level(lit))
            .map_err(BoardError::Led)?;
        self.lit = Some(lit);
        Ok(())
    }

    /// Drives the LED on; see [`set`](Self::set).
    pub fn on(&mut self) -> Result<(), BoardError<P::Error>> {
        self.set(true)
    }

    /// Drives the LED off; see [`set`](Self::set).
    pub fn off(&mut self) -> Result<(), BoardError<P::Error>> {
        self.set(false)
    }

    /// The last state written successfully; `None` before the first write or after a failed one.
    pub fn is_lit(&self) -> Option<bool> {
        self.lit
    }

    /// The configured polarity.
    pub fn polarity(&self) -> Polarity {
        self.polarity
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

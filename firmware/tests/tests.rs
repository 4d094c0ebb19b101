//! The firmware's integration tests, one binary (modules below).

mod backends;
mod detect;
mod golden;
mod parity;

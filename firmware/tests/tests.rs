//! The firmware's integration tests, one binary (modules below).

mod backends;
mod detect;
mod e2e;
mod golden;
mod parity;

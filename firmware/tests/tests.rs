//! The firmware's integration tests, one binary (modules below).

mod backends;
mod golden;
mod parity;

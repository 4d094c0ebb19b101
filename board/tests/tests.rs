//! The board crate's integration tests, in one binary.
//!
//! - `privacy`: the drivers on embedded-hal-mock pins (every transaction listed, `.done()` at
//!   teardown), and a property test over input sequences on state-tracking fake pins.
//! - `thermal`: the thermal guard on fake sysfs trees in temp dirs.
//! - `install_script`: `board/deploy/install-jetson.sh`, dry run and real run into a fake root.
//! - `unit_file`: `board/systemd/caerd.service` directives, and `systemd-analyze verify`.
//!
//! The notify-socket test sets environment variables, so it is a binary of its own
//! (`tests/systemd_notify.rs`).

mod common;
mod install_script;
mod privacy;
mod thermal;
mod unit_file;

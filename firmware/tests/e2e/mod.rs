//! End-to-end tests: the real `caerd` binary against a real mosquitto, real files, and (for the
//! privacy test) strace; each test starts what it needs in its own temporary directory.

mod bad_input;
pub mod broker;
mod home_assistant;
mod outage;
mod pipeline;
mod privacy;
mod remote_config;
mod signed_bundles;
pub mod strace;
mod util;

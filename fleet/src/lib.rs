//! `caer-fleet`, the other end of the devices' MQTT: the fleet at a glance
//! ([`devices`]), configuration changes and commands with each device's ack ([`control`]),
//! engagement records stored exactly once in PostgreSQL ([`ingest`], [`store`]) and
//! reports from the database ([`report`]).
//!
//! It uses the device's own payload types, configuration rules and MQTT settings (the
//! `caer` library), and the JSON Schemas of `schemas/`.

pub mod broker;
pub mod check;
pub mod control;
pub mod devices;
pub mod error;
pub mod ingest;
pub mod push;
pub mod report;
pub mod signing;
pub mod store;
pub mod topic;
pub mod view;

pub use error::FleetError;

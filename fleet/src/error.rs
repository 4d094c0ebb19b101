//! The fleet tool's errors.

use std::path::PathBuf;

/// Why a fleet command cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is wrong.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file (empty for command-line settings).
        path: PathBuf,
        /// What is wrong, key by key.
        reason: String,
    },
    /// No broker named (`--broker` or `mqtt.url`).
    #[error("no broker: pass --broker mqtt://host[:port] or set mqtt.url in --config")]
    NoBroker,
    /// The password or TLS files named by `[mqtt]`.
    #[error(transparent)]
    MqttSetup(#[from] caer::daemon::publish::mqtt::MqttSetupError),
    /// The broker cannot be reached or refused us.
    #[error("broker {broker}: {reason}")]
    Broker {
        /// `host:port`.
        broker: String,
        /// What happened.
        reason: String,
    },
    /// The database cannot be reached or refused a statement.
    #[error("database: {0}")]
    Database(#[from] postgres::Error),
    /// A target filter or a change is wrong.
    #[error("{0}")]
    Usage(String),
    /// Writing output failed.
    #[error("cannot write {what}: {source}")]
    Write {
        /// What was being written.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

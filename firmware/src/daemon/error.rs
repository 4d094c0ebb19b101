//! The daemon's errors: what stops it ([`DaemonError`]), what keeps a valid configuration
//! from running ([`BuildError`], shown in safe mode) and what ends a running pipeline
//! ([`PipelineError`]).

use std::path::PathBuf;

use crate::daemon::publish::SinkError;
use crate::pipeline::error::ClassifyError;
use crate::pipeline::model::backend::SelectError;
use crate::pipeline::model::calibration::CalibrationError;
use crate::pipeline::source::SourceError;

/// A failure that stops the daemon (the binary exits non-zero).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The state directory cannot be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The outbox cannot be opened.
    #[error(transparent)]
    Outbox(#[from] crate::daemon::outbox::OutboxError),
    /// The MQTT settings cannot be resolved (password or TLS files).
    #[error(transparent)]
    MqttSetup(#[from] crate::daemon::publish::mqtt::MqttSetupError),
    /// A thread could not be spawned.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// The thread.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The privacy LED or switch line cannot be opened (`[privacy]`).
    #[error("privacy pins: {0}")]
    PrivacyPins(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sink stopped.
    #[error("the {kind} sink stopped: {source}")]
    Sink {
        /// `mqtt` or `stdout`.
        kind: &'static str,
        /// Why.
        #[source]
        source: SinkError,
    },
}

/// Why a valid configuration cannot run (the reason shown in safe mode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The frame source cannot be opened.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The model bundle cannot be loaded.
    #[error("model: {0}")]
    Bundle(#[from] crate::pipeline::error::BundleError),
    /// No configured (or, under `auto`, no) inference backend loads and passes the self-check.
    #[error("model.backend: {0}")]
    Backend(#[from] SelectError),
    /// The calibration file cannot be used with this bundle.
    #[error("model.calibration: {0}")]
    Calibration(#[from] CalibrationError),
    /// The classifier rejects the model or the settings.
    #[error("classifier: {0}")]
    Classifier(#[from] ClassifyError),
    /// The face detector cannot be built.
    #[error("detector: {0}")]
    Detector(#[from] crate::pipeline::detect::DetectError),
    /// The backend cannot load the bundle's face detector network.
    #[error("detect.kind = \"blaze\": {0}")]
    DetectorNetwork(#[from] crate::pipeline::model::backend::BackendError),
    /// A tracker, sampler or context setting is out of range (validation rules this out).
    #[error("settings: {0}")]
    Setting(#[from] crate::pipeline::settings::SettingsError),
}

/// A failure inside the running pipeline (puts the daemon into safe mode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source failed for good.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The model failed.
    #[error("inference: {0}")]
    Inference(#[from] crate::pipeline::error::InferenceError),
}

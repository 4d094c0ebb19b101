//! Post-hoc calibration of the model's logits: one temperature and one offset per class.
//!
//! `caer-calibrate fit` (the bench tool) fits a [`Calibration`] on the user's own labelled
//! clips and writes it as `calibration.json`; the daemon loads it with [`Calibration::load`]
//! and maps every clip's or window's logits through [`Calibration::apply`]:
//!
//! ```text
//! calibrated[k] = logits[k] / temperature + class_offsets[k]
//! ```
//!
//! The temperature (fitted by minimising the negative log-likelihood) makes the softmax
//! probabilities honest; the offsets shift decisions towards rare classes (fitted on a
//! class-balanced objective, they raise the unweighted average recall on imbalanced data).
//! Both keep the computation one division and one addition per class.
//!
//! A calibration belongs to one model: the file records the bundle's `model_id` and
//! [`bundle_hash`], and [`Calibration::load`] refuses a file made for another bundle, since
//! offsets fitted for one set of weights are meaningless for another.
//!
//! ## `calibration.json` (schema version 1)
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "version": "classroom-a-2025-03",
//!   "model_id": "clip-caer-vit-b-32",
//!   "model_sha256": "<bundle_hash of the bundle, lowercase hex>",
//!   "temperature": 1.8,
//!   "class_offsets": [0.0, 0.4, 1.1, 0.3, -0.2],
//!   "created_at": "2025-03-01T12:00:00Z",
//!   "generator": "caer-calibrate 0.1.0",
//!   "fitted_on": {"clips": 812, "per_class": [530, 49, 11, 60, 162]},
//!   "evaluated_on": {"clips": 203, "per_class": [132, 12, 3, 15, 41]},
//!   "metrics_before": {"nll": 0.91, "ece": 0.12, "uar": 55.1, "war": 71.0},
//!   "metrics_after": {"nll": 0.74, "ece": 0.03, "uar": 61.0, "war": 69.5}
//! }
//! ```
//!
//! `version` is a label chosen by whoever fits the file; `generator` names the tool.
//! `fitted_on` counts the clips per class (in [`crate::pipeline::model::bundle::CLASSES`] order) that the
//! parameters were fitted on, `evaluated_on` those of the held-out split that
//! `metrics_before` (raw logits) and `metrics_after` (calibrated) were measured on: `nll` is
//! the mean negative log-likelihood (natural log), `ece` the expected calibration error
//! (15 equal-width confidence bins, a fraction), `uar` and `war` percentages. The metrics
//! are informational; nothing here reads them. Unknown fields are refused.
//!
//! Invariant: a loaded or saved `Calibration` has a finite temperature above zero and finite
//! offsets.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::model::bundle::{Bundle, NUM_CLASSES};

/// The `calibration.json` schema version this firmware reads and writes.
pub const CALIBRATION_SCHEMA_VERSION: u32 = 1;

/// The conventional file name.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// Identifies the weights of a bundle: the lowercase hex sha256 of the text
/// `"caer-bundle-hash-v1\nimage_encoder <sha256>\ntemporal_head <sha256>\n"`, with the
/// manifest's (verified) hashes of the fp32 image encoder and the temporal head.
///
/// The int8 encoders are derived from the same weights and are left out, so a calibration
/// fitted with the fp32 models also applies to a device running an int8 encoder of the same
/// bundle. Cheap: no file is read.
pub fn bundle_hash(bundle: &Bundle) -> String {
    let files = &bundle.manifest().files;
    let text = format!(
        "caer-bundle-hash-v1\nimage_encoder {}\ntemporal_head {}\n",
        files.image_encoder.sha256.to_ascii_lowercase(),
        files.temporal_head.sha256.to_ascii_lowercase(),
    );
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The largest calibration file read.
pub const MAX_CALIBRATION_BYTES: u64 = 1 << 20;

/// Clips per class of one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    /// Clips in the split.
    pub clips: u64,
    /// Clips per class, in [`crate::pipeline::model::bundle::CLASSES`] order.
    pub per_class: [u64; NUM_CLASSES],
}

/// Figures of one set of logits on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationMetrics {
    /// Mean negative log-likelihood of the true class (natural log).
    pub nll: f64,
    /// Expected calibration error, 15 equal-width confidence bins, in `[0, 1]`.
    pub ece: f64,
    /// Unweighted average recall over the classes present, in percent.
    pub uar: f64,
    /// Weighted average recall (accuracy), in percent.
    pub war: f64,
}

/// A fitted calibration: `calibration.json` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Must be [`CALIBRATION_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The calibration's own version label, chosen when it is fitted.
    pub version: String,
    /// The bundle's `model_id`.
    pub model_id: String,
    /// [`bundle_hash`] of the bundle the logits came from.
    pub model_sha256: String,
    /// Divides the logits; finite and above zero.
    pub temperature: f64,
    /// Added to the scaled logits, in [`crate::pipeline::model::bundle::CLASSES`] order; finite.
    pub class_offsets: [f64; NUM_CLASSES],
    /// When it was fitted, RFC 3339 UTC.
    pub created_at: String,
    /// The tool and version that fitted it.
    pub generator: String,
    /// The split the parameters were fitted on.
    pub fitted_on: SplitCounts,
    /// The held-out split the metrics were measured on.
    pub evaluated_on: SplitCounts,
    /// Metrics of the raw logits on the held-out split.
    pub metrics_before: CalibrationMetrics,
    /// Metrics of the calibrated logits on the held-out split.
    pub metrics_after: CalibrationMetrics,
}

/// A calibration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// `model.trusted_keys` is set and the file's signature is missing or wrong.
    #[error(transparent)]
    Signature(#[from] super::signature::SignatureError),
    /// The file could not be read or written.
    #[error("cannot access calibration file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the calibration's structure. The message names the place,
    /// never the file's content (it may be any file).
    #[error("{} is not a valid calibration file: {what} (line {line}, column {column})", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// `not JSON` or `not a calibration`.
        what: &'static str,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// The file's schema version is not the one this firmware reads.
    #[error("{} has schema_version {found}; this firmware reads schema_version {supported}", path.display())]
    SchemaVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this firmware reads.
        supported: u32,
    },
    /// The file was fitted for another model than the loaded bundle.
    #[error(
        "{} was fitted for another model: its {field} is {file:?}, the bundle's is {bundle:?}; \
         fit a calibration for this bundle (caer-calibrate fit --bundle ...) or run without one",
        path.display()
    )]
    ModelMismatch {
        /// The file.
        path: PathBuf,
        /// `model_id` or `model_sha256`.
        field: &'static str,
        /// The value in the file.
        file: String,
        /// The bundle's value.
        bundle: String,
    },
    /// A parameter is out of range.
    #[error("{}: {field} is {value}; it must be {expected}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value, rendered.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
}

impl Calibration {
    /// Reads `path`, checks its schema version and parameters, and refuses it unless it was
    /// fitted for `bundle` (same `model_id` and [`bundle_hash`]).
    pub fn load(path: impl AsRef<Path>, bundle: &Bundle) -> Result<Calibration, CalibrationError> {
        Self::load_verified(path, bundle, &[])
    }

    /// [`Calibration::load`], and with `trusted` keys not empty, only if the file carries a
    /// valid signature by one of them (`<file>.sig`, [`signature`](super::signature)).
    pub fn load_verified(
        path: impl AsRef<Path>,
        bundle: &Bundle,
        trusted: &[super::signature::PublicKey],
    ) -> Result<Calibration, CalibrationError> {
        // A calibration is a few hundred bytes; the cap refuses a wrong file (/dev/zero) early.
        let path = path.as_ref();
        let data =
            crate::pipeline::files::read_capped(path, MAX_CALIBRATION_BYTES).map_err(|source| {
                CalibrationError::Io {
                    path: path.to_owned(),
                    source,
                }
            })?;
        if !trusted.is_empty() {
            super::signature::verify(path, &data, trusted)?;
        }
        let text = String::from_utf8_lossy(&data);
        let calibration = Self::from_json(&text, path)?;
        calibration.check_bundle(bundle, path)?;
        Ok(calibration)
    }

    /// Parses and checks a calibration (everything but the bundle); `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Calibration, CalibrationError> {
        let json_error = |e: serde_json::Error| CalibrationError::Json {
            path: path.to_owned(),
            what: if e.is_data() {
                "not a calibration"
            } else {
                "not JSON"
            },
            line: e.line(),
            column: e.column(),
        };
        // The schema version first, so that a future format is reported as such rather than
        // as an unknown field.
        let value: serde_json::Value = serde_json::from_str(text).map_err(json_error)?;
        if let Some(found) = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
        {
            if found != u64::from(CALIBRATION_SCHEMA_VERSION) {
                return Err(CalibrationError::SchemaVersion {
                    path: path.to_owned(),
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    supported: CALIBRATION_SCHEMA_VERSION,
                });
            }
        }
        // From the text again, so that the error has a line and a column.
        let calibration: Calibration = serde_json::from_str(text).map_err(json_error)?;
        calibration.check_values(path)?;
        Ok(calibration)
    }

    /// Refuses the calibration unless it was fitted for `bundle`; `path` names it in errors.
    pub fn check_bundle(&self, bundle: &Bundle, path: &Path) -> Result<(), CalibrationError> {
        let mismatch = |field, file: &str, bundle: String| CalibrationError::ModelMismatch {
            path: path.to_owned(),
            field,
            file: file.to_owned(),
            bundle,
        };
        let model_id = &bundle.manifest().model_id;
        if &self.model_id != model_id {
            return Err(mismatch("model_id", &self.model_id, model_id.clone()));
        }
        let hash = bundle_hash(bundle);
        if !self.model_sha256.eq_ignore_ascii_case(&hash) {
            return Err(mismatch("model_sha256", &self.model_sha256, hash));
        }
        Ok(())
    }

    /// Checks the schema version and that the temperature and offsets are usable.
    pub fn check_values(&self, path: &Path) -> Result<(), CalibrationError> {
        if self.schema_version != CALIBRATION_SCHEMA_VERSION {
            return Err(CalibrationError::SchemaVersion {
                path: path.to_owned(),
                found: self.schema_version,
                supported: CALIBRATION_SCHEMA_VERSION,
            });
        }
        let invalid = |field: String, value: f64, expected| CalibrationError::Invalid {
            path: path.to_owned(),
            field,
            value: value.to_string(),
            expected,
        };
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(invalid(
                "temperature".to_owned(),
                self.temperature,
                "finite and above 0",
            ));
        }
        for (k, &offset) in self.class_offsets.iter().enumerate() {
            if !offset.is_finite() {
                return Err(invalid(format!("class_offsets[{k}]"), offset, "finite"));
            }
        }
        Ok(())
    }

    /// The calibrated logits: `logits / temperature + class_offsets` (computed in `f64`).
    pub fn apply(&self, logits: &[f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
        std::array::from_fn(|k| {
            (f64::from(logits[k]) / self.temperature + self.class_offsets[k]) as f32
        })
    }

    /// The file's JSON text (pretty-printed, newline-terminated).
    pub fn to_json(&self) -> String {
        // Plain structs of numbers and strings always serialise; check_values keeps the
        // numbers finite.
        let mut text = serde_json::to_string_pretty(self).expect("a calibration serialises");
        text.push('\n');
        text
    }

    /// Checks the values and writes the file (to a temporary file beside it, then renamed, so
    /// a reader never sees half a file).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CalibrationError> {
        let path = path.as_ref();
        self.check_values(path)?;
        let io = |source| CalibrationError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_bundle() -> Bundle {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle");
        Bundle::load(dir).expect("the committed fixture bundle loads")
    }

    fn sample(bundle: &Bundle) -> Calibration {
        let metrics = CalibrationMetrics {
            nll: 1.0,
            ece: 0.1,
            uar: 50.0,
            war: 60.0,
        };
        let counts = SplitCounts {
            clips: 5,
            per_class: [1; NUM_CLASSES],
        };
        Calibration {
            schema_version: CALIBRATION_SCHEMA_VERSION,
            version: "test".to_owned(),
            model_id: bundle.manifest().model_id.clone(),
            model_sha256: bundle_hash(bundle),
            temperature: 2.0,
            class_offsets: [0.0, 0.5, -0.5, 1.0, -1.0],
            created_at: "2025-01-01T00:00:00Z".to_owned(),
            generator: "test".to_owned(),
            fitted_on: counts.clone(),
            evaluated_on: counts,
            metrics_before: metrics.clone(),
            metrics_after: metrics,
        }
    }

    #[test]
    fn apply_divides_by_the_temperature_and_adds_the_offsets() {
        let calibration = sample(&golden_bundle());
        let out = calibration.apply(&[2.0, 4.0, -2.0, 0.0, 10.0]);
        assert_eq!(out, [1.0, 2.5, -1.5, 1.0, 4.0]);
    }

    #[test]
    fn bundle_hash_is_lowercase_hex_of_the_two_fp32_models() {
        let bundle = golden_bundle();
        let hash = bundle_hash(&bundle);
        assert_eq!(hash.len(), 64);
        assert!(hash
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        let files = &bundle.manifest().files;
        let text = format!(
            "caer-bundle-hash-v1\nimage_encoder {}\ntemporal_head {}\n",
            files.image_encoder.sha256, files.temporal_head.sha256
        );
        assert_eq!(hash, format!("{:x}", Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn a_saved_file_loads_back_for_its_bundle() {
        let bundle = golden_bundle();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CALIBRATION_FILE);
        let calibration = sample(&bundle);
        calibration.save(&path).expect("save");
        assert_eq!(
            Calibration::load(&path, &bundle).expect("load"),
            calibration
        );
    }

    #[test]
    fn a_file_for_another_model_is_refused() {
        let bundle = golden_bundle();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CALIBRATION_FILE);
        let mut other = sample(&bundle);
        other.model_sha256 = "00".repeat(32);
        other.save(&path).expect("save");
        let err = Calibration::load(&path, &bundle).unwrap_err();
        assert!(
            matches!(
                err,
                CalibrationError::ModelMismatch {
                    field: "model_sha256",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("another model"), "{err}");

        let mut other = sample(&bundle);
        other.model_id = "clip-caer-vit-l-14".to_owned();
        other.save(&path).expect("save");
        let err = Calibration::load(&path, &bundle).unwrap_err();
        assert!(
            matches!(
                err,
                CalibrationError::ModelMismatch {
                    field: "model_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_files_name_the_problem() {
        let bundle = golden_bundle();
        let path = Path::new("calibration.json");
        let mut value = serde_json::to_value(sample(&bundle)).expect("to_value");

        value["class_offsets"] = serde_json::json!([0.0, 1.0]);
        let err = Calibration::from_json(&value.to_string(), path).unwrap_err();
        assert!(
            matches!(&err, CalibrationError::Json { line, .. } if *line > 0),
            "{err}"
        );

        value["class_offsets"] = serde_json::json!([0.0, 0.0, 0.0, 0.0, 0.0]);
        value["temperature"] = serde_json::json!(0.0);
        let err = Calibration::from_json(&value.to_string(), path).unwrap_err();
        assert!(
            matches!(&err, CalibrationError::Invalid { field, .. } if field == "temperature"),
            "{err}"
        );

        value["temperature"] = serde_json::json!(1.0);
        value["schema_version"] = serde_json::json!(2);
        value["new_field"] = serde_json::json!(true);
        let err = Calibration::from_json(&value.to_string(), path).unwrap_err();
        assert!(
            matches!(err, CalibrationError::SchemaVersion { found: 2, .. }),
            "{err}"
        );

        value["schema_version"] = serde_json::json!(1);
        let err = Calibration::from_json(&value.to_string(), path).unwrap_err();
        // The place of the error, never the file's content: an unknown key or a value there
        // may be a secret of whatever file the path names.
        let message = err.to_string();
        assert!(
            message.contains("not a calibration") && !message.contains("new_field"),
            "{message}"
        );
        value["temperature"] = serde_json::json!("hunter2");
        let message = Calibration::from_json(&value.to_string(), path)
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");

        let err = Calibration::from_json("{", path).unwrap_err();
        assert!(matches!(err, CalibrationError::Json { .. }), "{err}");
    }

    #[test]
    fn an_endless_file_is_refused_after_the_cap() {
        let bundle = crate::pipeline::model::bundle::Bundle::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle"),
        )
        .unwrap();
        let err = Calibration::load("/dev/zero", &bundle).unwrap_err();
        assert!(matches!(err, CalibrationError::Io { .. }), "{err}");
    }
}

//! `caer-calibrate`, the caer-edge bench tool: measures, calibrates and compares CLIP-CAER on
//! the user's own labelled clips, off the device.
//!
//! Commands (the binary `caer-calibrate`; each a module here):
//!
//! - [`eval`]: the model over a labelled dataset in the RAER layout ([`dataset`]): UAR, WAR,
//!   per-class recall, the confusion matrix, coarse engaged/distracted figures, NLL and ECE
//!   ([`metrics`]), per-clip logits and probabilities for clip-by-clip comparison with
//!   another implementation ([`report`]), PNG figures ([`plot`]).
//! - `fit` ([`calibrate`], maths in [`fit`]): temperature scaling and per-class logit
//!   offsets, written as the `calibration.json` that the daemon loads
//!   ([`caer::pipeline::model::calibration::Calibration`]).
//! - [`compare`]: two backends or precisions on the same clips: agreement, logit
//!   differences, embedding cosine, per-stage latency. Backends are chosen by name
//!   ([`backends`]).
//! - [`collect`]: preprocessed crops for the exporter's static int8 calibration (bench only).
//! - [`synth`]: a labelled synthetic classroom dataset in the RAER layout (the demo model's
//!   training data and held-out checks).
//!
//! Design: the command line is parsed, then resolved once ([`plan`]) into the verified
//! bundle, the loaded backend(s), the parsed list file, the box files and the face detector:
//! every failure that concerns the whole run (exit 2) happens there, before the first clip.
//! Each clip is then loaded ([`clips`]: only the sampled frames are decoded) and run; a clip
//! that fails is reported on stderr and in the JSON, skipped, and makes the run exit 1 at
//! the end ([`error`]). JSON goes to stdout, diagnostics and the progress bar
//! ([`progress`]) to stderr. `eval` classifies through the firmware's own
//! [`caer::pipeline::model::classify::ClipClassifier`], so what is measured is what the device runs.
//!
//! ```
//! use caer_calibrate::metrics::compute;
//! use caer::pipeline::model::bundle::CoarseLabel::{Distracted, Engaged};
//!
//! let labels = [0, 4];
//! let logits = [[3.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 2.0]];
//! let metrics = compute(&labels, &logits, &[Engaged, Engaged, Engaged, Engaged, Distracted]).unwrap();
//! assert_eq!(metrics.uar, 100.0);
//! ```

#![deny(missing_docs)]

pub mod backends;
pub mod calibrate;
pub mod clips;
pub mod collect;
pub mod compare;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod fit;
pub mod metrics;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod report;
pub mod synth;

pub use error::{ClipError, ClipIssue, Error};

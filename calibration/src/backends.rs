//! Inference backends by name, for `--backend` and `compare --a/--b`.
//!
//! The names are the firmware's backend choices ([`caer::pipeline::model::backend::BackendChoice`]: `tract`,
//! `ort-cpu`, `ort-cpu-int8`, `cuda`, `tensorrt`, `auto`), built by the firmware's own
//! [`caer::pipeline::model::backend::select`], which loads the bundle's models (optimised for this machine
//! while loading) and runs the manifest's self-check, exactly as the daemon does at start-up.
//! So the bench measures the backend the device would run, and a backend added to the
//! firmware is available here with no change. The ONNX Runtime ones need this crate's cargo
//! features `ort`, `cuda` or `tensorrt` (forwarded to the firmware); without them, asking for
//! one says which feature is missing.
//!
//! Every backend is an `Arc<dyn InferenceBackend>`, shared read-only after loading.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use caer::pipeline::model::backend::{
    select, BackendChoice, InferenceBackend, SelectOptions, TractOptions,
};
use caer::pipeline::model::bundle::Bundle;

use crate::error::Error;

/// Every backend name, in the order `--help` lists them.
pub const BACKENDS: [&str; 6] = {
    let all = BackendChoice::ALL;
    let mut names = [""; 6];
    let mut i = 0;
    while i < all.len() {
        names[i] = all[i].as_str();
        i += 1;
    }
    names
};

/// Settings shared by all backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOptions {
    /// Threads for the models (tract's pool, ONNX Runtime's intra-op threads).
    pub threads: NonZeroUsize,
    /// The ONNX Runtime library; none: `$ORT_DYLIB_PATH`, else `libonnxruntime.so`.
    pub ort_library: Option<PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            threads: TractOptions::default().threads,
            ort_library: None,
        }
    }
}

/// A loaded backend and what the firmware said about it.
#[derive(Clone)]
pub struct LoadedBackend {
    /// The backend.
    pub backend: Arc<dyn InferenceBackend>,
    /// The choice that ran (never `auto`), e.g. `tract`.
    pub name: &'static str,
    /// Why, with the self-check's outcome.
    pub reason: String,
}

impl std::fmt::Debug for LoadedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedBackend")
            .field("name", &self.name)
            .field("reason", &self.reason)
            .finish()
    }
}

/// Loads backend `name` (one of [`BACKENDS`]) over `bundle`.
pub fn load_backend(
    name: &str,
    bundle: &Bundle,
    options: &BackendOptions,
) -> Result<LoadedBackend, Error> {
    let choice: BackendChoice = name.parse().map_err(|_| Error::UnknownBackend {
        name: name.to_owned(),
        known: BACKENDS.join(", "),
    })?;
    let select_options = SelectOptions {
        threads: options.threads,
        ort_library: options.ort_library.clone(),
        ..SelectOptions::default()
    };
    let selected = select(choice, bundle, &select_options).map_err(|source| Error::Backend {
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    Ok(LoadedBackend {
        backend: selected.backend,
        name: selected.name,
        reason: selected.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_firmware_choices() {
        assert!(BACKENDS.contains(&"tract") && BACKENDS.contains(&"ort-cpu-int8"));
        for name in BACKENDS {
            assert_eq!(
                name.parse::<BackendChoice>().expect("a choice").as_str(),
                name
            );
        }
    }
}

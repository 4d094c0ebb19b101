//! Backend selection: `auto` order, the start-up self-check, and explicit choices that fail.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use caer::pipeline::model::backend::select::{
    select, BackendChoice, BackendError, SelectError, SelectOptions, SelfCheckMeasure,
};

use super::{bundle, bundle_with_manifest};

#[cfg(feature = "ort")]
fn ort_library() -> Option<PathBuf> {
    Some(super::ort::library())
}

#[cfg(not(feature = "ort"))]
fn ort_library() -> Option<PathBuf> {
    None
}

fn options() -> SelectOptions {
    SelectOptions {
        threads: NonZeroUsize::new(2).unwrap(),
        ort_library: ort_library(),
        ..SelectOptions::default()
    }
}

/// The fixture bundle with its `self_check.embedding` changed by `edit`.
fn tampered(
    edit: impl Fn(usize, f64) -> f64,
) -> (tempfile::TempDir, caer::pipeline::model::bundle::Bundle) {
    bundle_with_manifest(|m| {
        let embedding = m["self_check"]["embedding"].as_array_mut().unwrap();
        for (i, v) in embedding.iter_mut().enumerate() {
            *v = edit(i, v.as_f64().unwrap()).into();
        }
    })
}

fn names(attempts: &[(BackendChoice, BackendError)]) -> Vec<&'static str> {
    attempts.iter().map(|(c, _)| c.as_str()).collect()
}

#[test]
fn auto_picks_onnx_runtime_cpu_when_built_with_it_and_tract_otherwise() {
    let selected = select(BackendChoice::Auto, &bundle(), &options()).unwrap();
    println!("auto: {} ({})", selected.name, selected.reason);
    let expected = if cfg!(feature = "ort") {
        "ort-cpu"
    } else {
        "tract"
    };
    assert_eq!(selected.name, expected);
    assert_eq!(selected.backend.name(), expected);
    assert!(selected.reason.starts_with("auto: "), "{}", selected.reason);
    assert!(
        selected
            .reason
            .contains("passed the self-check (max abs diff"),
        "{}",
        selected.reason
    );
    // Backends whose cargo feature is off are skipped as not compiled in, in auto's order.
    let mut skipped = Vec::new();
    if !cfg!(feature = "tensorrt") {
        skipped.push("tensorrt");
    }
    if !cfg!(feature = "cuda") {
        skipped.push("cuda");
    }
    if !cfg!(feature = "ort") {
        skipped.push("ort-cpu");
    }
    assert_eq!(names(&selected.attempts), skipped);
    for (_, error) in &selected.attempts {
        assert!(matches!(error, BackendError::NotCompiled { .. }), "{error}");
    }
}

#[test]
fn an_explicit_tract_choice_is_self_checked() {
    let selected = select(BackendChoice::Tract, &bundle(), &options()).unwrap();
    println!("tract: {}", selected.reason);
    assert_eq!(selected.name, "tract");
    assert!(
        selected
            .reason
            .starts_with("configured; tract passed the self-check"),
        "{}",
        selected.reason
    );
    assert!(selected.attempts.is_empty());
}

#[test]
fn a_tampered_self_check_fails_an_explicit_choice_with_a_clear_error() {
    let (_dir, bundle) = tampered(|_, v| -v);
    let err = select(BackendChoice::Tract, &bundle, &options()).unwrap_err();
    println!("{err}");
    assert!(
        matches!(
            err,
            SelectError::Failed {
                choice: BackendChoice::Tract,
                source: BackendError::SelfCheckFailed(SelfCheckMeasure::MaxAbsDiff { .. })
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("backend tract: self-check failed: max abs diff"),
        "{text}"
    );
    assert!(text.contains("self_check.embedding"), "{text}");
}

#[test]
fn a_tampered_self_check_makes_auto_fail_listing_every_attempt() {
    let (_dir, bundle) = tampered(|_, v| -v);
    let err = select(BackendChoice::Auto, &bundle, &options()).unwrap_err();
    println!("{err}");
    let SelectError::NoneUsable { attempts } = &err else {
        panic!("{err}")
    };
    assert_eq!(names(attempts), ["tensorrt", "cuda", "ort-cpu", "tract"]);
    for (choice, error) in attempts {
        let self_check = matches!(error, BackendError::SelfCheckFailed(_));
        assert_eq!(self_check, choice.is_compiled_in(), "{choice}: {error}");
    }
    let text = err.to_string();
    assert!(text.starts_with("no usable backend: tensorrt: "), "{text}");
    assert!(
        text.contains("; tract: self-check failed: max abs diff"),
        "{text}"
    );
}

#[test]
fn a_backend_without_its_feature_is_an_error_when_chosen() {
    for choice in [
        BackendChoice::TensorRt,
        BackendChoice::Cuda,
        BackendChoice::OrtCpu,
    ] {
        if choice.is_compiled_in() {
            continue;
        }
        let err = select(choice, &bundle(), &options()).unwrap_err();
        let feature = choice.feature().unwrap();
        assert_eq!(
            err.to_string(),
            format!("backend {choice}: not compiled in (cargo feature {feature})")
        );
    }
}

#[test]
fn a_bundle_without_self_check_is_used_but_reported_unverified() {
    let (_dir, bundle) = bundle_with_manifest(|m| {
        m.as_object_mut().unwrap().remove("self_check");
    });
    let selected = select(BackendChoice::Tract, &bundle, &options()).unwrap();
    assert!(
        selected.reason.contains("no self_check, not verified"),
        "{}",
        selected.reason
    );
}

#[test]
fn a_self_check_of_the_wrong_length_is_refused() {
    let (_dir, bundle) = bundle_with_manifest(|m| {
        m["self_check"]["embedding"].as_array_mut().unwrap().pop();
    });
    let err = select(BackendChoice::Tract, &bundle, &options()).unwrap_err();
    assert!(
        matches!(
            err,
            SelectError::Failed {
                source: BackendError::SelfCheckLength { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[cfg(feature = "ort")]
#[test]
fn auto_falls_through_to_tract_when_onnx_runtime_cannot_load() {
    let options = SelectOptions {
        ort_library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
        ..options()
    };
    let selected = select(BackendChoice::Auto, &bundle(), &options).unwrap();
    println!(
        "auto with a missing library: {} ({})",
        selected.name, selected.reason
    );
    assert_eq!(selected.name, "tract");
    let (choice, error) = selected.attempts.last().unwrap();
    assert_eq!(*choice, BackendChoice::OrtCpu);
    assert!(
        error.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{error}"
    );
    assert!(
        selected.reason.contains("skipped") && selected.reason.contains("ort-cpu: "),
        "{}",
        selected.reason
    );
}

#[cfg(feature = "ort")]
#[test]
fn int8_is_checked_by_cosine_and_fp32_by_max_abs_diff() {
    // A reference off by 5e-3 in one value: too far for fp32, still cosine ~1.
    let (_dir, bundle) = tampered(|i, v| if i == 0 { v + 5e-3 } else { v });
    let int8 = select(BackendChoice::OrtCpuInt8, &bundle, &options()).unwrap();
    println!("ort-cpu-int8: {}", int8.reason);
    assert!(
        int8.reason.contains("passed the self-check (cosine"),
        "{}",
        int8.reason
    );
    let err = select(BackendChoice::OrtCpu, &bundle, &options()).unwrap_err();
    println!("{err}");
    assert!(
        err.to_string()
            .starts_with("backend ort-cpu: self-check failed: max abs diff"),
        "{err}"
    );
}

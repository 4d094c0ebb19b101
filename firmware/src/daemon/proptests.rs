//! Property tests of what reads outside input: the `config/set` and `cmd` parsers, the
//! remote policy, and the outbox's segment reader. Each runs a bounded number of cases
//! (`PROPTEST_CASES` raises it for a longer hunt).

use proptest::prelude::*;
use serde_json::Value;

use crate::daemon::config::remote::REMOTE_KEYS;
use crate::daemon::config::{DaemonConfig, ValidatedConfig};
use crate::daemon::fleet::{parse_cmd, parse_config_set, ControlRequest, MAX_ID_CHARS};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// JSON values shaped like configuration changes: objects of known and unknown section and
/// key names, with scalars, nulls, arrays and nested objects.
fn json_value() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "source",
        "detect",
        "track",
        "context",
        "sampling",
        "model",
        "policy",
        "report",
        "mqtt",
        "outbox",
        "remote",
        "privacy",
        "thermal",
        "device",
        "state_dir",
        "fps",
        "kind",
        "max_frames",
        "video_file",
        "ffmpeg",
        "frame_dir",
        "annotations",
        "calibration",
        "bundle",
        "queue_frames",
        "rate_hz",
        "max_tracks",
        "profile",
        "min_group_size",
        "interval_secs",
        "iou_threshold",
        "blaze",
        "tile_sizes",
        "url",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        "[a-z/._]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(names.clone(), inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// Changes of remote keys only, with plausible and implausible values: many are accepted.
fn remote_patch() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(REMOTE_KEYS.to_vec());
    let value = prop_oneof![
        (0u64..200).prop_map(Value::from),
        (0.0f64..2.0).prop_map(Value::from),
        prop::sample::select(vec![
            "fine",
            "coarse",
            "presence",
            "tract",
            "blaze",
            "seeta",
            "annotated"
        ])
        .prop_map(|v| Value::String(v.to_owned())),
        Just(Value::Null),
    ];
    prop::collection::vec((key, value), 1..4).prop_map(|pairs| {
        let mut patch = serde_json::json!({});
        for (key, value) in pairs {
            let mut node = &mut patch;
            let parts: Vec<&str> = key.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                node = node
                    .as_object_mut()
                    .expect("objects all the way down")
                    .entry(*part)
                    .or_insert_with(|| serde_json::json!({}));
                if !node.is_object() {
                    *node = serde_json::json!({});
                }
            }
            node[parts[parts.len() - 1]] = value;
        }
        patch
    })
}

fn base() -> ValidatedConfig {
    let text = "[device]\nsite = \"s\"\nroom = \"r\"\nid = \"d\"\n[source]\nkind = \"generated\"\n";
    DaemonConfig::from_toml(text).unwrap().validate().unwrap()
}

fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value.as_object() {
        Some(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        None => out.push((prefix.to_owned(), value.clone())),
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn control_parsers_never_panic_and_always_say_why(payload in prop::collection::vec(any::<u8>(), 0..300)) {
        for result in [parse_config_set(&payload), parse_cmd(&payload)] {
            if let Err(rejected) = result {
                prop_assert!(!rejected.errors.is_empty());
                prop_assert!(rejected.id.as_ref().is_none_or(|id| id.chars().count() <= MAX_ID_CHARS));
            }
        }
    }

    #[test]
    fn envelopes_of_any_shape_parse_or_are_refused(config in json_value(), id in "[ -~]{0,140}") {
        let payload = serde_json::json!({"schema": "caer.config-set.v1", "id": id, "config": config});
        match parse_config_set(payload.to_string().as_bytes()) {
            Ok(ControlRequest::SetConfig { patch, .. }) => prop_assert!(patch.is_object()),
            Ok(other) => prop_assert!(false, "{other:?}"),
            Err(rejected) => prop_assert!(!rejected.errors.is_empty()),
        }
    }

    /// A change the policy accepts differs from the running configuration only in keys a
    /// remote party may change.
    #[test]
    fn accepted_remote_changes_touch_only_remote_keys(patch in prop_oneof![json_value(), remote_patch()]) {
        let base = base();
        if let Ok(merged) = base.merge_remote(&patch) {
            let (mut before, mut after) = (Vec::new(), Vec::new());
            leaves("", &serde_json::to_value(base.config()).unwrap(), &mut before);
            leaves("", &serde_json::to_value(merged.config()).unwrap(), &mut after);
            let before: std::collections::BTreeMap<_, _> = before.into_iter().collect();
            let after: std::collections::BTreeMap<_, _> = after.into_iter().collect();
            let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for key in keys {
                if before.get(key) != after.get(key) {
                    prop_assert!(REMOTE_KEYS.contains(&key.as_str()), "{key} changed remotely");
                }
            }
        }
    }
}

/// The property above is only as good as the accepted changes it sees: the generator must
/// produce some.
#[test]
fn the_remote_patch_generator_yields_accepted_changes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let base = base();
    let accepted = (0..200)
        .filter(|_| {
            let patch = remote_patch().new_tree(&mut runner).unwrap().current();
            base.merge_remote(&patch).is_ok()
        })
        .count();
    assert!(accepted >= 20, "only {accepted} of 200 accepted");
}

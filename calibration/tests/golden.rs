//! Cross-check with the reference: `eval` on the golden clip (`tests/golden/clip`, boxes
//! from `tests/golden/parity.json`) gives the PyTorch reference's logits.

use crate::util::{five, golden_bundle, golden_clip_dataset, parity, run};

#[test]
fn eval_on_the_golden_clip_gives_the_golden_logits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = golden_clip_dataset(dir.path(), 3);
    let out = dir.path().join("out");
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        list.as_os_str(),
        "--face-boxes".as_ref(),
        dir.path().join("faces.json").as_os_str(),
        "--body-boxes".as_ref(),
        dir.path().join("bodies.json").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(0);
    let report = output.json();
    let clip = &report["clips"][0];
    let golden = parity();
    assert_eq!(clip["sampled_indices"], golden["sampled_indices"]);
    let (got, want) = (five(&clip["logits"]), five(&golden["logits"]));
    for k in 0..5 {
        assert!(
            (got[k] - want[k]).abs() < 1e-3,
            "logit {k}: {} vs golden {}",
            got[k],
            want[k]
        );
    }
    let (got, want) = (five(&clip["probabilities"]), five(&golden["probabilities"]));
    for k in 0..5 {
        assert!(
            (got[k] - want[k]).abs() < 1e-4,
            "probability {k}: {} vs golden {}",
            got[k],
            want[k]
        );
    }
}

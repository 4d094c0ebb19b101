//! Classification and calibration figures, from labels and logits. Pure functions.
//!
//! - WAR = 100 * correct / clips; per-class recall = 100 * correct / clips of that class;
//!   UAR = the mean of the per-class recalls over the classes that have clips (a class
//!   without clips has no recall and is left out of the mean, and reported as `null`).
//! - The confusion matrix counts clips by true class (rows) and predicted class (columns).
//! - The prediction is the argmax of the logits (the first on ties, as in the firmware);
//!   probabilities are their softmax.
//! - NLL: the mean of `-ln p(true class)`, computed from the logits in `f64`.
//! - ECE: confidences (the top probability) in [`ECE_BINS`] equal-width bins;
//!   `sum over bins of (clips in bin / clips) * |accuracy - mean confidence|`.
//! - Coarse: classes mapped to engaged / distracted with the bundle's mapping, for the true
//!   and the predicted class.

use caer::pipeline::model::bundle::{CoarseLabel, NUM_CLASSES};
use caer::pipeline::model::classify::argmax;
use serde::{Deserialize, Serialize};

/// Equal-width confidence bins of the ECE and the reliability diagram.
pub const ECE_BINS: usize = 15;

/// One bin of the reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the confidence bin.
    pub lower: f64,
    /// Upper edge.
    pub upper: f64,
    /// Clips whose confidence falls in the bin.
    pub clips: u64,
    /// Their mean confidence (`null` when empty).
    pub confidence: Option<f64>,
    /// Their accuracy, a fraction (`null` when empty).
    pub accuracy: Option<f64>,
}

/// The coarse engaged/distracted figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoarseMetrics {
    /// `["engaged", "distracted"]`: the order of the rows and columns below.
    pub labels: [String; 2],
    /// Clips by true coarse label (rows) and predicted coarse label (columns).
    pub confusion: [[u64; 2]; 2],
    /// Accuracy, percent.
    pub war: f64,
    /// Mean of the two recalls over the labels that have clips, percent.
    pub uar: f64,
    /// Recall of each label, percent (`null` without clips).
    pub recall: [Option<f64>; 2],
    /// Precision of "distracted", percent (`null` if never predicted).
    pub distracted_precision: Option<f64>,
    /// F1 of "distracted", percent (`null` if precision or recall is undefined or both 0).
    pub distracted_f1: Option<f64>,
}

/// Every figure of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Clips evaluated.
    pub clips: u64,
    /// Unweighted average recall, percent.
    pub uar: f64,
    /// Weighted average recall (accuracy), percent.
    pub war: f64,
    /// Clips per true class.
    pub support: [u64; NUM_CLASSES],
    /// Recall per class, percent (`null` for a class without clips).
    pub per_class_recall: [Option<f64>; NUM_CLASSES],
    /// Precision per class, percent (`null` for a class never predicted).
    pub per_class_precision: [Option<f64>; NUM_CLASSES],
    /// Rows: true class; columns: predicted class.
    pub confusion: [[u64; NUM_CLASSES]; NUM_CLASSES],
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Expected calibration error ([`ECE_BINS`] bins), a fraction.
    pub ece: f64,
    /// The reliability diagram's bins.
    pub reliability: Vec<ReliabilityBin>,
    /// Engaged / distracted.
    pub coarse: CoarseMetrics,
}

/// Softmax in `f64`, stable.
pub fn softmax64(logits: &[f64; NUM_CLASSES]) -> [f64; NUM_CLASSES] {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp = logits.map(|l| (l - max).exp());
    let sum: f64 = exp.iter().sum();
    exp.map(|e| e / sum)
}

/// `-ln softmax(logits)[label]`, stable.
pub fn nll_one(logits: &[f64; NUM_CLASSES], label: usize) -> f64 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    lse - logits[label]
}

/// The predicted class: argmax of the logits, the first on ties.
pub fn predict(logits: &[f32; NUM_CLASSES]) -> usize {
    argmax(logits).unwrap_or(0)
}

fn percent(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| 100.0 * num as f64 / den as f64)
}

/// Mean NLL of `labels` under `logits` (0 clips: NaN).
pub fn mean_nll(labels: &[usize], logits: &[[f64; NUM_CLASSES]]) -> f64 {
    let sum: f64 = labels.iter().zip(logits).map(|(&y, z)| nll_one(z, y)).sum();
    sum / labels.len() as f64
}

/// The reliability bins and the ECE of `labels` under `logits`.
pub fn reliability(labels: &[usize], logits: &[[f64; NUM_CLASSES]]) -> (Vec<ReliabilityBin>, f64) {
    let mut count = [0u64; ECE_BINS];
    let mut conf_sum = [0f64; ECE_BINS];
    let mut correct = [0u64; ECE_BINS];
    for (&y, z) in labels.iter().zip(logits) {
        let p = softmax64(z);
        let top = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let predicted = p.iter().position(|&v| v == top).unwrap_or(0);
        let bin = ((top * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[bin] += 1;
        conf_sum[bin] += top;
        correct[bin] += u64::from(predicted == y);
    }
    let n = labels.len() as f64;
    let mut ece = 0.0;
    let bins = (0..ECE_BINS)
        .map(|b| {
            let (confidence, accuracy) = if count[b] > 0 {
                let c = conf_sum[b] / count[b] as f64;
                let a = correct[b] as f64 / count[b] as f64;
                ece += count[b] as f64 / n * (a - c).abs();
                (Some(c), Some(a))
            } else {
                (None, None)
            };
            ReliabilityBin {
                lower: b as f64 / ECE_BINS as f64,
                upper: (b + 1) as f64 / ECE_BINS as f64,
                clips: count[b],
                confidence,
                accuracy,
            }
        })
        .collect();
    (bins, ece)
}

/// UAR and WAR (percent) of predictions: the headline pair, for fitting and reports.
pub fn uar_war(labels: &[usize], predicted: &[usize]) -> (f64, f64) {
    let confusion = confusion(labels, predicted);
    let (uar, war, _) = recalls(&confusion);
    (uar, war)
}

fn confusion(labels: &[usize], predicted: &[usize]) -> [[u64; NUM_CLASSES]; NUM_CLASSES] {
    let mut m = [[0u64; NUM_CLASSES]; NUM_CLASSES];
    for (&y, &p) in labels.iter().zip(predicted) {
        m[y][p] += 1;
    }
    m
}

/// UAR, WAR and per-class recalls of a confusion matrix of any size.
fn recalls<const N: usize>(m: &[[u64; N]; N]) -> (f64, f64, [Option<f64>; N]) {
    let per_class: [Option<f64>; N] = std::array::from_fn(|k| percent(m[k][k], m[k].iter().sum()));
    let present: Vec<f64> = per_class.iter().flatten().copied().collect();
    let uar = present.iter().sum::<f64>() / present.len() as f64;
    let total: u64 = m.iter().flatten().sum();
    let correct: u64 = (0..N).map(|k| m[k][k]).sum();
    let war = percent(correct, total).unwrap_or(f64::NAN);
    (uar, war, per_class)
}

/// All figures for `labels` (class indices) under `logits` (the scores the prediction is
/// taken from: raw or calibrated). `None` without clips.
pub fn compute(
    labels: &[usize],
    logits: &[[f32; NUM_CLASSES]],
    coarse_map: &[CoarseLabel; NUM_CLASSES],
) -> Option<Metrics> {
    if labels.is_empty() {
        return None;
    }
    let predicted: Vec<usize> = logits.iter().map(predict).collect();
    let confusion = confusion(labels, &predicted);
    let (uar, war, per_class_recall) = recalls(&confusion);
    let support: [u64; NUM_CLASSES] = std::array::from_fn(|k| confusion[k].iter().sum());
    let per_class_precision = std::array::from_fn(|k| {
        percent(
            confusion[k][k],
            (0..NUM_CLASSES).map(|y| confusion[y][k]).sum(),
        )
    });
    let logits64: Vec<[f64; NUM_CLASSES]> = logits.iter().map(|z| z.map(f64::from)).collect();
    let (reliability, ece) = reliability(labels, &logits64);

    let coarse_index = |k: usize| usize::from(coarse_map[k] == CoarseLabel::Distracted);
    let mut cm = [[0u64; 2]; 2];
    for (&y, &p) in labels.iter().zip(&predicted) {
        cm[coarse_index(y)][coarse_index(p)] += 1;
    }
    let (coarse_uar, coarse_war, coarse_recall) = recalls(&cm);
    let distracted_precision = percent(cm[1][1], cm[0][1] + cm[1][1]);
    let distracted_f1 = match (distracted_precision, coarse_recall[1]) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        _ => None,
    };
    Some(Metrics {
        clips: labels.len() as u64,
        uar,
        war,
        support,
        per_class_recall,
        per_class_precision,
        confusion,
        nll: mean_nll(labels, &logits64),
        ece,
        reliability,
        coarse: CoarseMetrics {
            labels: [
                CoarseLabel::Engaged.as_str().to_owned(),
                CoarseLabel::Distracted.as_str().to_owned(),
            ],
            confusion: cm,
            war: coarse_war,
            uar: coarse_uar,
            recall: coarse_recall,
            distracted_precision,
            distracted_f1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CoarseLabel::{Distracted, Engaged};

    const MAP: [CoarseLabel; 5] = [Engaged, Engaged, Engaged, Engaged, Distracted];

    fn one_hot(k: usize) -> [f32; 5] {
        let mut z = [0.0; 5];
        z[k] = 10.0;
        z
    }

    #[test]
    fn recalls_by_hand() {
        // Class 0: 3 clips, 2 right; class 4: 1 clip, right; class 2: 1 clip, called 4.
        let labels = [0, 0, 0, 4, 2];
        let logits = [one_hot(0), one_hot(0), one_hot(1), one_hot(4), one_hot(4)];
        let m = compute(&labels, &logits, &MAP).expect("metrics");
        assert_eq!(m.war, 60.0);
        assert_eq!(
            m.per_class_recall,
            [Some(200.0 / 3.0), None, Some(0.0), None, Some(100.0)]
        );
        assert!((m.uar - (200.0 / 3.0 + 0.0 + 100.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.support, [3, 0, 1, 0, 1]);
        assert_eq!(m.confusion[0], [2, 1, 0, 0, 0]);
        assert_eq!(m.confusion[2][4], 1);
        assert_eq!(m.per_class_precision[4], Some(50.0));
        assert_eq!(m.per_class_precision[3], None);
        // Coarse: engaged clips 0,0,0,2 -> predicted E,E,E,D; distracted 4 -> D.
        assert_eq!(m.coarse.confusion, [[3, 1], [0, 1]]);
        assert_eq!(m.coarse.war, 80.0);
        assert_eq!(m.coarse.recall, [Some(75.0), Some(100.0)]);
        assert_eq!(m.coarse.uar, 87.5);
        assert_eq!(m.coarse.distracted_precision, Some(50.0));
        assert!((m.coarse.distracted_f1.unwrap() - 2.0 * 50.0 * 100.0 / 150.0).abs() < 1e-12);
    }

    #[test]
    fn nll_and_ece_of_uniform_logits() {
        let labels = [0, 1, 2, 3];
        let logits = [[0.0f32; 5]; 4];
        let m = compute(&labels, &logits, &MAP).expect("metrics");
        assert!((m.nll - 5f64.ln()).abs() < 1e-12);
        // Confidence 0.2 everywhere (bin 3 of 15), always predicted class 0: accuracy 1/4.
        assert_eq!(m.reliability[3].clips, 4);
        assert!((m.ece - (0.25f64 - 0.2).abs()).abs() < 1e-12);
        assert_eq!(m.reliability.iter().map(|b| b.clips).sum::<u64>(), 4);
    }

    #[test]
    fn confident_and_right_is_calibrated() {
        let labels = [0, 1, 2, 3, 4];
        let logits: Vec<[f32; 5]> = labels
            .iter()
            .map(|&k| one_hot(k).map(|v| v * 10.0))
            .collect();
        let m = compute(&labels, &logits, &MAP).expect("metrics");
        assert!(m.nll < 1e-20 && m.ece < 1e-20);
        assert_eq!((m.uar, m.war), (100.0, 100.0));
        assert!(compute(&[], &[], &MAP).is_none());
    }
}

//! Fitting a temperature and per-class logit offsets: `calibrated = logits / T + b`.
//!
//! Both objectives are convex in `(β, b)` with `β = 1/T` (a log-sum-exp of affine functions
//! minus an affine function), so a damped Newton method on those six numbers finds the
//! optimum in a few iterations, with a backtracking line search for safety:
//!
//! 1. **Temperature** (and, unless offsets are off, offsets): minimise the mean negative
//!    log-likelihood (NLL) of the true class over `β` and `b` jointly. Fitting the offsets
//!    together keeps a bias in the logits from distorting `T`. This stage makes the
//!    probabilities honest.
//! 2. **Balanced offsets** ([`OffsetMode::Balanced`], the default): keep `T` and refit `b` on
//!    the class-balanced NLL (each class weighs the same in total, whatever its clip count).
//!    Its optimum divides the probabilities by the class priors of the fit split, i.e. it
//!    moves the decisions to what maximises the expected UAR, the headline metric on
//!    RAER's imbalanced classes, at some cost in WAR and NLL.
//!
//! Bounds: `T` stays in `[0.01, 100]` (separable data would push it to 0); a small ridge
//! (`1e-4 * |b|^2 / 2`) keeps the offsets bounded and zero-mean (softmax ignores a common
//! shift); classes without clips in the fit split keep offset 0 (their optimum is at minus
//! infinity).

use caer::pipeline::model::bundle::NUM_CLASSES;

use crate::error::FitError;
use crate::metrics::softmax64;

/// How the class offsets are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetMode {
    /// No offsets: temperature only.
    None,
    /// Offsets minimising the plain NLL, fitted with the temperature (bias correction).
    Nll,
    /// Then refitted on the class-balanced NLL (raises UAR on imbalanced classes).
    #[default]
    Balanced,
}

impl OffsetMode {
    /// The name used on the command line and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            OffsetMode::None => "none",
            OffsetMode::Nll => "nll",
            OffsetMode::Balanced => "balanced",
        }
    }
}

/// Smallest and largest `1/T`.
const BETA_RANGE: (f64, f64) = (0.01, 100.0);
/// Ridge on the offsets.
const RIDGE: f64 = 1e-4;
const MAX_ITERATIONS: usize = 200;

/// The fitted parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FitResult {
    /// `T`.
    pub temperature: f64,
    /// `b`, in class order.
    pub offsets: [f64; NUM_CLASSES],
    /// Classes without clips in the fit split (offset left at 0).
    pub absent_classes: Vec<usize>,
    /// Whether `T` ended on a bound of `[0.01, 100]`.
    pub temperature_at_bound: bool,
    /// Newton iterations, both stages.
    pub iterations: usize,
}

// Parameters: p[0] = β, p[1 + k] = b_k.
const P: usize = 1 + NUM_CLASSES;

struct Objective<'a> {
    labels: &'a [usize],
    logits: &'a [[f64; NUM_CLASSES]],
    /// Per clip, summing to 1.
    weights: Vec<f64>,
}

impl Objective<'_> {
    /// Value, gradient and Hessian at `p`.
    fn eval(&self, p: &[f64; P]) -> (f64, [f64; P], [[f64; P]; P]) {
        let mut f = 0.0;
        let mut g = [0.0; P];
        let mut h = [[0.0; P]; P];
        let beta = p[0];
        for ((&y, z), &w) in self.labels.iter().zip(self.logits).zip(&self.weights) {
            let s: [f64; NUM_CLASSES] = std::array::from_fn(|k| beta * z[k] + p[1 + k]);
            let q = softmax64(&s);
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            f += w * (lse - s[y]);
            // a_k = ∂s_k/∂p = (z_k, e_k); gradient E_q[a] - a_y; Hessian Cov_q[a].
            let mean_z: f64 = (0..NUM_CLASSES).map(|k| q[k] * z[k]).sum();
            let mean_zz: f64 = (0..NUM_CLASSES).map(|k| q[k] * z[k] * z[k]).sum();
            g[0] += w * (mean_z - z[y]);
            h[0][0] += w * (mean_zz - mean_z * mean_z);
            for k in 0..NUM_CLASSES {
                g[1 + k] += w * (q[k] - f64::from(u8::from(k == y)));
                let cross = w * (q[k] * z[k] - q[k] * mean_z);
                h[0][1 + k] += cross;
                h[1 + k][0] += cross;
                for j in 0..NUM_CLASSES {
                    let delta = if j == k { q[k] } else { 0.0 };
                    h[1 + k][1 + j] += w * (delta - q[k] * q[j]);
                }
            }
        }
        for k in 0..NUM_CLASSES {
            f += 0.5 * RIDGE * p[1 + k] * p[1 + k];
            g[1 + k] += RIDGE * p[1 + k];
            h[1 + k][1 + k] += RIDGE;
        }
        (f, g, h)
    }

    fn value(&self, p: &[f64; P]) -> f64 {
        self.eval(p).0
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` (Cholesky); `None` if it is not.
fn cholesky_solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - sum;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - sum) / l[j][j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

/// Damped Newton over the `free` parameters of `p`, `β` kept in range.
fn minimize(
    obj: &Objective<'_>,
    mut p: [f64; P],
    free: &[usize],
) -> Result<([f64; P], usize), FitError> {
    let mut iterations = 0;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let (f, g, h) = obj.eval(&p);
        if !f.is_finite() {
            return Err(FitError::Diverged { what: "objective" });
        }
        let g_free: Vec<f64> = free.iter().map(|&i| g[i]).collect();
        if g_free.iter().all(|v| v.abs() < 1e-12) {
            break;
        }
        // Newton direction, with Levenberg damping until the system is positive definite.
        let mut damping = 0.0;
        let direction = loop {
            let a: Vec<Vec<f64>> = free
                .iter()
                .map(|&i| {
                    free.iter()
                        .map(|&j| h[i][j] + if i == j { damping } else { 0.0 })
                        .collect()
                })
                .collect();
            let minus_g: Vec<f64> = g_free.iter().map(|v| -v).collect();
            if let Some(d) = cholesky_solve(&a, &minus_g) {
                break d;
            }
            damping = if damping == 0.0 { 1e-9 } else { damping * 10.0 };
            if damping > 1e6 {
                return Err(FitError::Diverged { what: "Hessian" });
            }
        };
        // Backtracking (Armijo) on the actual, range-clamped step.
        let mut t = 1.0;
        let accepted = loop {
            let mut q = p;
            for (&i, d) in free.iter().zip(&direction) {
                q[i] += t * d;
            }
            q[0] = q[0].clamp(BETA_RANGE.0, BETA_RANGE.1);
            let decrease: f64 = (0..P).map(|i| g[i] * (q[i] - p[i])).sum();
            let fq = obj.value(&q);
            if fq.is_finite() && fq <= f + 1e-4 * decrease {
                break Some(q);
            }
            t *= 0.5;
            if t < 1e-10 {
                break None;
            }
        };
        let Some(q) = accepted else { break };
        let moved = (0..P).map(|i| (q[i] - p[i]).abs()).fold(0.0, f64::max);
        p = q;
        if moved < 1e-13 {
            break;
        }
    }
    if p.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Diverged { what: "parameters" });
    }
    Ok((p, iterations))
}

/// Fits `T` and the offsets to `labels` (class indices) and raw `logits` (see the module
/// docs).
pub fn fit(
    labels: &[usize],
    logits: &[[f64; NUM_CLASSES]],
    mode: OffsetMode,
) -> Result<FitResult, FitError> {
    if labels.is_empty() {
        return Err(FitError::Empty { split: "fit" });
    }
    let mut support = [0usize; NUM_CLASSES];
    for &y in labels {
        support[y] += 1;
    }
    let present: Vec<usize> = (0..NUM_CLASSES).filter(|&k| support[k] > 0).collect();
    let absent_classes: Vec<usize> = (0..NUM_CLASSES).filter(|&k| support[k] == 0).collect();
    let n = labels.len() as f64;

    let plain = Objective {
        labels,
        logits,
        weights: vec![1.0 / n; labels.len()],
    };
    let mut free = vec![0];
    if mode != OffsetMode::None {
        free.extend(present.iter().map(|&k| 1 + k));
    }
    let mut start = [0.0; P];
    start[0] = 1.0;
    let (mut p, mut iterations) = minimize(&plain, start, &free)?;

    if mode == OffsetMode::Balanced {
        let weights = labels
            .iter()
            .map(|&y| 1.0 / (present.len() as f64 * support[y] as f64))
            .collect();
        let balanced = Objective {
            labels,
            logits,
            weights,
        };
        let offsets: Vec<usize> = present.iter().map(|&k| 1 + k).collect();
        let (q, more) = minimize(&balanced, p, &offsets)?;
        p = q;
        iterations += more;
    }
    let beta = p[0];
    Ok(FitResult {
        temperature: 1.0 / beta,
        offsets: std::array::from_fn(|k| p[1 + k]),
        absent_classes,
        temperature_at_bound: beta <= BETA_RANGE.0 || beta >= BETA_RANGE.1,
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{mean_nll, uar_war};

    /// SplitMix64, for reproducible synthetic data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.next_f64().max(1e-300), self.next_f64());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }

        fn categorical(&mut self, p: &[f64; NUM_CLASSES]) -> usize {
            let mut r = self.next_f64();
            for (k, &pk) in p.iter().enumerate() {
                if r < pk {
                    return k;
                }
                r -= pk;
            }
            NUM_CLASSES - 1
        }
    }

    /// Clips whose labels are drawn from `softmax(u + prior_shift)`, with `u` standard normal
    /// times `spread`; returns the labels and `u`.
    fn draw(
        rng: &mut Rng,
        n: usize,
        spread: f64,
        prior_shift: [f64; 5],
    ) -> (Vec<usize>, Vec<[f64; 5]>) {
        let mut labels = Vec::new();
        let mut logits = Vec::new();
        for _ in 0..n {
            let u: [f64; 5] = std::array::from_fn(|k| spread * rng.normal() + prior_shift[k]);
            labels.push(rng.categorical(&softmax64(&u)));
            logits.push(u);
        }
        (labels, logits)
    }

    fn apply(logits: &[[f64; 5]], fit: &FitResult) -> Vec<[f64; 5]> {
        logits
            .iter()
            .map(|z| std::array::from_fn(|k| z[k] / fit.temperature + fit.offsets[k]))
            .collect()
    }

    fn predictions(logits: &[[f64; 5]]) -> Vec<usize> {
        logits
            .iter()
            .map(|z| (0..5).fold(0, |best, k| if z[k] > z[best] { k } else { best }))
            .collect()
    }

    #[test]
    fn scaled_and_shifted_logits_give_back_the_scale_and_shift() {
        let mut rng = Rng(7);
        let (labels, true_logits) = draw(&mut rng, 4000, 1.5, [0.0; 5]);
        let shift = [1.0, -0.5, 0.0, 0.8, -1.2];
        let given: Vec<[f64; 5]> = true_logits
            .iter()
            .map(|u| std::array::from_fn(|k| 5.0 * (u[k] + shift[k])))
            .collect();
        let fit = fit(&labels, &given, OffsetMode::Nll).expect("fit");
        assert!(
            (fit.temperature - 5.0).abs() < 0.3,
            "T = {}",
            fit.temperature
        );
        let mean_shift = shift.iter().sum::<f64>() / 5.0;
        for (offset, s) in fit.offsets.iter().zip(shift) {
            let expected = -(s - mean_shift);
            assert!((offset - expected).abs() < 0.2, "b = {:?}", fit.offsets);
        }
        assert!(mean_nll(&labels, &apply(&given, &fit)) < mean_nll(&labels, &given));
        assert!(!fit.temperature_at_bound && fit.absent_classes.is_empty());
    }

    #[test]
    fn temperature_only_fits_a_pure_scale() {
        let mut rng = Rng(11);
        let (labels, true_logits) = draw(&mut rng, 3000, 2.0, [0.0; 5]);
        let given: Vec<[f64; 5]> = true_logits.iter().map(|u| u.map(|v| v * 0.25)).collect();
        let fit = fit(&labels, &given, OffsetMode::None).expect("fit");
        assert!(
            (fit.temperature - 0.25).abs() < 0.02,
            "T = {}",
            fit.temperature
        );
        assert_eq!(fit.offsets, [0.0; 5]);
    }

    #[test]
    fn balanced_offsets_undo_the_priors_and_raise_uar() {
        let priors: [f64; 5] = [0.65, 0.06, 0.02, 0.07, 0.20];
        let log_prior = priors.map(f64::ln);
        let mut rng = Rng(3);
        let (labels, logits) = draw(&mut rng, 6000, 1.5, log_prior);
        let (held_labels, held_logits) = draw(&mut rng, 6000, 1.5, log_prior);
        let plain = fit(&labels, &logits, OffsetMode::Nll).expect("fit");
        let balanced = fit(&labels, &logits, OffsetMode::Balanced).expect("fit");
        // Calibrated already: T near 1 and near-equal plain offsets.
        assert!(
            (plain.temperature - 1.0).abs() < 0.1,
            "T = {}",
            plain.temperature
        );
        // Balanced offsets divide by the class frequencies: they differ by minus the log
        // frequency ratios.
        let mut freq = [0f64; 5];
        labels.iter().for_each(|&y| freq[y] += 1.0);
        for k in 1..5 {
            let got = balanced.offsets[k] - balanced.offsets[0];
            let expected = -(freq[k].ln() - freq[0].ln());
            assert!(
                (got - expected).abs() < 0.5,
                "class {k}: {got} vs {expected}"
            );
        }
        let (uar_before, _) = uar_war(&held_labels, &predictions(&held_logits));
        let (uar_after, _) = uar_war(&held_labels, &predictions(&apply(&held_logits, &balanced)));
        assert!(
            uar_after > uar_before + 5.0,
            "UAR {uar_before} -> {uar_after}"
        );
    }

    #[test]
    fn absent_classes_keep_a_zero_offset_and_separable_data_gets_a_tiny_temperature() {
        let labels = [0, 0, 1, 1];
        let logits = [
            [5.0, 0.0, 0.0, 0.0, 0.0],
            [4.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 6.0, 0.0, 0.0, 0.0],
            [1.0, 3.0, 0.0, 0.0, 0.0],
        ];
        let fit = fit(&labels, &logits, OffsetMode::Balanced).expect("fit");
        assert_eq!(fit.absent_classes, [2, 3, 4]);
        assert_eq!(&fit.offsets[2..], &[0.0; 3]);
        // Separable: the NLL falls towards 0 as T does, until the gradient vanishes.
        assert!(fit.temperature < 0.1, "T = {}", fit.temperature);
        assert_eq!(
            super::fit(&[], &[], OffsetMode::Nll),
            Err(FitError::Empty { split: "fit" })
        );
    }
}

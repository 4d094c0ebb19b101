//! Classroom-level aggregation with the privacy policy applied: the only place where
//! per-student results are turned into something that may leave the device.
//!
//! An [`Aggregator`] is a task-style transform: it holds one tally per track for the
//! current report interval (in memory only) and [`Aggregator::finish`] turns them into one
//! [`Aggregate`] per interval and forgets them. Per student it keeps the number of samples
//! and the sum of the class probabilities of its full-window results, never pixels or
//! features. Per interval:
//!
//! - a **student** is a track with at least one full-window result in the interval (with the
//!   `presence` profile, which runs no model: a track sampled at least
//!   [`PRESENCE_MIN_SAMPLES`] times, a window's worth);
//! - each student gets one class: the argmax of the mean of its results' probabilities, and
//!   the coarse label of that class (distraction: distracted; the others: engaged);
//! - published figures: students, tracks seen, per-class counts and mean probabilities
//!   (`fine` only), engaged/distracted counts and ratios (`fine`, `coarse`), and a
//!   confidence figure: the mean, over students, of the probability of the label they
//!   were given.
//!
//! **k-anonymity**: an interval with fewer than `min_group_size` students yields
//! [`Aggregate::Suppressed`], which carries no figure at all (not even the count).
//!
//! Bounds: at most `max_tallies` tracks are tallied per interval; further tracks are counted
//! in [`Aggregator::untallied_total`] and otherwise ignored.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::pipeline::model::bundle::{CoarseLabel, CLASSES, NUM_CLASSES};
use crate::pipeline::model::classify::coarse_label;
use crate::pipeline::settings::Issues;

/// Schema id of engagement payloads.
pub const ENGAGEMENT_SCHEMA: &str = "caer.engagement.v1";

/// Samples a track needs in an interval to count as a student under `presence`.
pub const PRESENCE_MIN_SAMPLES: u32 = 16;

/// Privacy profile: what is inferred and what the published aggregates may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Counts and mean probabilities of the five classes, plus the engaged/distracted split.
    Fine,
    /// Engaged/distracted only: the affect model still runs on every face on the device, but
    /// the five classes never leave the inference thread.
    #[default]
    Coarse,
    /// Student count only; no affect model is loaded or run.
    Presence,
}

impl Profile {
    /// The name used in config and payloads.
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Fine => "fine",
            Profile::Coarse => "coarse",
            Profile::Presence => "presence",
        }
    }

    /// Whether the affect model runs under this profile.
    pub const fn runs_model(self) -> bool {
        !matches!(self, Profile::Presence)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may leave the device: the `[policy]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The privacy profile: `fine`, `coarse` or `presence`.
    pub profile: Profile,
    /// Smallest number of students an interval needs for its figures to be published
    /// (k-anonymity), 2 to 1000; with fewer, a suppressed record is published instead.
    pub min_group_size: NonZeroU32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            profile: Profile::default(),
            min_group_size: NonZeroU32::new(5).expect("5 is not zero"),
        }
    }
}

impl PolicyConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        let k = self.min_group_size.get();
        if k < 2 {
            v.push(
                "min_group_size",
                "is 1; at least 2 (one student's figures would be that student's own)",
            );
        } else {
            v.at_most("min_group_size", k, 1000);
        }
    }
}

/// Settings of an [`Aggregator`].
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatorSettings {
    /// The privacy profile.
    pub profile: Profile,
    /// Fewest students for figures to be published (at least 1; the config enforces 2).
    pub min_group_size: u32,
    /// Coarse label of each class (from the bundle).
    pub coarse: [CoarseLabel; NUM_CLASSES],
    /// Most tracks tallied per interval.
    pub max_tallies: usize,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    samples: u32,
    results: u32,
    probability_sum: [f64; NUM_CLASSES],
}

/// Per-interval tallies of the tracks seen (see the module docs).
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregatorSettings,
    tallies: HashMap<u64, Tally>,
    untallied_total: u64,
}

/// Why an interval's figures were withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Fewer students than `policy.min_group_size`.
    BelowMinGroupSize,
}

/// Per-class figures (`fine` profile only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// Students per class (each student in exactly one class), keyed by class name.
    pub counts: BTreeMap<&'static str, u32>,
    /// Mean probability of each class over the students, keyed by class name.
    pub mean_probabilities: BTreeMap<&'static str, f64>,
}

/// Engaged / distracted figures (`fine` and `coarse`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngagementFigures {
    /// Students labelled engaged.
    pub engaged: u32,
    /// Students labelled distracted.
    pub distracted: u32,
    /// `engaged / students`.
    pub engaged_ratio: f64,
    /// `distracted / students`.
    pub distracted_ratio: f64,
    /// Mean over students of P(engaged) (the sum of the engaged classes' probabilities).
    pub mean_engaged_probability: f64,
    /// Mean over students of the probability of the label each was given (fine: its
    /// class; coarse: engaged or distracted), in [0, 1].
    pub confidence: f64,
}

/// The published figures of one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Students counted (see the module docs).
    pub students: u32,
    /// Distinct tracks seen in the interval, students or not.
    pub tracks_seen: u32,
    /// Engaged / distracted figures; absent under `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement: Option<EngagementFigures>,
    /// Five-class figures; `fine` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassFigures>,
}

/// The outcome of one interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// Enough students: the figures may be published.
    Published(Figures),
    /// Too few students: nothing but the reason may be published.
    Suppressed(SuppressionReason),
}

/// Rounds to 4 decimals: enough for dashboards, and no false precision in the payload.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl Aggregator {
    /// An aggregator with an empty interval.
    pub fn new(settings: AggregatorSettings) -> Self {
        let capacity = settings.max_tallies.min(1024);
        Aggregator {
            settings,
            tallies: HashMap::with_capacity(capacity),
            untallied_total: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AggregatorSettings {
        &self.settings
    }

    /// Tracks not tallied because `max_tallies` were already held, since creation.
    pub fn untallied_total(&self) -> u64 {
        self.untallied_total
    }

    fn tally(&mut self, track_id: u64) -> Option<&mut Tally> {
        if !self.tallies.contains_key(&track_id) && self.tallies.len() >= self.settings.max_tallies
        {
            self.untallied_total += 1;
            return None;
        }
        Some(self.tallies.entry(track_id).or_default())
    }

    /// Records that `track_id` was seen in a frame (sampled or not).
    pub fn observe_seen(&mut self, track_id: u64) {
        let _ = self.tally(track_id);
    }

    /// Records that a sample of `track_id` went to the classifier.
    pub fn observe_sample(&mut self, track_id: u64) {
        if let Some(t) = self.tally(track_id) {
            t.samples = t.samples.saturating_add(1);
        }
    }

    /// Records a full-window result of `track_id`.
    pub fn observe_result(&mut self, track_id: u64, probabilities: &[f32; NUM_CLASSES]) {
        if let Some(t) = self.tally(track_id) {
            t.results = t.results.saturating_add(1);
            for (sum, p) in t.probability_sum.iter_mut().zip(probabilities) {
                *sum += f64::from(*p);
            }
        }
    }

    /// Closes the interval: its aggregate under the policy. Every tally is forgotten.
    pub fn finish(&mut self) -> Aggregate {
        let profile = self.settings.profile;
        let tracks_seen = u32::try_from(self.tallies.len()).unwrap_or(u32::MAX);
        // Each student's mean probabilities (model profiles) or nothing (presence).
        let mut students: Vec<[f64; NUM_CLASSES]> = Vec::with_capacity(self.tallies.len());
        let mut present = 0u32;
        for tally in self.tallies.values() {
            if profile.runs_model() {
                if tally.results > 0 {
                    let n = f64::from(tally.results);
                    students.push(tally.probability_sum.map(|s| s / n));
                }
            } else if tally.samples >= PRESENCE_MIN_SAMPLES {
                present += 1;
            }
        }
        self.tallies.clear();
        let count = if profile.runs_model() {
            u32::try_from(students.len()).unwrap_or(u32::MAX)
        } else {
            present
        };
        if count < self.settings.min_group_size {
            return Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize);
        }
        if !profile.runs_model() {
            return Aggregate::Published(Figures {
                students: count,
                tracks_seen,
                engagement: None,
                classes: None,
            });
        }

        let coarse = &self.settings.coarse;
        let n = f64::from(count);
        let mut class_counts = [0u32; NUM_CLASSES];
        let mut class_prob_sum = [0f64; NUM_CLASSES];
        let (mut engaged, mut engaged_prob_sum, mut fine_conf, mut coarse_conf) =
            (0u32, 0f64, 0f64, 0f64);
        for mean in &students {
            let scores = mean.map(|p| p as f32);
            let class = crate::pipeline::model::classify::argmax(&scores).unwrap_or(0);
            class_counts[class] += 1;
            for (sum, p) in class_prob_sum.iter_mut().zip(mean) {
                *sum += p;
            }
            let p_engaged: f64 = mean
                .iter()
                .zip(coarse)
                .filter(|(_, c)| **c == CoarseLabel::Engaged)
                .map(|(p, _)| p)
                .sum();
            engaged_prob_sum += p_engaged;
            fine_conf += mean[class];
            if coarse_label(&scores, coarse) == CoarseLabel::Engaged {
                engaged += 1;
                coarse_conf += p_engaged;
            } else {
                coarse_conf += 1.0 - p_engaged;
            }
        }
        let distracted = count - engaged;
        let confidence = if profile == Profile::Fine {
            fine_conf
        } else {
            coarse_conf
        } / n;
        let engagement = EngagementFigures {
            engaged,
            distracted,
            engaged_ratio: round4(f64::from(engaged) / n),
            distracted_ratio: round4(f64::from(distracted) / n),
            mean_engaged_probability: round4(engaged_prob_sum / n),
            confidence: round4(confidence),
        };
        let classes = (profile == Profile::Fine).then(|| ClassFigures {
            counts: CLASSES.iter().copied().zip(class_counts).collect(),
            mean_probabilities: CLASSES
                .iter()
                .copied()
                .zip(class_prob_sum.map(|s| round4(s / n)))
                .collect(),
        });
        Aggregate::Published(Figures {
            students: count,
            tracks_seen,
            engagement: Some(engagement),
            classes,
        })
    }
}

/// Who and what an engagement record is about (everything but the figures).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordContext<'a> {
    /// `device.site`.
    pub site: &'a str,
    /// `device.room`.
    pub room: &'a str,
    /// `device.id`.
    pub device: &'a str,
    /// The privacy profile in force.
    pub profile: Profile,
    /// `policy.min_group_size` in force.
    pub min_group_size: u32,
    /// The bundle's `model_id`; none under `presence`.
    pub model_id: Option<&'a str>,
}

/// The JSON payload of one interval on `engagement` (schema `caer.engagement.v1`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngagementRecord<'a> {
    /// Always [`ENGAGEMENT_SCHEMA`].
    pub schema: &'static str,
    /// Per-device sequence number from the outbox: increases by one per record and
    /// survives restarts; consumers drop duplicates by it.
    pub seq: u64,
    /// `device.site`.
    pub site: &'a str,
    /// `device.room`.
    pub room: &'a str,
    /// `device.id`.
    pub device: &'a str,
    /// Start of the interval, RFC 3339 UTC.
    pub interval_start: String,
    /// End of the interval, RFC 3339 UTC.
    pub interval_end: String,
    /// Privacy profile of the figures.
    pub profile: Profile,
    /// `policy.min_group_size` applied.
    pub min_group_size: u32,
    /// Model that produced the figures; absent under `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<&'a str>,
    /// Whether the figures were withheld.
    pub suppressed: bool,
    /// Why, when suppressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression_reason: Option<SuppressionReason>,
    /// The figures, when not suppressed.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl<'a> EngagementRecord<'a> {
    /// The record of `aggregate` for the interval `[start, end)`, numbered `seq`.
    pub fn new(
        context: &RecordContext<'a>,
        seq: u64,
        start: SystemTime,
        end: SystemTime,
        aggregate: Aggregate,
    ) -> Self {
        let (suppressed, suppression_reason, figures) = match aggregate {
            Aggregate::Published(f) => (false, None, Some(f)),
            Aggregate::Suppressed(reason) => (true, Some(reason), None),
        };
        EngagementRecord {
            schema: ENGAGEMENT_SCHEMA,
            seq,
            site: context.site,
            room: context.room,
            device: context.device,
            interval_start: rfc3339(start),
            interval_end: rfc3339(end),
            profile: context.profile,
            min_group_size: context.min_group_size,
            model_id: context.model_id,
            suppressed,
            suppression_reason,
            figures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COARSE: [CoarseLabel; 5] = [
        CoarseLabel::Engaged,
        CoarseLabel::Engaged,
        CoarseLabel::Engaged,
        CoarseLabel::Engaged,
        CoarseLabel::Distracted,
    ];

    fn aggregator(profile: Profile, k: u32) -> Aggregator {
        Aggregator::new(AggregatorSettings {
            profile,
            min_group_size: k,
            coarse: COARSE,
            max_tallies: 100,
        })
    }

    fn one_hot(class: usize, p: f32) -> [f32; 5] {
        let mut probs = [(1.0 - p) / 4.0; 5];
        probs[class] = p;
        probs
    }

    fn published(a: Aggregate) -> Figures {
        match a {
            Aggregate::Published(f) => f,
            Aggregate::Suppressed(r) => panic!("suppressed: {r:?}"),
        }
    }

    #[test]
    fn fine_profile_counts_each_student_once_by_mean_probabilities() {
        let mut a = aggregator(Profile::Fine, 2);
        // Track 1: two results, neutrality then enjoyment at 0.6 vs 0.9 -> mean favours enjoyment.
        a.observe_result(1, &one_hot(0, 0.6));
        a.observe_result(1, &one_hot(1, 0.9));
        a.observe_result(2, &one_hot(4, 0.8));
        a.observe_result(3, &one_hot(2, 0.7));
        a.observe_seen(4); // seen, never a full window: not a student
        let f = published(a.finish());
        assert_eq!((f.students, f.tracks_seen), (3, 4));
        let classes = f.classes.unwrap();
        assert_eq!(classes.counts["enjoyment"], 1);
        assert_eq!(classes.counts["neutrality"], 0);
        assert_eq!(classes.counts["distraction"], 1);
        assert_eq!(classes.counts["confusion"], 1);
        assert_eq!(classes.counts.values().sum::<u32>(), 3);
        let sum: f64 = classes.mean_probabilities.values().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        let e = f.engagement.unwrap();
        assert_eq!((e.engaged, e.distracted), (2, 1));
        assert_eq!(e.engaged_ratio, 0.6667);
        // Confidence: mean of each student's top mean probability.
        let track1_top = (0.1 + 0.9) / 2.0; // enjoyment: 0.1 in the first result, 0.9 in the second
        let expected = (track1_top + 0.8 + 0.7) / 3.0;
        assert!(
            (e.confidence - expected).abs() < 1e-3,
            "{} vs {expected}",
            e.confidence
        );
    }

    #[test]
    fn coarse_profile_publishes_no_classes() {
        let mut a = aggregator(Profile::Coarse, 2);
        a.observe_result(1, &one_hot(4, 0.9));
        a.observe_result(2, &one_hot(3, 0.5));
        let f = published(a.finish());
        assert!(f.classes.is_none());
        let e = f.engagement.clone().unwrap();
        assert_eq!((e.engaged, e.distracted), (1, 1));
        // Distracted student: P(distracted) 0.9; engaged student: P(engaged) = 1 - 0.125.
        assert!((e.confidence - (0.9 + 0.875) / 2.0).abs() < 1e-3);
        let json = serde_json::to_value(&f).unwrap();
        assert!(json.get("classes").is_none());
    }

    #[test]
    fn fewer_than_k_students_suppresses_everything_and_resets() {
        let mut a = aggregator(Profile::Fine, 3);
        a.observe_result(1, &one_hot(0, 0.9));
        a.observe_result(2, &one_hot(0, 0.9));
        for id in 3..10 {
            a.observe_seen(id);
        }
        assert_eq!(
            a.finish(),
            Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize)
        );
        // The next interval starts empty.
        assert_eq!(
            a.finish(),
            Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize)
        );
        for id in 0..3 {
            a.observe_result(id, &one_hot(1, 0.9));
        }
        assert_eq!(published(a.finish()).students, 3);
    }

    #[test]
    fn presence_counts_tracks_with_a_window_of_samples() {
        let mut a = aggregator(Profile::Presence, 2);
        for id in 0..3 {
            for _ in 0..PRESENCE_MIN_SAMPLES {
                a.observe_sample(id);
            }
        }
        a.observe_sample(9);
        let f = published(a.finish());
        assert_eq!((f.students, f.tracks_seen), (3, 4));
        assert!(f.engagement.is_none() && f.classes.is_none());
    }

    #[test]
    fn tallies_are_bounded() {
        let mut a = Aggregator::new(AggregatorSettings {
            profile: Profile::Fine,
            min_group_size: 2,
            coarse: COARSE,
            max_tallies: 3,
        });
        for id in 0..5 {
            a.observe_result(id, &one_hot(0, 0.9));
        }
        assert_eq!(a.untallied_total(), 2);
        assert_eq!(published(a.finish()).students, 3);
    }

    #[test]
    fn suppressed_record_carries_no_figures() {
        let context = RecordContext {
            site: "s",
            room: "r",
            device: "d",
            profile: Profile::Fine,
            min_group_size: 5,
            model_id: Some("m"),
        };
        let t = SystemTime::UNIX_EPOCH;
        let record = EngagementRecord::new(
            &context,
            7,
            t,
            t,
            Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize),
        );
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["seq"], 7);
        assert_eq!(json["suppressed"], true);
        assert_eq!(json["suppression_reason"], "below_min_group_size");
        for key in ["students", "tracks_seen", "engagement", "classes"] {
            assert!(json.get(key).is_none(), "{key} leaked: {json}");
        }
        assert_eq!(json["interval_start"], "1970-01-01T00:00:00.000Z");
    }
}

//! Classroom-level aggregation with the privacy policy applied: the only place where
//! per-student results are turned into something that may leave the device.
//!
//! An [`Aggregator`] is a task-style transform: per report interval it holds, in memory only,
//! one tally per track (its full-window results' summed probabilities and the analysed frames
//! it was visible in) and two small histograms of faces visible per analysed frame;
//! [`Aggregator::finish`] turns them into one [`Aggregate`] and forgets them. Never pixels,
//! features or a per-student figure leave it. What the published figures mean
//! (`docs/privacy.md` has the same list):
//!
//! - `students`: the headcount, the median over the interval's analysed frames of the
//!   confirmed faces visible at once. It does not depend on how many frames were analysed
//!   (a slow board analyses fewer frames of the same room), a returning student's new id is
//!   not counted twice, and a track that fragments (two ids in turn for one face) counts once
//!   in every frame.
//! - `assessed` (model profiles): the same median of the visible faces whose track has had a
//!   full window classified in this interval.
//! - Class and engaged/distracted figures are **time-weighted** over the assessed: a track's
//!   label (the argmax of its results' mean probabilities, and that class's coarse label)
//!   weighs as many analysed frames as it was visible in after its first result. The ratios
//!   are those weighted shares; the counts split `assessed` by them (largest remainder, so
//!   `engaged + distracted = assessed` and the class counts sum to it, each class inside its
//!   coarse group). `mean_probabilities`, `mean_engaged_probability` and `confidence` (the
//!   probability of the label given) are weighted means.
//! - `tracks_seen`: distinct anonymous ids seen (fragments and returns included);
//!   `frames_analysed` and `coverage` (analysed / captured in the interval) say how much of
//!   the interval the figures rest on, so a board that falls behind shows it.
//!
//! **k-anonymity**: an interval with fewer than `min_group_size` people behind its figures
//! (`assessed` under the model profiles, `students` under `presence`) yields
//! [`Aggregate::Suppressed`], which carries no figure at all (not even the count).
//!
//! Bounds: at most `max_tallies` tracks are tallied per interval; further tracks are counted
//! in [`Aggregator::untallied_total`] and otherwise ignored; the histograms have at most one
//! entry per face count up to [`crate::pipeline::track::MAX_TRACKS`].

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::pipeline::model::bundle::{CoarseLabel, CLASSES, NUM_CLASSES};
use crate::pipeline::model::classify::argmax;
use crate::pipeline::settings::Issues;

/// Schema id of engagement payloads.
pub const ENGAGEMENT_SCHEMA: &str = "caer.engagement.v2";

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
    /// The headcount only; no affect model is loaded or run.
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
    /// Fewest people an interval's figures may rest on (the assessed; the headcount under
    /// `presence`), 2 to 1000 (k-anonymity); with fewer, a suppressed record is published.
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
    /// Fewest people behind published figures (at least 1; the config enforces 2).
    pub min_group_size: u32,
    /// Coarse label of each class (from the bundle).
    pub coarse: [CoarseLabel; NUM_CLASSES],
    /// Most tracks tallied per interval.
    pub max_tallies: usize,
}

#[derive(Debug, Clone, Default)]
struct Tally {
    results: u32,
    probability_sum: [f64; NUM_CLASSES],
    /// Analysed frames the track was visible in after its first result of the interval.
    assessed_frames: u32,
}

/// Analysed frames by the number of faces in them: the median without keeping a list.
#[derive(Debug, Clone, Default)]
struct Histogram(Vec<u32>);

impl Histogram {
    fn add(&mut self, count: usize) {
        let count = count.min(crate::pipeline::track::MAX_TRACKS);
        if self.0.len() <= count {
            self.0.resize(count + 1, 0);
        }
        self.0[count] = self.0[count].saturating_add(1);
    }

    fn frames(&self) -> u64 {
        self.0.iter().map(|&n| u64::from(n)).sum()
    }

    /// The upper median (0 without frames).
    fn median(&self) -> u32 {
        let middle = self.frames() / 2;
        let mut below = 0u64;
        for (count, &frames) in self.0.iter().enumerate() {
            below += u64::from(frames);
            if below > middle {
                return u32::try_from(count).unwrap_or(u32::MAX);
            }
        }
        0
    }
}

/// Per-interval tallies of the tracks seen (see the module docs).
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregatorSettings,
    tallies: HashMap<u64, Tally>,
    visible: Histogram,
    assessed: Histogram,
    untallied_total: u64,
}

/// Why an interval's figures were withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Fewer people than `policy.min_group_size`.
    BelowMinGroupSize,
}

/// Per-class figures (`fine` profile only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// `assessed` split by the time-weighted class shares, keyed by class name.
    pub counts: BTreeMap<&'static str, u32>,
    /// Time-weighted share of each class among the assessed, keyed by class name.
    pub shares: BTreeMap<&'static str, f64>,
    /// Time-weighted mean probability of each class over the assessed, keyed by class name.
    pub mean_probabilities: BTreeMap<&'static str, f64>,
}

/// Engaged / distracted figures (`fine` and `coarse`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngagementFigures {
    /// `assessed` labelled engaged (`engaged_ratio` of it, rounded).
    pub engaged: u32,
    /// `assessed` labelled distracted; `engaged + distracted = assessed`.
    pub distracted: u32,
    /// Time-weighted share of the assessed labelled engaged.
    pub engaged_ratio: f64,
    /// Time-weighted share of the assessed labelled distracted.
    pub distracted_ratio: f64,
    /// Time-weighted mean of P(engaged) (the sum of the engaged classes' probabilities).
    pub mean_engaged_probability: f64,
    /// Time-weighted mean probability of the label each was given (fine: its class;
    /// coarse: engaged or distracted), in [0, 1].
    pub confidence: f64,
}

/// The published figures of one interval (see the module docs for their meaning).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Headcount: median of the confirmed faces visible at once.
    pub students: u32,
    /// Median of the visible faces with a classified window; absent under `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assessed: Option<u32>,
    /// Distinct anonymous ids seen in the interval.
    pub tracks_seen: u32,
    /// Frames the figures rest on.
    pub frames_analysed: u64,
    /// `frames_analysed` over the frames captured in the interval, at most 1; absent when
    /// there were neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
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
    /// Enough people: the figures may be published.
    Published(Figures),
    /// Too few: nothing but the reason may be published.
    Suppressed(SuppressionReason),
}

/// Rounds to 4 decimals: enough for dashboards, and no false precision in the payload.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Splits `total` by `shares` (non-negative) into whole numbers that sum to `total`: each
/// gets the floor of its part, then the largest remainders one more (ties: the first).
fn apportion(total: u32, shares: &[f64]) -> Vec<u32> {
    let sum: f64 = shares.iter().sum();
    if shares.is_empty() || sum <= 0.0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<f64> = shares.iter().map(|s| s / sum * f64::from(total)).collect();
    let mut counts: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let given: u32 = counts.iter().sum();
    for &i in order.iter().take(total.saturating_sub(given) as usize) {
        counts[i] += 1;
    }
    counts
}

impl Aggregator {
    /// An aggregator with an empty interval.
    pub fn new(settings: AggregatorSettings) -> Self {
        let capacity = settings.max_tallies.min(1024);
        Aggregator {
            settings,
            tallies: HashMap::with_capacity(capacity),
            visible: Histogram::default(),
            assessed: Histogram::default(),
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

    /// Records a full-window result of `track_id`.
    pub fn observe_result(&mut self, track_id: u64, probabilities: &[f32; NUM_CLASSES]) {
        if let Some(t) = self.tally(track_id) {
            t.results = t.results.saturating_add(1);
            for (sum, p) in t.probability_sum.iter_mut().zip(probabilities) {
                *sum += f64::from(*p);
            }
        }
    }

    /// Records one analysed frame and the confirmed tracks visible in it (after this
    /// frame's results were observed).
    pub fn observe_frame(&mut self, visible: impl IntoIterator<Item = u64>) {
        let (mut seen, mut assessed) = (0, 0);
        for id in visible {
            seen += 1;
            if let Some(t) = self.tally(id).filter(|t| t.results > 0) {
                t.assessed_frames = t.assessed_frames.saturating_add(1);
                assessed += 1;
            }
        }
        self.visible.add(seen);
        self.assessed.add(assessed);
    }

    /// Closes the interval, in which the source captured `frames_captured` frames: its
    /// aggregate under the policy. Every tally is forgotten.
    pub fn finish(&mut self, frames_captured: u64) -> Aggregate {
        let profile = self.settings.profile;
        let tallies = std::mem::take(&mut self.tallies);
        let visible = std::mem::take(&mut self.visible);
        let assessed_frames = std::mem::take(&mut self.assessed);
        let frames_analysed = visible.frames();
        let mut figures = Figures {
            students: visible.median(),
            assessed: None,
            tracks_seen: u32::try_from(tallies.len()).unwrap_or(u32::MAX),
            frames_analysed,
            // Frames captured late in the last interval may be analysed in this one.
            coverage: (frames_analysed.max(frames_captured) > 0).then(|| {
                round4(frames_analysed as f64 / frames_analysed.max(frames_captured) as f64)
            }),
            engagement: None,
            classes: None,
        };
        let people = if profile.runs_model() {
            assessed_frames.median()
        } else {
            figures.students
        };
        if people < self.settings.min_group_size {
            return Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize);
        }
        if profile.runs_model() {
            figures.assessed = Some(people);
            let (engagement, classes) = self.weighted_figures(&tallies, people);
            figures.engagement = Some(engagement);
            figures.classes = (profile == Profile::Fine).then_some(classes);
        }
        Aggregate::Published(figures)
    }

    /// The time-weighted class and engagement figures of `assessed` people.
    fn weighted_figures(
        &self,
        tallies: &HashMap<u64, Tally>,
        assessed: u32,
    ) -> (EngagementFigures, ClassFigures) {
        let coarse = &self.settings.coarse;
        let mut class_weight = [0f64; NUM_CLASSES];
        let mut prob_sum = [0f64; NUM_CLASSES];
        let (mut total, mut engaged_prob, mut fine_conf, mut coarse_conf) =
            (0f64, 0f64, 0f64, 0f64);
        for t in tallies
            .values()
            .filter(|t| t.results > 0 && t.assessed_frames > 0)
        {
            let w = f64::from(t.assessed_frames);
            let mean = t.probability_sum.map(|s| s / f64::from(t.results));
            let class = argmax(&mean.map(|p| p as f32)).unwrap_or(0);
            let p_engaged: f64 = (0..NUM_CLASSES)
                .filter(|&c| coarse[c] == CoarseLabel::Engaged)
                .map(|c| mean[c])
                .sum();
            total += w;
            class_weight[class] += w;
            for (sum, p) in prob_sum.iter_mut().zip(mean) {
                *sum += w * p;
            }
            engaged_prob += w * p_engaged;
            fine_conf += w * mean[class];
            coarse_conf += w * match coarse[class] {
                CoarseLabel::Engaged => p_engaged,
                CoarseLabel::Distracted => 1.0 - p_engaged,
            };
        }
        // `assessed >= min_group_size >= 1` means some frame held an assessed track.
        let total = total.max(f64::MIN_POSITIVE);
        let share = class_weight.map(|w| w / total);
        let in_group = |label: CoarseLabel| -> f64 {
            (0..NUM_CLASSES)
                .filter(|&c| coarse[c] == label)
                .map(|c| share[c])
                .sum()
        };
        let engaged_share = in_group(CoarseLabel::Engaged);
        let distracted_share = in_group(CoarseLabel::Distracted);
        let split = apportion(assessed, &[engaged_share, distracted_share]);
        // Class counts: each coarse group's count split by its classes' shares.
        let mut counts = [0u32; NUM_CLASSES];
        for (label, group_total) in [
            (CoarseLabel::Engaged, split[0]),
            (CoarseLabel::Distracted, split[1]),
        ] {
            let members: Vec<usize> = (0..NUM_CLASSES).filter(|&c| coarse[c] == label).collect();
            let parts = apportion(
                group_total,
                &members.iter().map(|&c| share[c]).collect::<Vec<_>>(),
            );
            for (&c, n) in members.iter().zip(parts) {
                counts[c] = n;
            }
        }
        let confidence = if self.settings.profile == Profile::Fine {
            fine_conf
        } else {
            coarse_conf
        } / total;
        let engagement = EngagementFigures {
            engaged: split[0],
            distracted: split[1],
            engaged_ratio: round4(engaged_share),
            distracted_ratio: round4(distracted_share),
            mean_engaged_probability: round4(engaged_prob / total),
            confidence: round4(confidence),
        };
        let per_class = |values: [f64; NUM_CLASSES]| -> BTreeMap<&'static str, f64> {
            CLASSES.iter().copied().zip(values.map(round4)).collect()
        };
        let classes = ClassFigures {
            counts: CLASSES.iter().copied().zip(counts).collect(),
            shares: per_class(share),
            mean_probabilities: per_class(prob_sum.map(|s| s / total)),
        };
        (engagement, classes)
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

/// The JSON payload of one interval on `engagement` (schema `caer.engagement.v2`).
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

    /// `frames` analysed frames in which every one of `ids` is visible.
    fn frames(a: &mut Aggregator, ids: &[u64], frames: usize) {
        for _ in 0..frames {
            a.observe_frame(ids.iter().copied());
        }
    }

    #[test]
    fn fine_profile_weighs_each_assessed_track_by_its_time_and_splits_the_headcount() {
        let mut a = aggregator(Profile::Fine, 2);
        // Track 1: neutrality at 0.6 then enjoyment at 0.9: the mean favours enjoyment.
        a.observe_result(1, &one_hot(0, 0.6));
        a.observe_result(1, &one_hot(1, 0.9));
        a.observe_result(2, &one_hot(4, 0.8));
        a.observe_result(3, &one_hot(2, 0.7));
        // 1, 2, 3 assessed and 4 (never a full window) visible in 10 frames.
        frames(&mut a, &[1, 2, 3, 4], 10);
        let f = published(a.finish(10));
        assert_eq!((f.students, f.assessed, f.tracks_seen), (4, Some(3), 4));
        assert_eq!((f.frames_analysed, f.coverage), (10, Some(1.0)));
        let classes = f.classes.unwrap();
        assert_eq!(classes.counts["enjoyment"], 1);
        assert_eq!(classes.counts["neutrality"], 0);
        assert_eq!(classes.counts["distraction"], 1);
        assert_eq!(classes.counts["confusion"], 1);
        assert_eq!(classes.counts.values().sum::<u32>(), 3);
        assert_eq!(classes.shares["enjoyment"], 0.3333);
        let sum: f64 = classes.mean_probabilities.values().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        let e = f.engagement.unwrap();
        assert_eq!((e.engaged, e.distracted), (2, 1));
        assert_eq!(e.engaged_ratio, 0.6667);
        // Confidence: the (equally weighted) mean of each track's top mean probability.
        let track1_top = (0.1 + 0.9) / 2.0; // enjoyment: 0.1 in the first result, 0.9 in the second
        let expected = (track1_top + 0.8 + 0.7) / 3.0;
        assert!(
            (e.confidence - expected).abs() < 1e-3,
            "{} vs {expected}",
            e.confidence
        );
    }

    #[test]
    fn a_fragmented_track_counts_once_and_weighs_its_time() {
        let mut a = aggregator(Profile::Coarse, 2);
        // Students 1 and 2 engaged the whole interval; student 3 distracted, but its track
        // broke in two halves (ids 3 and 30), never visible at once.
        for id in [1, 2] {
            a.observe_result(id, &one_hot(0, 0.9));
        }
        a.observe_result(3, &one_hot(4, 0.9));
        frames(&mut a, &[1, 2, 3], 50);
        a.observe_result(30, &one_hot(4, 0.9));
        frames(&mut a, &[1, 2, 30], 50);
        let f = published(a.finish(100));
        assert_eq!((f.students, f.assessed, f.tracks_seen), (3, Some(3), 4));
        let e = f.engagement.unwrap();
        assert_eq!((e.engaged, e.distracted), (2, 1));
        assert_eq!(e.distracted_ratio, 0.3333);
    }

    #[test]
    fn the_headcount_does_not_depend_on_how_many_frames_were_analysed() {
        let headcount = |analysed: usize| {
            let mut a = aggregator(Profile::Presence, 2);
            // 30 students, one of whom the detector misses in every third frame.
            for f in 0..analysed {
                let n = if f % 3 == 0 { 29 } else { 30 };
                a.observe_frame(0..n);
            }
            published(a.finish(300))
        };
        let (all, few) = (headcount(300), headcount(20));
        assert_eq!((all.students, few.students), (30, 30));
        assert_eq!((all.coverage, few.coverage), (Some(1.0), Some(0.0667)));
        assert!(all.assessed.is_none() && all.engagement.is_none() && all.classes.is_none());
    }

    #[test]
    fn coarse_profile_publishes_no_classes() {
        let mut a = aggregator(Profile::Coarse, 2);
        a.observe_result(1, &one_hot(4, 0.9));
        a.observe_result(2, &one_hot(3, 0.5));
        frames(&mut a, &[1, 2], 4);
        let f = published(a.finish(0));
        assert!(f.classes.is_none());
        assert_eq!(
            f.coverage,
            Some(1.0),
            "frames captured in the interval before"
        );
        let e = f.engagement.clone().unwrap();
        assert_eq!((e.engaged, e.distracted), (1, 1));
        // Distracted student: P(distracted) 0.9; engaged student: P(engaged) = 1 - 0.125.
        assert!((e.confidence - (0.9 + 0.875) / 2.0).abs() < 1e-3);
        let json = serde_json::to_value(&f).unwrap();
        assert!(json.get("classes").is_none());
    }

    #[test]
    fn fewer_than_k_assessed_suppresses_everything_and_resets() {
        let mut a = aggregator(Profile::Fine, 3);
        a.observe_result(1, &one_hot(0, 0.9));
        a.observe_result(2, &one_hot(0, 0.9));
        // Nine students present, only two assessed: k applies to the assessed.
        frames(&mut a, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 5);
        assert_eq!(
            a.finish(5),
            Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize)
        );
        // The next interval starts empty.
        assert_eq!(
            a.finish(0),
            Aggregate::Suppressed(SuppressionReason::BelowMinGroupSize)
        );
        for id in 0..3 {
            a.observe_result(id, &one_hot(1, 0.9));
        }
        frames(&mut a, &[0, 1, 2], 1);
        assert_eq!(published(a.finish(1)).assessed, Some(3));
    }

    #[test]
    fn apportioned_counts_sum_to_the_total() {
        assert_eq!(apportion(3, &[1.0, 1.0, 1.0]), [1, 1, 1]);
        assert_eq!(apportion(2, &[1.0, 1.0, 1.0]), [1, 1, 0]);
        assert_eq!(apportion(10, &[0.66, 0.34]), [7, 3]);
        assert_eq!(apportion(5, &[0.0, 0.0]), [0, 0]);
        assert_eq!(apportion(0, &[0.5, 0.5]), [0, 0]);
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
        frames(&mut a, &[0, 1, 2, 3, 4], 1);
        let f = published(a.finish(1));
        assert_eq!((f.students, f.assessed, f.tracks_seen), (5, Some(3), 3));
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
        for key in [
            "students",
            "assessed",
            "tracks_seen",
            "frames_analysed",
            "coverage",
            "engagement",
            "classes",
        ] {
            assert!(json.get(key).is_none(), "{key} leaked: {json}");
        }
        assert_eq!(json["interval_start"], "1970-01-01T00:00:00.000Z");
    }
}

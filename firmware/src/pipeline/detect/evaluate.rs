//! How well a detector's boxes match the faces known to be in an image: faces found, faces
//! missed, false faces, and recall by face size. Used by the detector tests and by
//! `caer-detect --expected`, so that a user measures their own photographs the way the
//! project measures its evaluation set.

use crate::pipeline::detect::Detection;
use crate::pipeline::track::iou;

/// IoU a detection needs with an expected face to find it. Hand-drawn boxes (brows to chin)
/// and a detector's boxes (forehead to chin, ears included or not) differ in extent, so 0.4
/// rather than the 0.5 of box-regression benchmarks; a box on a neighbour's face is far below.
pub const DEFAULT_MIN_IOU: f32 = 0.4;

/// Face sizes (the expected box's longer side, in image pixels) the recall is reported by:
/// `[0, 32)`, `[32, 64)`, `[64, 128)`, `[128, inf)`.
pub const SIZE_BOUNDS: [f32; 3] = [32.0, 64.0, 128.0];

/// Names of the size classes of [`SIZE_BOUNDS`], in order.
pub const SIZE_NAMES: [&str; 4] = ["<32 px", "32-63 px", "64-127 px", ">=128 px"];

/// One image's detections against its expected faces.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScore {
    /// For each expected face, in order: whether a detection found it.
    pub found: Vec<bool>,
    /// For each expected face, in order: its size class (index into [`SIZE_NAMES`]).
    pub size_class: Vec<usize>,
    /// Detections that found no expected face.
    pub false_faces: Vec<Detection>,
}

impl ImageScore {
    /// Expected faces found.
    pub fn hits(&self) -> usize {
        self.found.iter().filter(|f| **f).count()
    }
}

/// The size class of a face box: its longer side against [`SIZE_BOUNDS`].
pub fn size_class(bbox: &[f32; 4]) -> usize {
    let side = (bbox[2] - bbox[0]).max(bbox[3] - bbox[1]);
    SIZE_BOUNDS.iter().filter(|b| side >= **b).count()
}

/// Matches detections to expected faces, best overlap first, one detection per face at
/// most: a pair counts when its IoU is at least `min_iou`.
pub fn score(found: &[Detection], expected: &[[f32; 4]], min_iou: f32) -> ImageScore {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (e, face) in expected.iter().enumerate() {
        for (d, detection) in found.iter().enumerate() {
            let overlap = iou(&detection.bbox, face);
            if overlap >= min_iou {
                pairs.push((overlap, e, d));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut face_found = vec![false; expected.len()];
    let mut used = vec![false; found.len()];
    for (_, e, d) in pairs {
        if !face_found[e] && !used[d] {
            face_found[e] = true;
            used[d] = true;
        }
    }
    ImageScore {
        found: face_found,
        size_class: expected.iter().map(size_class).collect(),
        false_faces: found
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(d, _)| *d)
            .collect(),
    }
}

/// Totals over many images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Images scored.
    pub images: usize,
    /// Expected faces.
    pub faces: usize,
    /// Expected faces found.
    pub hits: usize,
    /// Detections that found no face.
    pub false_faces: usize,
    /// Per size class ([`SIZE_NAMES`]): (faces found, faces).
    pub by_size: [(usize, usize); 4],
}

impl Totals {
    /// Adds one image's score.
    pub fn add(&mut self, image: &ImageScore) {
        self.images += 1;
        self.faces += image.found.len();
        self.hits += image.hits();
        self.false_faces += image.false_faces.len();
        for (found, class) in image.found.iter().zip(&image.size_class) {
            self.by_size[*class].0 += usize::from(*found);
            self.by_size[*class].1 += 1;
        }
    }

    /// Share of the expected faces found (1 when there were none).
    pub fn recall(&self) -> f64 {
        if self.faces == 0 {
            1.0
        } else {
            self.hits as f64 / self.faces as f64
        }
    }

    /// False faces per image scored.
    pub fn false_faces_per_image(&self) -> f64 {
        self.false_faces as f64 / self.images.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(bbox: [f32; 4]) -> Detection {
        Detection { bbox, score: 0.9 }
    }

    #[test]
    fn each_detection_finds_one_face_at_most_and_the_best_overlap_wins() {
        let expected = [[0.0, 0.0, 10.0, 10.0], [8.0, 0.0, 18.0, 10.0]];
        // One box between both faces overlaps the second more; another sits on the first.
        let found = [d([7.0, 0.0, 17.0, 10.0]), d([1.0, 0.0, 11.0, 10.0])];
        let s = score(&found, &expected, 0.4);
        assert_eq!(s.found, [true, true]);
        assert!(s.false_faces.is_empty());
        // Alone, the in-between box finds only the face it overlaps best.
        let s = score(&found[..1], &expected, 0.4);
        assert_eq!(s.found, [false, true]);
        // A far box is a false face; a face nobody overlapped enough is missed.
        let s = score(&[d([50.0, 50.0, 60.0, 60.0])], &expected, 0.4);
        assert_eq!((s.hits(), s.false_faces.len()), (0, 1));
    }

    #[test]
    fn totals_count_recall_false_faces_and_sizes() {
        let expected = [[0.0, 0.0, 20.0, 30.0], [100.0, 0.0, 200.0, 40.0]];
        let s = score(&[d([0.0, 0.0, 20.0, 30.0])], &expected, 0.4);
        assert_eq!(s.size_class, [0, 2]);
        let mut t = Totals::default();
        t.add(&s);
        t.add(&score(&[d([1.0, 1.0, 2.0, 2.0])], &[], 0.4));
        assert_eq!((t.images, t.faces, t.hits, t.false_faces), (2, 2, 1, 1));
        assert_eq!(t.by_size, [(1, 1), (0, 0), (0, 1), (0, 0)]);
        assert_eq!((t.recall(), t.false_faces_per_image()), (0.5, 0.5));
        assert_eq!(size_class(&[0.0, 0.0, 32.0, 1.0]), 1);
        assert_eq!(size_class(&[0.0, 0.0, 1.0, 128.0]), 3);
    }
}

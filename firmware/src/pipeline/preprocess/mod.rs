//! The reference preprocessing: RGB frames and boxes to `S`x`S` crops, then to model input.
//!
//! What the official CLIP-CAER data loader does, step for step (`model-export`'s
//! `caer_export.preprocess` makes the same library calls and writes the goldens):
//!
//! - **Face stream** (Pillow): the face box `[left, top, right, bottom]` is cast to integers
//!   by truncation toward zero (Python `int()`), grown by the margin (20 px) on every side,
//!   clamped to `[0, W] x [0, H]`, cropped, and resized to `S`x`S` with Pillow's `BILINEAR`
//!   without keeping the aspect ratio: a convolution whose support grows with the downscale
//!   factor (antialiased), reproduced bit for bit by the private `resample` module. A frame
//!   without a face box uses the whole frame.
//! - **Context stream** (Pillow, then OpenCV): the frame is cropped to the body box as
//!   Pillow's `Image.crop` does: each coordinate rounded half to even (Python `round()`),
//!   **not** clamped, and what lies outside the frame is black (the whole frame if there is
//!   no box). Then letterboxed: `r = min(S/w, S/h)`, `cv2.resize` to `(int(w*r), int(h*r))`
//!   with OpenCV's `INTER_LINEAR` (8-bit fixed point, no antialiasing: the `cv_resize`
//!   module), and a black border around it, the odd pixel going bottom/right.
//! - Model input: `[3, S, S]` `f32` planes, `x / 255`, no mean/std.
//!
//! Boxes are `f64`, as the reference's JSON numbers are: rounding and truncation then agree
//! with Python's on every value (an `f32` box is widened exactly).
//!
//! Bounds: a [`Preprocessor`] owns its resizers' scratch buffers and reuses them; once it has
//! seen the largest crop, no call allocates. The body crop is never copied out of the frame:
//! the resizer reads the frame through the crop window. Crops are written into
//! caller-provided buffers of exactly `3*S*S` elements (HWC `u8` for crops, CHW `f32` for
//! model input).

pub mod cv_resize;
pub(crate) mod resample;

use self::cv_resize::{CvLinear, Window};
use self::resample::{PillowBilinear, Rect};
use crate::pipeline::error::PreprocessError;

/// A box `[left, top, right, bottom]` in frame pixels.
pub type PixelBox = [f64; 4];

/// Widens an `f32` box (a detector's or the tracker's) exactly.
pub fn pixel_box(b: [f32; 4]) -> PixelBox {
    b.map(f64::from)
}

/// The most pixels a body crop may have: twice Pillow's `MAX_IMAGE_PIXELS`, beyond which
/// Pillow's `Image.crop` raises `DecompressionBombError`.
pub const MAX_BODY_CROP_PIXELS: u64 = 2 * (1024 * 1024 * 1024 / 4 / 3);

/// The reference margin grown around face boxes, in pixels.
pub const DEFAULT_FACE_MARGIN: u32 = 20;

/// A borrowed RGB8 frame: `width * height` pixels, row-major, 3 bytes each, no padding.
#[derive(Debug, Clone, Copy)]
pub struct RgbFrame<'a> {
    width: u32,
    height: u32,
    pixels: &'a [u8],
}

impl<'a> RgbFrame<'a> {
    /// Wraps a tightly packed RGB8 buffer; fails if its length is not `width * height * 3`.
    pub fn new(width: u32, height: u32, pixels: &'a [u8]) -> Result<Self, PreprocessError> {
        let needed = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3));
        if needed != Some(pixels.len()) {
            return Err(PreprocessError::FrameBuffer {
                width,
                height,
                len: pixels.len(),
            });
        }
        Ok(RgbFrame {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel bytes.
    pub fn pixels(&self) -> &'a [u8] {
        self.pixels
    }
}

impl<'a> From<&'a image::RgbImage> for RgbFrame<'a> {
    fn from(image: &'a image::RgbImage) -> Self {
        // An `RgbImage` always holds exactly width * height * 3 bytes.
        RgbFrame {
            width: image.width(),
            height: image.height(),
            pixels: image.as_raw(),
        }
    }
}

/// A non-empty pixel rectangle inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Columns, at least 1.
    pub width: u32,
    /// Rows, at least 1.
    pub height: u32,
}

/// Python's `int()` of a box coordinate: truncation toward zero (saturating far outside the
/// frame, which clamping then absorbs).
fn py_int(v: f64) -> i64 {
    v as i64
}

/// Casts, grows and clamps a box to a non-empty rectangle of a `width`x`height` frame; the
/// whole frame if there is no box.
fn clamp_box(
    what: &'static str,
    bbox: Option<PixelBox>,
    margin: u32,
    width: u32,
    height: u32,
) -> Result<CropRect, PreprocessError> {
    let (l, t, r, b) = match bbox {
        None => (0, 0, i64::from(width), i64::from(height)),
        Some(bbox) => {
            if bbox.iter().any(|v| !v.is_finite()) {
                return Err(PreprocessError::NonFiniteBox { what, bbox });
            }
            let m = i64::from(margin);
            let clamp_x = |v: i64| v.clamp(0, i64::from(width));
            let clamp_y = |v: i64| v.clamp(0, i64::from(height));
            (
                clamp_x(py_int(bbox[0]) - m),
                clamp_y(py_int(bbox[1]) - m),
                clamp_x(py_int(bbox[2]) + m),
                clamp_y(py_int(bbox[3]) + m),
            )
        }
    };
    if r <= l || b <= t {
        return Err(PreprocessError::EmptyCrop {
            what,
            bbox: bbox.unwrap_or([0.0, 0.0, f64::from(width), f64::from(height)]),
            width,
            height,
        });
    }
    // All four values lie in [0, width] or [0, height], so they fit in u32.
    Ok(CropRect {
        left: l as u32,
        top: t as u32,
        width: (r - l) as u32,
        height: (b - t) as u32,
    })
}

/// The face crop rectangle: the box cast to integers, grown by `margin`, clamped to the frame;
/// the whole frame if there is no box.
pub fn face_rect(
    width: u32,
    height: u32,
    face_box: Option<PixelBox>,
    margin: u32,
) -> Result<CropRect, PreprocessError> {
    clamp_box("face", face_box, margin, width, height)
}

/// The context crop window, as Pillow's `Image.crop` computes it: each coordinate rounded
/// half to even, not clamped (the part outside the frame reads black); the whole frame if
/// there is no box.
pub fn body_window(
    width: u32,
    height: u32,
    body_box: Option<PixelBox>,
) -> Result<Window, PreprocessError> {
    let Some(b) = body_box else {
        return Ok(Window {
            left: 0,
            top: 0,
            width,
            height,
        });
    };
    if b.iter().any(|v| !v.is_finite()) {
        return Err(PreprocessError::NonFiniteBox {
            what: "body",
            bbox: b,
        });
    }
    if b[2] < b[0] || b[3] < b[1] {
        return Err(PreprocessError::InvertedBox { bbox: b });
    }
    // `round_ties_even` is Python's round(); the values are finite, and `as` saturates far
    // outside any frame, where the size check below refuses the box.
    let [l, t, r, bt] = b.map(|v| v.round_ties_even() as i64);
    // In i128: far outside the frame, `r - l` overflows i64.
    let side =
        |lo: i64, hi: i64| (i128::from(hi) - i128::from(lo)).min(i128::from(u64::MAX)) as u64;
    let (w, h) = (side(l, r), side(t, bt));
    if w == 0 || h == 0 {
        return Err(PreprocessError::EmptyCrop {
            what: "body",
            bbox: b,
            width,
            height,
        });
    }
    let pixels = w.saturating_mul(h);
    if pixels > MAX_BODY_CROP_PIXELS || w > u64::from(u32::MAX) || h > u64::from(u32::MAX) {
        return Err(PreprocessError::OversizedBox {
            bbox: b,
            pixels,
            limit: MAX_BODY_CROP_PIXELS,
        });
    }
    Ok(Window {
        left: l,
        top: t,
        width: w as u32,
        height: h as u32,
    })
}

/// The letterboxed size of a `width`x`height` crop in an `size`x`size` square, computed in
/// `f64` exactly as Python does: `r = min(S/w, S/h)`, `(int(w*r), int(h*r))`.
pub fn letterbox_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (w, h, s) = (f64::from(width), f64::from(height), f64::from(size));
    let r = (s / w).min(s / h);
    // Truncation, like Python's int(); never above `size` (w*r <= w*(S/w) up to rounding).
    (((w * r) as u32).min(size), ((h * r) as u32).min(size))
}

/// Writes an HWC `u8` RGB crop as CHW `f32` planes scaled to `[0, 1]` (`x / 255`, divided
/// like the reference rather than multiplied by a rounded reciprocal).
pub fn write_chw(crop: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
    if out.len() != crop.len() || crop.len() % 3 != 0 {
        return Err(PreprocessError::BufferLength {
            what: "model input",
            expected: crop.len(),
            found: out.len(),
        });
    }
    let plane = crop.len() / 3;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for (((px, r), g), b) in crop.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = f32::from(px[0]) / 255.0;
        *g = f32::from(px[1]) / 255.0;
        *b = f32::from(px[2]) / 255.0;
    }
    Ok(())
}

/// Turns frames and boxes into crops and model input; owns reusable scratch memory.
#[derive(Debug)]
pub struct Preprocessor {
    size: u32,
    face_margin: u32,
    /// The face stream's resizer.
    pillow: PillowBilinear,
    /// The context stream's resizer.
    opencv: CvLinear,
    /// `3*S*S`.
    crop_len: usize,
    /// One crop, for the `*_input` methods.
    crop: Vec<u8>,
}

impl Preprocessor {
    /// A preprocessor producing `input_size`x`input_size` crops, growing face boxes by
    /// `face_margin` pixels on every side.
    ///
    /// # Panics
    ///
    /// If `input_size` is zero or above 65536 (a [`crate::pipeline::model::bundle::Bundle`] never is).
    pub fn new(input_size: usize, face_margin: u32) -> Self {
        assert!(
            (1..=1 << 16).contains(&input_size),
            "input_size {input_size} out of range"
        );
        let size = input_size as u32;
        Preprocessor {
            size,
            face_margin,
            pillow: PillowBilinear::default(),
            opencv: CvLinear::default(),
            crop_len: 3 * input_size * input_size,
            crop: vec![0; 3 * input_size * input_size],
        }
    }

    /// `S`, the side of the crops.
    pub fn input_size(&self) -> usize {
        self.size as usize
    }

    /// Bytes in one HWC crop, and floats in one CHW model input: `3*S*S`.
    pub fn crop_len(&self) -> usize {
        self.crop_len
    }

    /// Writes the face crop of `frame` (HWC RGB, `S`x`S`) into `out`.
    pub fn face_crop(
        &mut self,
        frame: RgbFrame<'_>,
        face_box: Option<PixelBox>,
        out: &mut [u8],
    ) -> Result<(), PreprocessError> {
        self.check_crop_buffer(out.len())?;
        let rect = face_rect(frame.width, frame.height, face_box, self.face_margin)?;
        let size = self.size as usize;
        let to = Rect {
            left: 0,
            top: 0,
            width: size,
            height: size,
        };
        self.pillow.resize(
            frame.pixels,
            frame.width as usize,
            rect.into(),
            out,
            size,
            to,
        );
        Ok(())
    }

    /// Writes the letterboxed context crop of `frame` (HWC RGB, `S`x`S`) into `out`.
    pub fn context_crop(
        &mut self,
        frame: RgbFrame<'_>,
        body_box: Option<PixelBox>,
        out: &mut [u8],
    ) -> Result<(), PreprocessError> {
        self.check_crop_buffer(out.len())?;
        let window = body_window(frame.width, frame.height, body_box)?;
        let (nw, nh) = letterbox_size(window.width, window.height, self.size);
        if nw == 0 || nh == 0 {
            return Err(PreprocessError::DegenerateLetterbox {
                width: window.width,
                height: window.height,
            });
        }
        out.fill(0);
        let size = self.size as usize;
        let (left, top) = ((size - nw as usize) / 2, (size - nh as usize) / 2);
        self.opencv.resize(
            frame.pixels,
            frame.width,
            frame.height,
            window,
            out,
            (top * size + left) * 3,
            size * 3,
            nw,
            nh,
        );
        Ok(())
    }

    /// Writes the face stream's model input (`[3, S, S]`, `x / 255`) into `out`.
    pub fn face_input(
        &mut self,
        frame: RgbFrame<'_>,
        face_box: Option<PixelBox>,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let mut crop = std::mem::take(&mut self.crop);
        let result = self
            .face_crop(frame, face_box, &mut crop)
            .and_then(|()| write_chw(&crop, out));
        self.crop = crop;
        result
    }

    /// Writes the context stream's model input (`[3, S, S]`, `x / 255`) into `out`.
    pub fn context_input(
        &mut self,
        frame: RgbFrame<'_>,
        body_box: Option<PixelBox>,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let mut crop = std::mem::take(&mut self.crop);
        let result = self
            .context_crop(frame, body_box, &mut crop)
            .and_then(|()| write_chw(&crop, out));
        self.crop = crop;
        result
    }

    fn check_crop_buffer(&self, len: usize) -> Result<(), PreprocessError> {
        if len != self.crop_len {
            return Err(PreprocessError::BufferLength {
                what: "crop",
                expected: self.crop_len,
                found: len,
            });
        }
        Ok(())
    }
}

impl From<CropRect> for Rect {
    fn from(r: CropRect) -> Rect {
        Rect {
            left: r.left as usize,
            top: r.top as usize,
            width: r.width as usize,
            height: r.height as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_coordinates_truncate_toward_zero_like_python_int() {
        // int(-0.5) == 0 and int(10.9) == 10; then the margin and the clamp.
        let rect = face_rect(200, 100, Some([30.9, 40.2, 80.99, 60.5]), 20).unwrap();
        assert_eq!(
            rect,
            CropRect {
                left: 10,
                top: 20,
                width: 90,
                height: 60
            }
        );
    }

    #[test]
    fn body_box_is_rounded_half_to_even_and_not_clamped_like_pillow_crop() {
        // Python: round(-10.5) == -10, round(20.5) == 20, round(60.5) == 60, round(91.5) == 92.
        let window = body_window(200, 100, Some([-10.5, 20.5, 60.5, 91.5])).unwrap();
        assert_eq!(
            window,
            Window {
                left: -10,
                top: 20,
                width: 70,
                height: 72
            }
        );
        let outside = body_window(200, 100, Some([300.2, 10.0, 340.7, 50.0])).unwrap();
        assert_eq!((outside.left, outside.width), (300, 41));
    }

    #[test]
    fn margin_is_clamped_to_the_frame() {
        let rect = face_rect(64, 48, Some([5.0, 5.0, 60.0, 47.0]), 20).unwrap();
        assert_eq!(
            rect,
            CropRect {
                left: 0,
                top: 0,
                width: 64,
                height: 48
            }
        );
    }

    #[test]
    fn no_box_means_the_whole_frame() {
        let whole = CropRect {
            left: 0,
            top: 0,
            width: 7,
            height: 5,
        };
        assert_eq!(face_rect(7, 5, None, 20).unwrap(), whole);
        assert_eq!(
            body_window(7, 5, None).unwrap(),
            Window {
                left: 0,
                top: 0,
                width: 7,
                height: 5
            }
        );
    }

    #[test]
    fn bad_boxes_are_errors() {
        let err = face_rect(100, 100, Some([150.0, 10.0, 180.0, 50.0]), 20).unwrap_err();
        assert!(
            matches!(err, PreprocessError::EmptyCrop { what: "face", .. }),
            "{err}"
        );
        let err = body_window(100, 100, Some([10.2, 10.0, 10.4, 50.0])).unwrap_err();
        assert!(
            matches!(err, PreprocessError::EmptyCrop { what: "body", .. }),
            "{err}"
        );
        let err = body_window(100, 100, Some([20.0, 10.0, 10.0, 50.0])).unwrap_err();
        assert!(matches!(err, PreprocessError::InvertedBox { .. }), "{err}");
        let err = body_window(100, 100, Some([-1e30, 0.0, 1e30, 50.0])).unwrap_err();
        assert!(matches!(err, PreprocessError::OversizedBox { .. }), "{err}");
        let err = body_window(100, 100, Some([0.0, f64::INFINITY, 1.0, 1.0])).unwrap_err();
        assert!(matches!(err, PreprocessError::NonFiniteBox { .. }), "{err}");
        let err = face_rect(100, 100, Some([f64::NAN, 0.0, 1.0, 1.0]), 20).unwrap_err();
        assert!(matches!(err, PreprocessError::NonFiniteBox { .. }), "{err}");
        assert!(face_rect(0, 0, None, 20).is_err());
    }

    #[test]
    fn letterbox_size_matches_python() {
        // Values computed with CPython: (int(w*r), int(h*r)) for r = min(224/w, 224/h).
        assert_eq!(letterbox_size(640, 480, 224), (224, 168));
        assert_eq!(letterbox_size(480, 640, 224), (168, 224));
        assert_eq!(letterbox_size(300, 300, 224), (224, 224));
        assert_eq!(letterbox_size(333, 97, 224), (224, 65));
        assert_eq!(letterbox_size(100, 50, 224), (224, 112));
        assert_eq!(letterbox_size(1, 1000, 224), (0, 224));
    }

    #[test]
    fn frame_buffer_length_is_checked() {
        assert!(RgbFrame::new(4, 2, &[0; 24]).is_ok());
        let err = RgbFrame::new(4, 2, &[0; 23]).unwrap_err();
        assert!(
            matches!(err, PreprocessError::FrameBuffer { len: 23, .. }),
            "{err}"
        );
    }

    #[test]
    fn chw_planes_are_scaled_by_division() {
        let crop = [0u8, 128, 255, 1, 2, 3];
        let mut out = [0f32; 6];
        write_chw(&crop, &mut out).unwrap();
        assert_eq!(
            out,
            [
                0.0,
                1.0 / 255.0,
                128.0 / 255.0,
                2.0 / 255.0,
                1.0,
                3.0 / 255.0
            ]
        );
        assert!(write_chw(&crop, &mut [0f32; 5]).is_err());
    }

    #[test]
    fn same_size_face_crop_is_a_copy() {
        // A 4x4 frame whose face box plus margin is exactly the 2x2 centre: no resampling.
        let pixels: Vec<u8> = (0..48).collect();
        let frame = RgbFrame::new(4, 4, &pixels).unwrap();
        let mut pre = Preprocessor::new(2, 1);
        let mut out = [0u8; 12];
        pre.face_crop(frame, Some([2.0, 2.0, 2.0, 2.0]), &mut out)
            .unwrap();
        assert_eq!(out, [15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
    }

    #[test]
    fn letterbox_pads_black_with_the_odd_pixel_bottom_right() {
        // A 3x1 white frame into a 4x4 square: r = 4/3, new size (4, 1), offset (0, 1).
        let pixels = [255u8; 9];
        let frame = RgbFrame::new(3, 1, &pixels).unwrap();
        let mut pre = Preprocessor::new(4, 20);
        let mut out = [7u8; 48];
        pre.context_crop(frame, None, &mut out).unwrap();
        for row in 0..4 {
            let expected = if row == 1 { 255 } else { 0 };
            assert!(
                out[row * 12..(row + 1) * 12].iter().all(|&v| v == expected),
                "row {row}"
            );
        }
    }

    #[test]
    fn uniform_frames_stay_uniform() {
        let pixels: Vec<u8> = [10u8, 20, 30].repeat(37 * 23);
        let frame = RgbFrame::new(37, 23, &pixels).unwrap();
        let mut pre = Preprocessor::new(16, 20);
        let mut out = vec![0f32; pre.crop_len()];
        pre.face_input(frame, Some([3.0, 2.0, 30.0, 20.0]), &mut out)
            .unwrap();
        assert!(out[..256].iter().all(|&v| v == 10.0 / 255.0));
        assert!(out[512..].iter().all(|&v| v == 30.0 / 255.0));
    }
}

//! OpenCV's `cv2.resize(img, (w, h))` (default `INTER_LINEAR`) on 8-bit RGB, bit for bit.
//!
//! The context stream letterboxes its crop with OpenCV, not Pillow, so its bytes follow
//! OpenCV 4.14's `modules/imgproc/src/resize.cpp` (`opencv-python-headless` 4.14.0.94).
//! For 8-bit images with 3 channels no accelerated backend takes the call (the IPP HAL
//! refuses 8-bit `INTER_LINEAR` unless `setUseIPP_NotExact(True)`; on ARM, carotene takes
//! only 1 or 4 channels and KleidiCV only 1), so `cv::resize` ends in one of three places,
//! which this module reproduces:
//!
//! - **Same size** (`cv::resize`): a plain copy.
//! - **Exactly half in both directions** (`hal::resize` turns `INTER_LINEAR` into
//!   `INTER_AREA` when `1 / (dst/src)` is within `DBL_EPSILON` of 2 on both axes, that is
//!   `src == 2 * dst`): each output value is the mean of a 2x2 block, `(a + b + c + d + 2) >> 2`
//!   (`resizeAreaFast_`). For 8 bits this equals what the bilinear path below would give
//!   (all weights 1024: `h >> 4 = 64 * (a + b)`, `(1024 * 64 * (a + b)) >> 16 = a + b`), so
//!   the switch cannot change a byte; it is kept as OpenCV's own, cheaper path.
//! - **Otherwise** (`resizeGeneric_` with `HResizeLinear` / `VResizeLinear`), separable
//!   fixed point with 11-bit weights (`INTER_RESIZE_COEF_BITS`):
//!   - per output column: `fx = (float)((dx + 0.5) * scale - 0.5)`, computed in `f64` and
//!     then rounded to `f32` (keeping it in `f64` moves some values by one level in about a
//!     third of the validation cases), with `scale = 1 / (dst/src)` in `f64` as OpenCV
//!     computes it; `sx = floor(fx)`, `fx -= sx` in `f32`; if `sx < 0` then `sx = 0, fx = 0`;
//!     if `sx >= src - 1` then `sx = src - 1, fx = 0` (edge replication); weights
//!     `a0 = rne((1 - fx) * 2048)`, `a1 = rne(fx * 2048)` in `f32`, rounded half to even
//!     (`saturate_cast<short>(float)`; half away from zero changes many cases), so `a0 + a1`
//!     is not forced to 2048;
//!   - per output row the same `fy`, `sy`, `b0`, `b1`, but **without** the clamp: at the
//!     top (`sy = -1`) and bottom (`sy = src - 1`) both taps read the clipped edge row with
//!     the unclamped weights, which rounds differently from reading it once;
//!   - horizontal pass, exact `i32`: `h = p[sx] * a0 + p[sx + 1] * a1` (stored as `h >> 4`,
//!     all the vertical pass reads);
//!   - vertical pass: `out = (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2`.
//!     OpenCV 4.14 specialises `VResizeLinear` for 8 bits so that its scalar tail computes
//!     exactly what the SIMD body (`VResizeLinearVec_32s8u`: `v_shr<4>`, `v_mul_hi`,
//!     `v_rshr_pack_u<2>`) computes, instead of the older `FixedPtCast<int, uchar, 22>`
//!     (`(b0 * h0 + b1 * h1 + 2^21) >> 22`), which differs by one level on some values.
//!     No value saturates (`h >> 4 <= 32655`, result `<= 255`), so every column gets the
//!     same formula whatever the lane count, alignment branch or tail: the result does not
//!     depend on the SIMD width. The `cn == 3` horizontal SIMD loop (`v_dotprod`) is exact
//!     and its stray fourth lane is overwritten by the scalar loop.
//!
//! The source is a virtual image: a [`Window`] into the frame whose pixels outside the frame
//! read 0, which is what Pillow's unclamped `Image.crop` hands to OpenCV. The window is never
//! copied: a horizontal tap outside the frame gets weight 0 (exact, since it would multiply
//! 0), a row outside the frame is all zeros, and only the (at most two) rows each output row
//! needs go through the horizontal pass, each once.
//!
//! Bounds: [`CvLinear`] keeps its tap tables and two row buffers and only grows them, so it
//! stops allocating once it has seen the widest and tallest output. The arithmetic is
//! integer except the tap positions (`f64`/`f32`, no fused multiply-add), so results are the
//! same on every target.

/// Bytes per pixel (interleaved RGB or BGR).
const CN: usize = 3;

/// OpenCV's `INTER_RESIZE_COEF_SCALE`: weights have 11 fractional bits.
const COEF_SCALE: f32 = 2048.0;

/// A window of a frame, in frame pixels: the source image of a resize. Pixels of the window
/// outside the frame read black (0), as in Pillow's `Image.crop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Column of the window's left edge; may be negative or beyond the frame.
    pub left: i64,
    /// Row of the window's top edge; may be negative or beyond the frame.
    pub top: i64,
    /// Width in pixels, at least 1.
    pub width: u32,
    /// Height in pixels, at least 1.
    pub height: u32,
}

/// One output column: two source pixels (byte offsets within a frame row) and their weights.
/// A pixel outside the frame has weight 0 and offset 0.
#[derive(Debug, Clone, Copy)]
struct XTap {
    off0: usize,
    off1: usize,
    w0: i32,
    w1: i32,
}

/// One output row: two window rows (already clipped to the window) and their weights.
#[derive(Debug, Clone, Copy)]
struct YTap {
    row0: u32,
    row1: u32,
    b0: u16,
    b1: u16,
}

/// Which of OpenCV's code paths a resize takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `dsize == ssize`: `src.copyTo(dst)`.
    Copy,
    /// Exactly half on both axes: `INTER_AREA` (`resizeAreaFast_`), 2x2 means.
    Half,
    /// Fixed-point bilinear (`resizeGeneric_`).
    Linear,
}

/// `cv2.resize` with `INTER_LINEAR` for RGB8, reading a window of a frame.
///
/// Holds scratch buffers only (tap tables, two rows of the horizontal pass); reuse one per
/// thread so that calls stop allocating.
#[derive(Debug, Default)]
pub struct CvLinear {
    xtaps: Vec<XTap>,
    ytaps: Vec<YTap>,
    /// Horizontal-pass rows: `h >> 4` in [`Mode::Linear`] (all its vertical pass reads),
    /// `h` itself otherwise; either fits `u16` (nothing is negative).
    rows: [Vec<u16>; 2],
    /// The window row each of `rows` holds.
    held: [Option<u32>; 2],
}

impl CvLinear {
    /// Resizes the `window` of `frame` to `out_w` x `out_h` pixels, as
    /// `cv2.resize(crop, (out_w, out_h))` does for the Pillow-style crop of that window.
    ///
    /// `frame` is tightly packed RGB8, `frame_w` x `frame_h` pixels (`frame_w * frame_h * 3`
    /// bytes). Output pixel `(x, y)` is written at `out[out_offset + y * out_stride + 3 * x..]`;
    /// nothing else of `out` is touched.
    ///
    /// Preconditions (caller bugs): `window.width`, `window.height` at least 1;
    /// `out_stride >= 3 * out_w`; `out` holds the last row (`out_offset + (out_h - 1) *
    /// out_stride + 3 * out_w` bytes); `frame.len() == frame_w * frame_h * 3`. Checked by
    /// debug assertions; in release a too short buffer panics on indexing and an empty window
    /// writes nothing. An `out_w` or `out_h` of 0 writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn resize(
        &mut self,
        frame: &[u8],
        frame_w: u32,
        frame_h: u32,
        window: Window,
        out: &mut [u8],
        out_offset: usize,
        out_stride: usize,
        out_w: u32,
        out_h: u32,
    ) {
        let (fw, fh) = (frame_w as usize, frame_h as usize);
        debug_assert_eq!(
            frame.len(),
            fw * fh * CN,
            "frame is not frame_w x frame_h RGB8"
        );
        debug_assert!(window.width > 0 && window.height > 0, "empty window");
        if out_w == 0 || out_h == 0 || window.width == 0 || window.height == 0 {
            return;
        }
        let (ow, oh) = (out_w as usize, out_h as usize);
        debug_assert!(out_stride >= ow * CN, "output stride shorter than a row");
        debug_assert!(
            out.len() >= out_offset + (oh - 1) * out_stride + ow * CN,
            "output buffer too short"
        );

        let mode = if out_w == window.width && out_h == window.height {
            Mode::Copy
        } else if is_half(out_w, window.width) && is_half(out_h, window.height) {
            Mode::Half
        } else {
            Mode::Linear
        };
        self.plan(mode, frame_w, window, out_w, out_h);

        let Self {
            xtaps,
            ytaps,
            rows,
            held,
        } = self;
        *held = [None, None];
        for r in rows.iter_mut() {
            r.clear();
            r.resize(ow * CN, 0);
        }
        let source = Source {
            frame,
            width: fw,
            height: fh,
            top: window.top,
            shift: if mode == Mode::Linear { 4 } else { 0 },
        };

        for (dy, t) in ytaps.iter().enumerate() {
            // The slots holding `row0` and `row1`, computing a missing one into the slot
            // the other does not need (rows only move down, so at most two are live).
            let i0 = match held.iter().position(|&h| h == Some(t.row0)) {
                Some(i) => i,
                None => {
                    let i = usize::from(held[0] == Some(t.row1));
                    source.hpass(t.row0, xtaps, &mut rows[i]);
                    held[i] = Some(t.row0);
                    i
                }
            };
            let i1 = match held.iter().position(|&h| h == Some(t.row1)) {
                Some(i) => i,
                None => {
                    let i = 1 - i0;
                    source.hpass(t.row1, xtaps, &mut rows[i]);
                    held[i] = Some(t.row1);
                    i
                }
            };
            let (h0, h1) = (&rows[i0], &rows[i1]);
            let start = out_offset + dy * out_stride;
            let dst = &mut out[start..start + ow * CN];
            match mode {
                Mode::Copy => vertical_copy(dst, h0),
                Mode::Half => vertical_half(dst, h0, h1),
                Mode::Linear => vertical_linear(dst, h0, h1, t.b0, t.b1),
            }
        }
    }

    /// Fills the tap tables for `mode`.
    fn plan(&mut self, mode: Mode, frame_w: u32, window: Window, out_w: u32, out_h: u32) {
        let (w, h) = (i64::from(window.width), i64::from(window.height));
        // A window column to a frame-row byte offset and weight; 0 and 0 outside the frame.
        let tap = |x: i64, weight: i32| {
            let fx = window.left.saturating_add(x);
            if weight != 0 && fx >= 0 && fx < i64::from(frame_w) {
                (fx as usize * CN, weight)
            } else {
                (0, 0)
            }
        };
        self.xtaps.clear();
        self.ytaps.clear();
        match mode {
            Mode::Copy => {
                self.xtaps.extend((0..i64::from(out_w)).map(|x| {
                    let (off0, w0) = tap(x, 1);
                    XTap {
                        off0,
                        off1: 0,
                        w0,
                        w1: 0,
                    }
                }));
                self.ytaps.extend((0..out_h).map(|y| YTap {
                    row0: y,
                    row1: y,
                    b0: 0,
                    b1: 0,
                }));
            }
            Mode::Half => {
                self.xtaps.extend((0..i64::from(out_w)).map(|x| {
                    let ((off0, w0), (off1, w1)) = (tap(2 * x, 1), tap(2 * x + 1, 1));
                    XTap { off0, off1, w0, w1 }
                }));
                self.ytaps.extend((0..out_h).map(|y| YTap {
                    row0: 2 * y,
                    row1: 2 * y + 1,
                    b0: 0,
                    b1: 0,
                }));
            }
            Mode::Linear => {
                let scale_x = 1.0 / (f64::from(out_w) / f64::from(window.width));
                self.xtaps.extend((0..out_w).map(|dx| {
                    let (mut sx, mut fx) = source_pos(dx, scale_x);
                    if sx < 0 {
                        sx = 0;
                        fx = 0.0;
                    }
                    if sx >= w - 1 {
                        sx = w - 1;
                        fx = 0.0;
                    }
                    let ((off0, w0), (off1, w1)) =
                        (tap(sx, weight(1.0 - fx)), tap(sx + 1, weight(fx)));
                    XTap { off0, off1, w0, w1 }
                }));
                let scale_y = 1.0 / (f64::from(out_h) / f64::from(window.height));
                self.ytaps.extend((0..out_h).map(|dy| {
                    let (sy, fy) = source_pos(dy, scale_y);
                    let clip = |r: i64| r.clamp(0, h - 1) as u32;
                    YTap {
                        row0: clip(sy),
                        row1: clip(sy + 1),
                        b0: weight(1.0 - fy) as u16,
                        b1: weight(fy) as u16,
                    }
                }));
            }
        }
    }
}

/// [`Mode::Copy`]'s vertical pass: the row itself.
fn vertical_copy(dst: &mut [u8], h0: &[u16]) {
    for (o, &a) in dst.iter_mut().zip(h0) {
        *o = a as u8;
    }
}

/// [`Mode::Half`]'s vertical pass: `(a + b + c + d + 2) >> 2` from two row sums.
fn vertical_half(dst: &mut [u8], h0: &[u16], h1: &[u16]) {
    for ((o, &a), &b) in dst.iter_mut().zip(h0).zip(h1) {
        *o = ((a + b + 2) >> 2) as u8;
    }
}

/// [`Mode::Linear`]'s vertical pass on rows holding `h >> 4`: `v_mul_hi` (the high half of
/// a 16-bit product) per row, then `(hi0 + hi1 + 2) >> 2`, as `VResizeLinearVec_32s8u`.
/// OpenCV multiplies signed `i16`; every operand here is non-negative, so the unsigned high
/// half is the same number (and compiles to `pmulhuw` even on baseline x86-64).
fn vertical_linear(dst: &mut [u8], h0: &[u16], h1: &[u16], b0: u16, b1: u16) {
    for ((o, &a), &b) in dst.iter_mut().zip(h0).zip(h1) {
        let hi0 = ((u32::from(b0) * u32::from(a)) >> 16) as u16;
        let hi1 = ((u32::from(b1) * u32::from(b)) >> 16) as u16;
        *o = ((hi0 + hi1 + 2) >> 2) as u8;
    }
}

/// The frame seen through a window's rows.
struct Source<'a> {
    frame: &'a [u8],
    width: usize,
    height: usize,
    top: i64,
    /// Right shift applied to each horizontal sum before it is stored.
    shift: u32,
}

impl Source<'_> {
    /// The horizontal pass of window row `row` into `buf` (3 values per output pixel):
    /// `(p0 * w0 + p1 * w1) >> shift` per channel, all zeros for a row outside the frame.
    /// The sum is at most `255 * 4096`, so `>> 4` fits `u16`; without the shift the weights
    /// are 0 or 1 and it is at most 510.
    fn hpass(&self, row: u32, xtaps: &[XTap], buf: &mut [u16]) {
        let fy = self.top.saturating_add(i64::from(row));
        if self.width == 0 || fy < 0 || fy >= self.height as i64 {
            buf.fill(0);
            return;
        }
        let stride = self.width * CN;
        let start = fy as usize * stride;
        let line = &self.frame[start..start + stride];
        for (t, d) in xtaps.iter().zip(buf.chunks_exact_mut(CN)) {
            let p0 = &line[t.off0..t.off0 + CN];
            let p1 = &line[t.off1..t.off1 + CN];
            for c in 0..CN {
                d[c] = ((i32::from(p0[c]) * t.w0 + i32::from(p1[c]) * t.w1) >> self.shift) as u16;
            }
        }
    }
}

/// `hal::resize`'s test for its `INTER_AREA` switch on one axis: `1 / (dst/src)` rounds to 2
/// and is within `DBL_EPSILON` of it (for any `i32` size this means `src == 2 * dst`).
fn is_half(dst: u32, src: u32) -> bool {
    let scale = 1.0 / (f64::from(dst) / f64::from(src));
    let iscale = scale.round_ties_even(); // saturate_cast<int>(double) rounds half to even
    iscale == 2.0 && (scale - iscale).abs() < f64::EPSILON
}

/// Source index and fraction of output coordinate `d`: `fx = (float)((d + 0.5) * scale -
/// 0.5)`, `sx = floor(fx)`, `fx -= sx` (OpenCV's order of `f64` and `f32` operations).
fn source_pos(d: u32, scale: f64) -> (i64, f32) {
    let f = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    (s as i64, f - s)
}

/// An 11-bit weight: `saturate_cast<short>(v * INTER_RESIZE_COEF_SCALE)` in `f32`, rounded
/// half to even (`cvRound`). `v` lies in `[0, 1]`, so nothing saturates.
fn weight(v: f32) -> i32 {
    (v * COEF_SCALE).round_ties_even() as i32
}

#[cfg(test)]
mod tests {
    //! Expected bytes come from the real OpenCV: `cv2.resize` of `opencv-python-headless`
    //! 4.14.0.94 on x86-64 (numpy 2), on the images built here (`pattern`), with the
    //! out-of-frame part of a window as zeros (Pillow's crop).

    use super::*;

    /// `pattern(w, h)[y, x, c] = (x * 37 + y * 91 + c * 59) * 13 % 256` (`u8`), the same
    /// image in numpy: `((x*37 + y*91 + c*59) * 13) % 256`.
    fn pattern(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    v.push(((x * 37 + y * 91 + c * 59) * 13 % 256) as u8);
                }
            }
        }
        v
    }

    /// Resizes the whole `w` x `h` pattern, or a window of it, into a tight buffer.
    fn run(frame: (u32, u32), window: Window, out_w: u32, out_h: u32) -> Vec<u8> {
        let img = pattern(frame.0, frame.1);
        let mut out = vec![0u8; (out_w * out_h * 3) as usize];
        CvLinear::default().resize(
            &img,
            frame.0,
            frame.1,
            window,
            &mut out,
            0,
            (out_w * 3) as usize,
            out_w,
            out_h,
        );
        out
    }

    fn whole(w: u32, h: u32) -> Window {
        Window {
            left: 0,
            top: 0,
            width: w,
            height: h,
        }
    }

    #[test]
    fn downscale_matches_opencv() {
        // cv2.resize(pattern(7, 5), (3, 2))
        let expected = [
            141, 162, 161, 90, 89, 88, 82, 81, 80, 176, 175, 174, 104, 103, 102, 95, 94, 93,
        ];
        assert_eq!(run((7, 5), whole(7, 5), 3, 2), expected);
    }

    #[test]
    fn upscale_matches_opencv() {
        // cv2.resize(pattern(3, 2), (5, 4))
        let expected = [
            0, 255, 254, 90, 242, 241, 225, 224, 223, 206, 205, 204, 194, 193, 192, 40, 231, 230,
            104, 218, 217, 201, 200, 199, 182, 181, 180, 170, 169, 168, 119, 182, 181, 132, 170,
            169, 152, 151, 150, 134, 133, 132, 121, 120, 119, 159, 158, 157, 146, 145, 144, 128,
            127, 126, 109, 108, 107, 97, 96, 95,
        ];
        assert_eq!(run((3, 2), whole(3, 2), 5, 4), expected);
    }

    #[test]
    fn exact_half_is_a_2x2_mean() {
        // cv2.resize(pattern(4, 2), (2, 1)): INTER_AREA, (a + b + c + d + 2) >> 2.
        let img = pattern(4, 2);
        let mean = |x: usize, c: usize| {
            let p = |xx: usize, yy: usize| u32::from(img[(yy * 4 + xx) * 3 + c]);
            ((p(x, 0) + p(x + 1, 0) + p(x, 1) + p(x + 1, 1) + 2) >> 2) as u8
        };
        let expected: Vec<u8> = (0..2)
            .flat_map(|x| (0..3).map(move |c| (x, c)))
            .map(|(x, c)| mean(2 * x, c))
            .collect();
        assert_eq!(expected, [128, 191, 190, 130, 129, 128]);
        assert_eq!(run((4, 2), whole(4, 2), 2, 1), expected);
    }

    #[test]
    fn same_size_is_a_copy() {
        assert_eq!(run((4, 3), whole(4, 3), 4, 3), pattern(4, 3));
    }

    #[test]
    fn window_partly_outside_the_frame_reads_black() {
        // crop = zeros((4, 6, 3)); crop[1:, 2:] = pattern(4, 3)[:, :4];
        // cv2.resize(crop, (3, 2)), the window (-2, -1, 6, 4) of the 4x3 frame.
        let window = Window {
            left: -2,
            top: -1,
            width: 6,
            height: 4,
        };
        let expected = [
            0, 0, 0, 56, 120, 119, 89, 89, 88, 0, 0, 0, 95, 94, 93, 97, 160, 159,
        ];
        assert_eq!(run((4, 3), window, 3, 2), expected);
    }

    #[test]
    fn writes_only_the_output_rectangle_at_its_stride() {
        let img = pattern(7, 5);
        let mut canvas = vec![7u8; 5 * 4 * 3];
        CvLinear::default().resize(&img, 7, 5, whole(7, 5), &mut canvas, 5 * 3 + 3, 15, 3, 2);
        let expected = run((7, 5), whole(7, 5), 3, 2);
        for (y, row) in canvas.chunks(15).enumerate() {
            for (x, px) in row.chunks(3).enumerate() {
                if (1..=2).contains(&y) && (1..=3).contains(&x) {
                    let i = ((y - 1) * 3 + (x - 1)) * 3;
                    assert_eq!(px, &expected[i..i + 3]);
                } else {
                    assert_eq!(px, [7, 7, 7]);
                }
            }
        }
    }
}

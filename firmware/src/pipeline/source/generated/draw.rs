//! Drawing the synthetic classroom: plain shapes, and each state's cues.
//!
//! Every cue is drawn relative to the face's radii, so it looks the same at any face size:
//!
//! - neutrality: open eyes, a straight mouth;
//! - enjoyment: a smile, pink cheeks;
//! - confusion: brows slanted into a frown, a hand at the chin;
//! - fatigue: closed eyes, the head lower (the caller moves the face), a yawn now and then;
//! - distraction: the neutral face, over a phone held in both hands.
//!
//! Below the face every student holds something: a book for the four engaged states, a phone
//! for distraction. They sit lower than the face crop reaches (the face box plus its margin),
//! so distraction shows in the context stream only, as in the paper (a face-only model
//! cannot tell it from neutrality).

use image::{Rgb, RgbImage};

use super::script::{CONFUSION, DISTRACTION, ENJOYMENT, FATIGUE, NEUTRALITY};

/// What a student looks like.
#[derive(Debug, Clone, Copy)]
pub(super) struct Look {
    pub skin: Rgb<u8>,
    pub hair: Rgb<u8>,
    pub shirt: Rgb<u8>,
    pub book: Rgb<u8>,
}

const DARK: Rgb<u8> = Rgb([30, 25, 25]);
const LIPS: Rgb<u8> = Rgb([150, 70, 70]);
const MOUTH: Rgb<u8> = Rgb([70, 20, 25]);
const CHEEK: Rgb<u8> = Rgb([235, 130, 140]);
const PAGE: Rgb<u8> = Rgb([240, 238, 228]);
const PHONE: Rgb<u8> = Rgb([25, 25, 30]);
const SCREEN: Rgb<u8> = Rgb([150, 215, 255]);
const FRAME: Rgb<u8> = Rgb([70, 45, 30]);
const CANVAS: Rgb<u8> = Rgb([225, 220, 200]);

/// Draws one student whose face is centred at `c` with radii `r`, in `state`, at frame `t`.
pub(super) fn student(
    image: &mut RgbImage,
    look: &Look,
    c: (f32, f32),
    r: (f32, f32),
    state: usize,
    t: u64,
) {
    let (cx, cy) = c;
    let (rx, ry) = r;
    fill_rect(
        image,
        [cx - 1.6 * rx, cy + 0.9 * ry, cx + 1.6 * rx, cy + 3.4 * ry],
        look.shirt,
    );
    held_object(image, look, c, r, state);
    face(image, look, c, r, state, t);
    if state == CONFUSION {
        // A hand under the chin, its forearm down to the desk.
        let hand = (cx + 0.3 * rx, cy + 0.98 * ry);
        fill_rect(
            image,
            [
                hand.0 - 0.18 * rx,
                hand.1,
                hand.0 + 0.18 * rx,
                cy + 2.6 * ry,
            ],
            look.skin,
        );
        fill_ellipse(image, hand, (0.34 * rx, 0.24 * ry), look.skin);
    }
}

/// A framed portrait on the wall whose face is centred at `c` with radii `r`: a neutral face
/// and shoulders on a pale canvas, in a dark frame.
pub(super) fn portrait(image: &mut RgbImage, look: &Look, c: (f32, f32), r: (f32, f32)) {
    let (cx, cy) = c;
    let (rx, ry) = r;
    fill_rect(
        image,
        [cx - 1.5 * rx, cy - 1.45 * ry, cx + 1.5 * rx, cy + 1.6 * ry],
        FRAME,
    );
    fill_rect(
        image,
        [
            cx - 1.35 * rx,
            cy - 1.3 * ry,
            cx + 1.35 * rx,
            cy + 1.45 * ry,
        ],
        CANVAS,
    );
    fill_rect(
        image,
        [cx - 1.2 * rx, cy + 0.9 * ry, cx + 1.2 * rx, cy + 1.45 * ry],
        look.shirt,
    );
    face(image, look, c, r, NEUTRALITY, 0);
}

/// A face centred at `c` with radii `r` (hair, skin, eyes, brows, cheeks, mouth), without
/// the body: what a student shows, and what a portrait on the wall shows.
pub(super) fn face(
    image: &mut RgbImage,
    look: &Look,
    c: (f32, f32),
    r: (f32, f32),
    state: usize,
    t: u64,
) {
    let (cx, cy) = c;
    let (rx, ry) = r;
    fill_ellipse(
        image,
        (cx, cy - 0.25 * ry),
        (1.05 * rx, 0.9 * ry),
        look.hair,
    );
    fill_ellipse(
        image,
        (cx, cy + 0.1 * ry),
        (0.92 * rx, 0.88 * ry),
        look.skin,
    );
    let eye = (0.14 * rx).max(1.0);
    for side in [-0.38, 0.38] {
        let e = (cx + side * rx, cy);
        if state == FATIGUE {
            fill_rect(
                image,
                [
                    e.0 - 0.2 * rx,
                    e.1 - 0.03 * ry,
                    e.0 + 0.2 * rx,
                    e.1 + 0.05 * ry,
                ],
                DARK,
            );
        } else {
            fill_ellipse(image, e, (eye, eye), DARK);
        }
        if state == CONFUSION {
            // Inner end lower: a frown.
            let inner = (e.0 - side.signum() * 0.22 * rx, e.1 - 0.2 * ry);
            let outer = (e.0 + side.signum() * 0.22 * rx, e.1 - 0.38 * ry);
            fill_line(image, inner, outer, (0.07 * ry).max(1.0), DARK);
        }
        if state == ENJOYMENT {
            fill_ellipse(
                image,
                (cx + side * 1.35 * rx, cy + 0.3 * ry),
                (0.16 * rx, 0.11 * ry),
                CHEEK,
            );
        }
    }
    mouth(image, look, c, r, state, t);
}

fn mouth(image: &mut RgbImage, look: &Look, c: (f32, f32), r: (f32, f32), state: usize, t: u64) {
    let (cx, cy) = c;
    let (rx, ry) = r;
    let centre = (cx, cy + 0.45 * ry);
    match state {
        ENJOYMENT => {
            // The lower half of a thick ring.
            fill_half_ellipse(image, (cx, cy + 0.3 * ry), (0.5 * rx, 0.36 * ry), MOUTH);
            fill_half_ellipse(image, (cx, cy + 0.3 * ry), (0.4 * rx, 0.2 * ry), look.skin);
        }
        // A yawn two seconds in five (at ten frames a second).
        FATIGUE if t % 50 < 20 => fill_ellipse(image, centre, (0.2 * rx, 0.24 * ry), MOUTH),
        CONFUSION => fill_rect(
            image,
            [
                cx - 0.05 * rx,
                cy + 0.45 * ry,
                cx + 0.3 * rx,
                cy + 0.53 * ry,
            ],
            LIPS,
        ),
        _ => fill_rect(
            image,
            [cx - 0.3 * rx, cy + 0.45 * ry, cx + 0.3 * rx, cy + 0.55 * ry],
            LIPS,
        ),
    }
}

/// A book (engaged) or a phone (distraction) held at the chest, in both hands.
fn held_object(image: &mut RgbImage, look: &Look, c: (f32, f32), r: (f32, f32), state: usize) {
    let (cx, cy) = c;
    let (rx, ry) = r;
    let (top, bottom) = (cy + 2.1 * ry, cy + 3.0 * ry);
    let half = if state == DISTRACTION {
        let half = 0.32 * rx;
        fill_rect(image, [cx - half, top, cx + half, bottom], PHONE);
        let m = 0.07 * rx;
        fill_rect(
            image,
            [cx - half + m, top + m, cx + half - m, bottom - 2.0 * m],
            SCREEN,
        );
        half
    } else {
        let half = 1.1 * rx;
        fill_rect(image, [cx - half, top, cx + half, bottom], look.book);
        let m = 0.08 * rx;
        for x0 in [cx - half + m, cx + m] {
            fill_rect(image, [x0, top + m, x0 + half - 2.0 * m, bottom - m], PAGE);
        }
        for k in 1..4 {
            let y = top + (bottom - top) * k as f32 / 4.0;
            for x0 in [cx - half + 2.0 * m, cx + 2.0 * m] {
                fill_rect(
                    image,
                    [x0, y, x0 + half - 4.0 * m, y + 0.03 * ry + 1.0],
                    DARK,
                );
            }
        }
        half
    };
    for side in [-1.0, 1.0] {
        fill_ellipse(
            image,
            (cx + side * (half + 0.05 * rx), (top + bottom) / 2.0),
            (0.2 * rx, 0.22 * ry),
            look.skin,
        );
    }
}

/// Fills `b = [left, top, right, bottom]`, clipped to the image.
pub(super) fn fill_rect(image: &mut RgbImage, b: [f32; 4], colour: Rgb<u8>) {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (x0, y0) = (b[0].clamp(0.0, w) as u32, b[1].clamp(0.0, h) as u32);
    let (x1, y1) = (b[2].clamp(0.0, w) as u32, b[3].clamp(0.0, h) as u32);
    for y in y0..y1 {
        for x in x0..x1 {
            image.put_pixel(x, y, colour);
        }
    }
}

/// Fills the pixels whose centres `inside(dx, dy)` accepts, `dx, dy` relative to `centre`
/// and scaled by `radii`, within the ellipse's bounding box.
fn fill_where(
    image: &mut RgbImage,
    centre: (f32, f32),
    radii: (f32, f32),
    colour: Rgb<u8>,
    inside: impl Fn(f32, f32) -> bool,
) {
    let (cx, cy) = centre;
    let (rx, ry) = radii;
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (x0, y0) = (
        (cx - rx).clamp(0.0, w) as u32,
        (cy - ry).clamp(0.0, h) as u32,
    );
    let (x1, y1) = (
        (cx + rx).clamp(0.0, w) as u32,
        (cy + ry).clamp(0.0, h) as u32,
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = ((x as f32 + 0.5 - cx) / rx, (y as f32 + 0.5 - cy) / ry);
            if inside(dx, dy) {
                image.put_pixel(x, y, colour);
            }
        }
    }
}

pub(super) fn fill_ellipse(
    image: &mut RgbImage,
    centre: (f32, f32),
    radii: (f32, f32),
    colour: Rgb<u8>,
) {
    fill_where(image, centre, radii, colour, |dx, dy| {
        dx * dx + dy * dy <= 1.0
    });
}

/// The lower half of an ellipse.
fn fill_half_ellipse(image: &mut RgbImage, centre: (f32, f32), radii: (f32, f32), colour: Rgb<u8>) {
    fill_where(image, centre, radii, colour, |dx, dy| {
        dy >= 0.0 && dx * dx + dy * dy <= 1.0
    });
}

/// A segment from `a` to `b`, `thickness` pixels wide.
fn fill_line(image: &mut RgbImage, a: (f32, f32), b: (f32, f32), thickness: f32, colour: Rgb<u8>) {
    let centre = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
    let reach = (
        (a.0 - b.0).abs() / 2.0 + thickness,
        (a.1 - b.1).abs() / 2.0 + thickness,
    );
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let length2 = (vx * vx + vy * vy).max(f32::EPSILON);
    let half = thickness / 2.0;
    // Distance from the pixel to the segment, in pixels (dx, dy come scaled by `reach`).
    fill_where(image, centre, reach, colour, |dx, dy| {
        let (px, py) = (centre.0 + dx * reach.0 - a.0, centre.1 + dy * reach.1 - a.1);
        let k = ((px * vx + py * vy) / length2).clamp(0.0, 1.0);
        let (ex, ey) = (px - k * vx, py - k * vy);
        ex * ex + ey * ey <= half * half
    });
}

/// Adds a fixed noise pattern (as long as the image), shifted by `t` rows, to every value.
pub(super) fn add_noise(image: &mut RgbImage, noise: &[i8], t: u64) {
    if noise.is_empty() {
        return;
    }
    let shift = (t as usize).wrapping_mul(7 * image.width() as usize * 3) % noise.len();
    let pattern = noise[shift..].iter().chain(&noise[..shift]);
    for (v, &n) in image.as_mut().iter_mut().zip(pattern) {
        *v = v.saturating_add_signed(n);
    }
}

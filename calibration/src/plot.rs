//! PNG figures: the confusion matrix and the reliability diagram.
//!
//! Shapes are drawn by plotters' bitmap backend into an RGB buffer; text is drawn from the
//! 8x8 bitmap font of the `font8x8` crate (public domain glyphs compiled in), so figures
//! render the same on any machine, offline, with no font files or font libraries; the
//! buffer is encoded as PNG by `image`. Only ASCII is drawn (other characters become `?`).

use std::path::Path;

use caer::pipeline::model::bundle::NUM_CLASSES;
use plotters::prelude::*;

use crate::error::Error;
use crate::metrics::ReliabilityBin;

const BLUE: RGBColor = RGBColor(33, 102, 172);
const GREY: RGBColor = RGBColor(150, 150, 150);
const LIGHT: RGBColor = RGBColor(225, 225, 225);
const RED: RGBColor = RGBColor(214, 96, 77);

/// An RGB8 picture being drawn (also used by `caer-fleet report` for its PNG).
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// What [`Canvas::shapes`] draws on.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

impl Canvas {
    /// A white picture.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
        }
    }

    /// Draws shapes with plotters.
    pub fn shapes(
        &mut self,
        path: &Path,
        draw: impl FnOnce(
            &Area<'_>,
        ) -> Result<
            (),
            DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
        >,
    ) -> Result<(), Error> {
        let plot_error = |e: &dyn std::fmt::Display| Error::Plot {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let root = BitMapBackend::with_buffer(&mut self.pixels, (self.width, self.height))
            .into_drawing_area();
        draw(&root).map_err(|e| plot_error(&e))?;
        root.present().map_err(|e| plot_error(&e))
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels.
    pub fn text(&mut self, x: i32, y: i32, text: &str, scale: u32, color: RGBColor) {
        let scale = scale as i32;
        for (i, c) in text.chars().enumerate() {
            let code = if c.is_ascii() {
                c as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            let x0 = x + i as i32 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.fill(
                            x0 + col * scale,
                            y + row as i32 * scale,
                            scale,
                            scale,
                            color,
                        );
                    }
                }
            }
        }
    }

    /// A figure's title, subtitle and legend line, top left.
    pub fn header(&mut self, title: &str, subtitle: &str, legend: &str) {
        self.text(10, 10, title, 2, BLACK);
        self.text(10, 36, subtitle, 1, BLACK);
        self.text(10, 52, legend, 1, GREY);
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: u32) -> i32 {
        (text.chars().count() as u32 * 8 * scale) as i32
    }

    /// Draws `text` centred on `cx`.
    pub fn text_centred(&mut self, cx: i32, y: i32, text: &str, scale: u32, color: RGBColor) {
        self.text(
            cx - Self::text_width(text, scale) / 2,
            y,
            text,
            scale,
            color,
        );
    }

    /// Fills a rectangle.
    pub fn fill(&mut self, x: i32, y: i32, w: i32, h: i32, color: RGBColor) {
        for py in y.max(0)..(y + h).min(self.height as i32) {
            for px in x.max(0)..(x + w).min(self.width as i32) {
                let i = (py as usize * self.width as usize + px as usize) * 3;
                self.pixels[i..i + 3].copy_from_slice(&[color.0, color.1, color.2]);
            }
        }
    }

    /// Encodes the picture as PNG into `path`.
    pub fn save(self, path: &Path) -> Result<(), Error> {
        let image = image::RgbImage::from_raw(self.width, self.height, self.pixels)
            .expect("the buffer holds width * height pixels");
        image
            .save_with_format(path, image::ImageFormat::Png)
            .map_err(|e| Error::Plot {
                path: path.to_owned(),
                message: e.to_string(),
            })
    }
}

/// Linear blend from white (`t = 0`) to `to` (`t = 1`).
fn shade(t: f64, to: RGBColor) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |c: u8| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    RGBColor(mix(to.0), mix(to.1), mix(to.2))
}

/// Writes the confusion matrix (rows: true class, columns: predicted) as a PNG: cells shaded
/// by the row's share, with the count and the row percentage; `subtitle` under the title.
pub fn confusion_png(
    path: &Path,
    confusion: &[[u64; NUM_CLASSES]; NUM_CLASSES],
    classes: &[&str; NUM_CLASSES],
    subtitle: &str,
) -> Result<(), Error> {
    const CELL: i32 = 110;
    let (x0, y0) = (150, 120);
    let side = CELL * NUM_CLASSES as i32;
    let mut canvas = Canvas::new((x0 + side + 30) as u32, (y0 + side + 70) as u32);
    let rows: Vec<u64> = confusion.iter().map(|r| r.iter().sum()).collect();
    let share = |r: usize, c: usize| {
        if rows[r] == 0 {
            0.0
        } else {
            confusion[r][c] as f64 / rows[r] as f64
        }
    };

    canvas.shapes(path, |area| {
        for r in 0..NUM_CLASSES {
            for c in 0..NUM_CLASSES {
                let (x, y) = (x0 + c as i32 * CELL, y0 + r as i32 * CELL);
                area.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    shade(share(r, c), BLUE).filled(),
                ))?;
                area.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    GREY.stroke_width(1),
                ))?;
            }
        }
        area.draw(&Rectangle::new(
            [(x0, y0), (x0 + side, y0 + side)],
            BLACK.stroke_width(2),
        ))
    })?;

    canvas.header(
        "Confusion matrix",
        subtitle,
        "rows: true class, columns: predicted; count and share of the row",
    );
    canvas.text_centred(x0 + side / 2, y0 - 40, "predicted", 1, BLACK);
    canvas.text(10, y0 + side + 20, "true class: rows", 1, BLACK);
    for (k, name) in classes.iter().enumerate() {
        let centre = x0 + k as i32 * CELL + CELL / 2;
        canvas.text_centred(centre, y0 - 20, name, 1, BLACK);
        let label = format!("{name} ({})", rows[k]);
        canvas.text(
            x0 - 8 - Canvas::text_width(&label, 1),
            y0 + k as i32 * CELL + CELL / 2 - 4,
            &label,
            1,
            BLACK,
        );
    }
    for (r, row) in confusion.iter().enumerate() {
        for (c, count) in row.iter().enumerate() {
            let s = share(r, c);
            let color = if s > 0.5 { WHITE } else { BLACK };
            let (cx, y) = (x0 + c as i32 * CELL + CELL / 2, y0 + r as i32 * CELL);
            canvas.text_centred(cx, y + CELL / 2 - 20, &count.to_string(), 2, color);
            if rows[r] > 0 {
                canvas.text_centred(
                    cx,
                    y + CELL / 2 + 8,
                    &format!("{:.1}%", 100.0 * s),
                    1,
                    color,
                );
            }
        }
    }
    canvas.save(path)
}

/// Writes the reliability diagram as a PNG: per confidence bin, the accuracy (bars) against
/// the mean confidence (red marks; the diagonal is perfect calibration), and the clips per
/// bin underneath.
pub fn reliability_png(path: &Path, bins: &[ReliabilityBin], subtitle: &str) -> Result<(), Error> {
    const SIDE: i32 = 480;
    const HIST: i32 = 90;
    let (x0, y0) = (70, 90);
    let mut canvas = Canvas::new((x0 + SIDE + 40) as u32, (y0 + SIDE + HIST + 80) as u32);
    let to_x = |v: f64| x0 + (v * f64::from(SIDE)).round() as i32;
    let to_y = |v: f64| y0 + SIDE - (v * f64::from(SIDE)).round() as i32;
    let most = bins.iter().map(|b| b.clips).max().unwrap_or(0).max(1);
    let hist_top = y0 + SIDE + 40;

    canvas.shapes(path, |area| {
        for tick in 1..5 {
            let v = f64::from(tick) / 5.0;
            area.draw(&PathElement::new(
                vec![(x0, to_y(v)), (x0 + SIDE, to_y(v))],
                LIGHT.stroke_width(1),
            ))?;
            area.draw(&PathElement::new(
                vec![(to_x(v), y0), (to_x(v), y0 + SIDE)],
                LIGHT.stroke_width(1),
            ))?;
        }
        for bin in bins {
            let (left, right) = (to_x(bin.lower) + 1, to_x(bin.upper) - 1);
            if let (Some(accuracy), Some(confidence)) = (bin.accuracy, bin.confidence) {
                area.draw(&Rectangle::new(
                    [(left, to_y(accuracy)), (right, y0 + SIDE)],
                    BLUE.mix(0.85).filled(),
                ))?;
                area.draw(&Rectangle::new(
                    [(left, to_y(confidence) - 2), (right, to_y(confidence) + 2)],
                    RED.filled(),
                ))?;
            }
            let h = (bin.clips as f64 / most as f64 * f64::from(HIST)).round() as i32;
            area.draw(&Rectangle::new(
                [(left, hist_top + HIST - h), (right, hist_top + HIST)],
                GREY.filled(),
            ))?;
        }
        area.draw(&PathElement::new(
            vec![(x0, y0 + SIDE), (x0 + SIDE, y0)],
            BLACK.stroke_width(1),
        ))?;
        area.draw(&Rectangle::new(
            [(x0, y0), (x0 + SIDE, y0 + SIDE)],
            BLACK.stroke_width(2),
        ))?;
        area.draw(&PathElement::new(
            vec![(x0, hist_top + HIST), (x0 + SIDE, hist_top + HIST)],
            BLACK.stroke_width(1),
        ))
    })?;

    canvas.header(
        "Reliability diagram",
        subtitle,
        "bars: accuracy per confidence bin; red: mean confidence; diagonal: calibrated",
    );
    for tick in 0..=5 {
        let v = f64::from(tick) / 5.0;
        let label = format!("{v:.1}");
        canvas.text(
            x0 - 8 - Canvas::text_width(&label, 1),
            to_y(v) - 4,
            &label,
            1,
            BLACK,
        );
        canvas.text_centred(to_x(v), y0 + SIDE + 8, &label, 1, BLACK);
    }
    canvas.text(
        x0 + SIDE / 2 - 60,
        y0 + SIDE + 22,
        "confidence (top probability)",
        1,
        BLACK,
    );
    canvas.text(4, y0 - 16, "accuracy", 1, BLACK);
    canvas.text(
        x0,
        hist_top + HIST + 8,
        &format!("clips per bin (tallest: {most})"),
        1,
        BLACK,
    );
    canvas.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::reliability;

    fn dark_pixels(
        image: &image::RgbImage,
        x: std::ops::Range<u32>,
        y: std::ops::Range<u32>,
    ) -> usize {
        let mut n = 0;
        for py in y {
            for px in x.clone() {
                if image.get_pixel(px, py).0.iter().all(|&v| v < 60) {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn confusion_png_has_its_title_text_and_cells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("confusion.png");
        let mut m = [[0u64; 5]; 5];
        m[0][0] = 9;
        m[0][1] = 1;
        m[4][4] = 3;
        let classes = [
            "neutrality",
            "enjoyment",
            "confusion",
            "fatigue",
            "distraction",
        ];
        confusion_png(&path, &m, &classes, "UAR 45.0 WAR 92.3").expect("png");
        let image = image::open(&path).expect("decode").to_rgb8();
        assert_eq!(image.dimensions(), (150 + 550 + 30, 120 + 550 + 70));
        // The title is drawn in black where the background is white.
        assert!(dark_pixels(&image, 10..260, 10..26) > 100);
        // The (0, 0) cell is shaded dark blue (90 % of its row).
        let p = image.get_pixel(150 + 5, 120 + 5).0;
        assert!(p[2] > p[0] + 80, "{p:?}");
        // An empty row stays white.
        assert_eq!(image.get_pixel(150 + 5, 120 + 110 + 5).0, [255, 255, 255]);
    }

    #[test]
    fn glyphs_follow_the_font_bit_order() {
        let mut canvas = Canvas::new(8, 8);
        canvas.text(0, 0, "|", 1, BLACK);
        // '|' is a vertical bar in the middle columns of the cell.
        let column_dark = |x: usize| {
            (0..8)
                .filter(|y| canvas.pixels[(y * 8 + x) * 3] == 0)
                .count()
        };
        assert!(column_dark(3) >= 6 || column_dark(4) >= 6);
        assert_eq!(column_dark(0), 0);
    }

    #[test]
    fn reliability_png_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reliability.png");
        let labels = [0, 1, 2, 0];
        let logits = [
            [3.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [2.0, 0.0, 0.0, 0.0, 0.0],
            [9.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let (bins, ece) = reliability(&labels, &logits);
        reliability_png(&path, &bins, &format!("ECE {ece:.3}")).expect("png");
        let image = image::open(&path).expect("decode").to_rgb8();
        assert!(dark_pixels(&image, 10..300, 10..26) > 100);
    }
}

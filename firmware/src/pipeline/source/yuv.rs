//! Raw camera formats to RGB: packed YUYV (4:2:2) and semi-planar NV12 (4:2:0).
//!
//! Webcams encode with BT.601 coefficients in limited range (Y 16-235), which is what the
//! conversions assume. `stride` is the camera's `bytesperline` (bytes per row of the
//! buffer, at least `2 * width` for YUYV and `width` for NV12), which may include padding.
//! The conversion itself is `yuvutils-rs`'s (SIMD where the CPU has it).

use image::RgbImage;
use yuvutils_rs::{
    YuvBiPlanarImage, YuvConversionMode, YuvPackedImage, YuvRange, YuvStandardMatrix,
};

use super::SourceError;

fn raw_err(format: &'static str, width: u32, height: u32, reason: String) -> SourceError {
    SourceError::RawFrame {
        format,
        width,
        height,
        reason,
    }
}

fn check(
    format: &'static str,
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    min_stride: u64,
    needed: u64,
) -> Result<(), SourceError> {
    if width == 0 || height == 0 || width % 2 != 0 || (format == "NV12" && height % 2 != 0) {
        return Err(raw_err(
            format,
            width,
            height,
            "width (and NV12 height) must be even and not zero".into(),
        ));
    }
    if u64::from(stride) < min_stride {
        return Err(raw_err(
            format,
            width,
            height,
            format!("stride {stride} is under {min_stride} bytes"),
        ));
    }
    if (data.len() as u64) < needed {
        return Err(raw_err(
            format,
            width,
            height,
            format!("buffer holds {} bytes; needs {needed}", data.len()),
        ));
    }
    Ok(())
}

/// Converts a packed YUYV buffer (Y0 U Y1 V per pixel pair) to RGB.
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<RgbImage, SourceError> {
    let needed = u64::from(stride) * u64::from(height);
    check(
        "YUYV",
        data,
        width,
        height,
        stride,
        2 * u64::from(width),
        needed,
    )?;
    // yuvutils-rs 0.8 accepts packed 4:2:2 only without row padding: drop the padding.
    let row = 2 * width as usize;
    let tight: std::borrow::Cow<'_, [u8]> = if stride as usize == row {
        std::borrow::Cow::Borrowed(&data[..needed as usize])
    } else {
        data.chunks(stride as usize)
            .take(height as usize)
            .flat_map(|r| &r[..row])
            .copied()
            .collect()
    };
    let packed = YuvPackedImage {
        yuy: &tight,
        yuy_stride: row as u32,
        width,
        height,
    };
    let mut rgb = RgbImage::new(width, height);
    yuvutils_rs::yuyv422_to_rgb(
        &packed,
        &mut rgb,
        width * 3,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
    )
    .map_err(|e| raw_err("YUYV", width, height, e.to_string()))?;
    Ok(rgb)
}

/// Converts an NV12 buffer (Y plane, then interleaved U V at half resolution) to RGB.
pub fn nv12_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<RgbImage, SourceError> {
    let luma = u64::from(stride) * u64::from(height);
    check(
        "NV12",
        data,
        width,
        height,
        stride,
        u64::from(width),
        luma + luma / 2,
    )?;
    let (y_plane, uv_plane) = data.split_at(luma as usize);
    // yuvutils-rs 0.8 accepts the interleaved U V plane only without row padding (the Y
    // plane may have it): drop the padding.
    let uv_plane = &uv_plane[..(luma / 2) as usize];
    let row = width as usize;
    let uv_tight: std::borrow::Cow<'_, [u8]> = if stride as usize == row {
        std::borrow::Cow::Borrowed(uv_plane)
    } else {
        uv_plane
            .chunks(stride as usize)
            .flat_map(|r| &r[..row])
            .copied()
            .collect()
    };
    let image = YuvBiPlanarImage {
        y_plane,
        y_stride: stride,
        uv_plane: &uv_tight,
        uv_stride: width,
        width,
        height,
    };
    let mut rgb = RgbImage::new(width, height);
    yuvutils_rs::yuv_nv12_to_rgb(
        &image,
        &mut rgb,
        width * 3,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
        YuvConversionMode::Balanced,
    )
    .map_err(|e| raw_err("NV12", width, height, e.to_string()))?;
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BT.601 limited-range (Y, U, V) of white, black, red, green and blue.
    const COLOURS: [([u8; 3], [u8; 3]); 5] = [
        ([235, 128, 128], [255, 255, 255]),
        ([16, 128, 128], [0, 0, 0]),
        ([81, 90, 240], [255, 0, 0]),
        ([145, 54, 34], [0, 255, 0]),
        ([41, 240, 110], [0, 0, 255]),
    ];

    fn assert_close(rgb: &RgbImage, x: u32, y: u32, want: [u8; 3]) {
        let got = rgb.get_pixel(x, y).0;
        assert!(
            got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 4),
            "pixel ({x},{y}) is {got:?}, want {want:?}"
        );
    }

    #[test]
    fn yuyv_colours_convert_with_bt601_limited_range_and_padded_rows() {
        // Each colour fills a 2x2 block; rows padded by 6 bytes.
        let (width, height, stride) = (10u32, 2u32, 26u32);
        let mut data = vec![0xAAu8; (stride * height) as usize];
        for y in 0..height {
            for (i, (yuv, _)) in COLOURS.iter().enumerate() {
                let at = (y * stride) as usize + 4 * i;
                data[at..at + 4].copy_from_slice(&[yuv[0], yuv[1], yuv[0], yuv[2]]);
            }
        }
        let rgb = yuyv_to_rgb(&data, width, height, stride).expect("convert");
        for (i, (_, want)) in COLOURS.iter().enumerate() {
            for (dx, y) in [(0, 0), (1, 1)] {
                assert_close(&rgb, 2 * i as u32 + dx, y, *want);
            }
        }
    }

    #[test]
    fn nv12_colours_convert_per_2x2_block() {
        let (width, height) = (10u32, 2u32);
        let mut data = vec![0u8; (width * height * 3 / 2) as usize];
        for (i, (yuv, _)) in COLOURS.iter().enumerate() {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                data[(dy * width + 2 * i as u32 + dx) as usize] = yuv[0];
            }
            let uv = (width * height) as usize + 2 * i;
            data[uv..uv + 2].copy_from_slice(&[yuv[1], yuv[2]]);
        }
        let rgb = nv12_to_rgb(&data, width, height, width).expect("convert");
        for (i, (_, want)) in COLOURS.iter().enumerate() {
            assert_close(&rgb, 2 * i as u32 + 1, 1, *want);
        }
    }

    #[test]
    fn nv12_with_padded_rows_converts() {
        // A camera may report bytesperline > width (vivid does): both planes are padded.
        let (width, height, stride) = (10u32, 2u32, 16u32);
        let mut data = vec![0u8; (stride * height * 3 / 2) as usize];
        for (i, (yuv, _)) in COLOURS.iter().enumerate() {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                data[(dy * stride + 2 * i as u32 + dx) as usize] = yuv[0];
            }
            let uv = (stride * height) as usize + 2 * i;
            data[uv..uv + 2].copy_from_slice(&[yuv[1], yuv[2]]);
        }
        let rgb = nv12_to_rgb(&data, width, height, stride).expect("convert");
        for (i, (_, want)) in COLOURS.iter().enumerate() {
            assert_close(&rgb, 2 * i as u32, 0, *want);
        }
    }

    #[test]
    fn short_buffers_and_odd_sizes_are_transient_frame_errors() {
        let err = yuyv_to_rgb(&[0; 10], 4, 2, 8).expect_err("short");
        assert!(err.to_string().contains("needs 16"), "{err}");
        assert!(err.is_transient());
        assert!(
            yuyv_to_rgb(&[0; 16], 4, 2, 6).is_err(),
            "stride under 2*width"
        );
        assert!(nv12_to_rgb(&[0; 100], 3, 2, 3).is_err(), "odd width");
        assert!(
            nv12_to_rgb(&[0; 11], 4, 2, 4).is_err(),
            "no room for chroma"
        );
    }
}

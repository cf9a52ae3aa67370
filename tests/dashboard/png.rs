//! Just enough of a PNG decoder to look at Chromium's screenshots: 8-bit RGB or RGBA, not
//! interlaced (what headless Chromium writes). The zlib stream is inflated with flate2.

use std::collections::HashSet;
use std::io::Read;

use flate2::read::ZlibDecoder;

/// A decoded picture: its size and its pixels' colours (alpha dropped), row by row.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pixels: Vec<[u8; 3]>,
}

impl Image {
    /// The colour at (`x`, `y`), from the top left.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        self.pixels[y * self.width + x]
    }

    /// How many pixels have exactly `colour`.
    pub fn count(&self, colour: [u8; 3]) -> usize {
        self.pixels.iter().filter(|&&p| p == colour).count()
    }

    /// How many different colours the picture has.
    pub fn colours(&self) -> usize {
        self.pixels.iter().collect::<HashSet<_>>().len()
    }
}

/// `#rrggbb` as a colour.
pub fn rgb(hex: &str) -> [u8; 3] {
    let hex = hex.strip_prefix('#').unwrap_or(hex);
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("#rrggbb");
    [byte(0), byte(2), byte(4)]
}

/// Decodes `png`; panics on anything but an 8-bit RGB or RGBA non-interlaced PNG.
pub fn decode(png: &[u8]) -> Image {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let mut at = 8;
    let (mut width, mut height, mut channels) = (0, 0, 0);
    let mut data = Vec::new();
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let body = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                let (depth, colour_type, interlace) = (body[8], body[9], body[12]);
                assert_eq!(depth, 8, "bit depth");
                assert_eq!(interlace, 0, "interlaced");
                channels = match colour_type {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
            }
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len; // length, type, data, CRC
    }
    assert!(width > 0 && height > 0, "no IHDR");
    let mut raw = Vec::new();
    ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .expect("the image data inflates");
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "image data size");

    // Undo each row's filter (PNG spec §9) against the row above.
    let mut pixels = Vec::with_capacity(width * height);
    let mut previous = vec![0u8; stride];
    for row in raw.chunks(stride + 1) {
        let (filter, bytes) = (row[0], &row[1..]);
        let mut line = bytes.to_vec();
        for i in 0..stride {
            let a = if i >= channels { line[i - channels] } else { 0 };
            let b = previous[i];
            let c = if i >= channels {
                previous[i - channels]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                other => panic!("PNG filter {other}"),
            };
            line[i] = line[i].wrapping_add(predicted);
        }
        pixels.extend(line.chunks(channels).map(|p| [p[0], p[1], p[2]]));
        previous = line;
    }
    Image {
        width,
        height,
        pixels,
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

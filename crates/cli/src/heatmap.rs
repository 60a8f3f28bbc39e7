//! Attention heatmaps as SVG or PNG, drawn by hand: one panel per head,
//! query tokens down the rows, key tokens along the columns, a colour scale.
//!
//! Both formats are drawn through the same small [`Canvas`] so the layout is
//! written once. PNG text uses the 8x8 bitmap font of the `font8x8` crate
//! (ASCII, Latin-1, Greek, Hiragana; other characters show as a box).

use std::io::BufWriter;
use std::path::Path;

use anyhow::{bail, Context, Result};
use font8x8::UnicodeFonts;
use ndarray::ArrayView2;

/// One panel: a `(queries, keys)` matrix of probabilities and its caption.
pub struct Panel<'a> {
    pub probs: ArrayView2<'a, f32>,
    pub caption: String,
}

/// A figure: a title, the tokens on both axes, and rows of panels (one row per layer).
pub struct Figure<'a> {
    pub title: String,
    pub query_tokens: Vec<String>,
    pub key_tokens: Vec<String>,
    pub rows: Vec<Vec<Panel<'a>>>,
}

/// Colour for a probability in [0, 1]: a perceptual ramp from dark blue to yellow (viridis anchors).
fn colour(p: f32) -> [u8; 3] {
    const ANCHORS: [[f32; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let x = p.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f32;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let t = x - i as f32;
    let mix = |c: usize| (ANCHORS[i][c] * (1.0 - t) + ANCHORS[i + 1][c] * t).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// The drawing operations the layout needs.
trait Canvas {
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]);
    /// Text with its top-left corner at (x, y); `vertical` runs it bottom to top, ending at y.
    fn text(&mut self, x: usize, y: usize, text: &str, vertical: bool);
}

const CELL: usize = 16;
const CHAR: usize = 8;
const PAD: usize = 12;
/// Token labels are cut to this many characters.
const LABEL_CHARS: usize = 12;

/// A token as shown on an axis: cut to [`LABEL_CHARS`], with byte-level BPE's
/// space marker `Ġ` shown as `_`.
fn label(token: &str) -> String {
    token.chars().take(LABEL_CHARS).map(|c| if c == 'Ġ' { '_' } else { c }).collect()
}

/// Sizes of the layout, shared by both formats.
struct Layout {
    panel_w: usize,
    panel_h: usize,
    label: usize,
    width: usize,
    height: usize,
}

fn layout(fig: &Figure) -> Layout {
    let label = LABEL_CHARS
        .min(fig.query_tokens.iter().chain(&fig.key_tokens).map(|t| t.chars().count()).max().unwrap_or(1))
        * CHAR
        + 4;
    let panel_w = label + fig.key_tokens.len() * CELL + PAD;
    let panel_h = CHAR + 4 + label + fig.query_tokens.len() * CELL + PAD;
    let cols = fig.rows.iter().map(Vec::len).max().unwrap_or(1);
    let width = PAD + cols * panel_w + 60;
    let height = PAD + 2 * CHAR + PAD + fig.rows.len() * panel_h;
    Layout { panel_w, panel_h, label, width: width.max(fig.title.chars().count() * CHAR + 2 * PAD), height }
}

fn draw(fig: &Figure, canvas: &mut dyn Canvas, l: &Layout) {
    canvas.rect(0, 0, l.width, l.height, [255, 255, 255]);
    canvas.text(PAD, PAD, &fig.title, false);
    let top = PAD + 2 * CHAR + PAD;
    for (r, row) in fig.rows.iter().enumerate() {
        for (c, panel) in row.iter().enumerate() {
            let (x0, y0) = (PAD + c * l.panel_w, top + r * l.panel_h);
            canvas.text(x0, y0, &panel.caption, false);
            let grid_x = x0 + l.label;
            let grid_y = y0 + CHAR + 4 + l.label;
            // key tokens along the top, written upwards
            for (k, tok) in fig.key_tokens.iter().enumerate() {
                canvas.text(grid_x + k * CELL + (CELL - CHAR) / 2, grid_y - 2, &label(tok), true);
            }
            // query tokens down the left
            for (q, tok) in fig.query_tokens.iter().enumerate() {
                let t = label(tok);
                let w = t.chars().count() * CHAR;
                canvas.text(grid_x - 4 - w, grid_y + q * CELL + (CELL - CHAR) / 2, &t, false);
            }
            for ((q, k), &p) in panel.probs.indexed_iter() {
                canvas.rect(grid_x + k * CELL, grid_y + q * CELL, CELL, CELL, colour(p));
            }
        }
    }
    // the colour scale, 0 at the bottom, 1 at the top
    let (bx, by, bh) = (l.width - 44, top + l.label, 120.min(l.height.saturating_sub(top + l.label + PAD)).max(20));
    for i in 0..bh {
        canvas.rect(bx, by + i, 12, 1, colour(1.0 - i as f32 / (bh - 1) as f32));
    }
    canvas.text(bx + 14, by, "1", false);
    canvas.text(bx + 14, by + bh - CHAR, "0", false);
}

/// SVG: rectangles and text elements; the viewer renders the real glyphs.
struct Svg {
    body: String,
}

impl Canvas for Svg {
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, [r, g, b]: [u8; 3]) {
        self.body +=
            &format!("<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"#{r:02x}{g:02x}{b:02x}\"/>\n");
    }

    fn text(&mut self, x: usize, y: usize, text: &str, vertical: bool) {
        let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let baseline = y + CHAR;
        if vertical {
            self.body += &format!(
                "<text x=\"{x}\" y=\"{y}\" transform=\"rotate(-90 {x} {y}) translate(0 {CHAR})\" font-family=\"monospace\" font-size=\"11\">{escaped}</text>\n"
            );
        } else {
            self.body += &format!(
                "<text x=\"{x}\" y=\"{baseline}\" font-family=\"monospace\" font-size=\"11\">{escaped}</text>\n"
            );
        }
    }
}

/// PNG: an RGB pixel buffer.
struct Raster {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Raster {
    fn put(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }
}

fn glyph(c: char) -> [u8; 8] {
    [&font8x8::BASIC_FONTS as &dyn UnicodeFonts, &font8x8::LATIN_FONTS, &font8x8::GREEK_FONTS, &font8x8::HIRAGANA_FONTS]
        .iter()
        .find_map(|f| f.get(c))
        .unwrap_or([0xff, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0xff])
}

impl Canvas for Raster {
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, rgb);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, vertical: bool) {
        for (n, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (gy, bits) in rows.iter().enumerate() {
                for gx in 0..8 {
                    if bits & (1 << gx) != 0 {
                        // upright: (x + n*8 + gx, y + gy); vertical: rotated 90° anticlockwise, ending at y
                        let (px, py) = if vertical {
                            (x + gy, (y + 1).saturating_sub((n + 1) * CHAR) + (7 - gx))
                        } else {
                            (x + n * CHAR + gx, y + gy)
                        };
                        self.put(px, py, [0, 0, 0]);
                    }
                }
            }
        }
    }
}

/// Renders the figure to `path`; the format follows the extension (`.svg` or `.png`).
///
/// # Errors
/// On another extension or a write failure.
pub fn render(fig: &Figure, path: &Path) -> Result<(usize, usize)> {
    let l = layout(fig);
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            let mut svg = Svg { body: String::new() };
            draw(fig, &mut svg, &l);
            let doc = format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\">\n{}</svg>\n",
                l.width, l.height, l.width, l.height, svg.body
            );
            std::fs::write(path, doc).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Some("png") => {
            let mut raster = Raster { width: l.width, height: l.height, pixels: vec![255; 3 * l.width * l.height] };
            draw(fig, &mut raster, &l);
            let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut encoder = png::Encoder::new(BufWriter::new(file), l.width as u32, l.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().context("cannot write the PNG header")?;
            writer.write_image_data(&raster.pixels).context("cannot write the PNG image")?;
        }
        _ => bail!("--out must end in .svg or .png, got {}", path.display()),
    }
    Ok((l.width, l.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_ramp_ends() {
        assert_eq!(colour(0.0), [68, 1, 84]);
        assert_eq!(colour(1.0), [253, 231, 37]);
    }
}

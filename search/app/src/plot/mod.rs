//! Every picture genas draws, as self-contained SVG, and [`svg_to_png`], which rasterises any
//! of them with the bundled DejaVu Sans so a PNG looks the same on every machine:
//!
//! - `front`: the search's Pareto plot (`genas search`, `genas front`);
//! - `chart`: scatter and line charts, which the report's plots are drawn with;
//! - `anytime`: the anytime hypervolume curves of simulated searches (`genas bench search`).

pub mod anytime;
pub mod chart;
pub mod front;

/// DejaVu Sans (Bitstream Vera licence; see `search/app/assets/README.md`).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Renders an SVG genas wrote to PNG bytes at `scale` pixels per SVG unit, with the bundled
/// font standing in for every font family.
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options {
        font_family: "DejaVu Sans".into(),
        ..usvg::Options::default()
    };
    let db = opt.fontdb_mut();
    db.load_font_data(FONT.to_vec());
    db.set_sans_serif_family("DejaVu Sans");
    db.set_serif_family("DejaVu Sans");
    db.set_monospace_family("DejaVu Sans");
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("SVG not readable: {e}"))?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).ceil() as u32,
        (size.height() * scale).ceil() as u32,
    );
    let mut pixmap =
        tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("cannot make a {w}×{h} image"))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding: {e}"))
}

/// Writes `svg` to `path`: as it is for a `.svg` name, rasterised for a `.png` one; any other
/// name is refused with one line, and nothing is written.
pub fn write(svg: String, path: &std::path::Path) -> anyhow::Result<()> {
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => svg.into_bytes(),
        Some(e) if e.eq_ignore_ascii_case("png") => {
            svg_to_png(&svg, 2.0).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        _ => anyhow::bail!(
            "{}: the plot is written as SVG or PNG; name a .svg or .png file",
            path.display()
        ),
    };
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

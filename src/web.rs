//! The pages and assets, embedded so the binary is the whole product.

/// `/`: the dashboard.
pub const INDEX_HTML: &str = include_str!("web/index.html");
/// `/stream`: the live viewer.
pub const STREAM_HTML: &str = include_str!("web/stream.html");
/// Shared styles.
pub const STYLE_CSS: &str = include_str!("web/style.css");
/// The viewer's script.
pub const STREAM_JS: &str = include_str!("web/stream.js");

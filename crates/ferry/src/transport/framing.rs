//! How a transport delimits frames: the codec shapes its bytes to fit.

/// How frames are delimited on the link; fixed by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// One JSON text line per frame (stdio).
    Lines,
    /// The transport delimits frames; the body carries raw attachments.
    LengthPrefixed,
}

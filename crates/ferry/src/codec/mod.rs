//! Envelope <-> bytes.
//!
//! A codec turns an [`Envelope`] and its binary attachments into one frame and back. Two
//! framings exist:
//!
//! - [`Framing::Lines`] (stdio): the frame is one JSON text line; attachments travel
//!   inline as base64 (`attachments[i].data_base64`). Only [`CodecKind::Json`] is allowed.
//! - [`Framing::LengthPrefixed`] (socket, tcp, shm, memory): the transport delimits frames;
//!   a frame's body is `u32 LE header length | header | attachment bytes...`, the header
//!   encoded by the chosen codec and listing each attachment's size. Attachments are never
//!   base64 here and are sent without being copied into the header buffer.
//!
//! Sizes are checked against the maximum frame size before anything is allocated for them.

mod bincode_wire;
mod body;
mod compact;
mod depth;
mod error;
pub mod json_text;
mod msgpack;
mod view;

/// How frames are delimited: a transport's property ([`crate::transport::Framing`]), which
/// the codec follows.
pub use crate::transport::Framing;
pub use body::DecodedFrame;
pub use compact::{request_id_of, CompactError, CompactWire};
pub(crate) use depth::check as check_data_depth;
pub use depth::MAX_DATA_DEPTH;
pub use error::{AttachmentError, CodecError, HeaderError};
pub(crate) use view::{EnvelopeRef, Metas};

use crate::protocol::Envelope;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Calls `f` with a framed message as the parts a transport sends: `header`, then each
/// attachment (on the stack for up to three attachments, no allocation).
#[inline]
pub(crate) fn with_parts<R>(
    header: &[u8],
    attachments: &[&[u8]],
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    const STACK: usize = 4;
    if attachments.len() < STACK {
        let mut parts: [&[u8]; STACK] = [&[]; STACK];
        parts[0] = header;
        parts[1..=attachments.len()].copy_from_slice(attachments);
        f(&parts[..=attachments.len()])
    } else {
        let mut parts = Vec::with_capacity(1 + attachments.len());
        parts.push(header);
        parts.extend_from_slice(attachments);
        f(&parts)
    }
}

/// Calls `f` with `items` as byte slices (on the stack for up to four, no allocation).
#[inline]
pub(crate) fn with_slices<T: AsRef<[u8]>, R>(items: &[T], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    collect_slices(items.iter().map(AsRef::as_ref), f)
}

/// Calls `f` with the slices `items` yields, in order: on the stack for up to four (no
/// allocation), in a `Vec` past that.
#[inline]
pub(crate) fn collect_slices<'a, R>(
    mut items: impl Iterator<Item = &'a [u8]>,
    f: impl FnOnce(&[&'a [u8]]) -> R,
) -> R {
    const STACK: usize = 4;
    let mut few: [&[u8]; STACK] = [&[]; STACK];
    let mut len = 0;
    while let Some(item) = items.next() {
        if len == STACK {
            let mut all = few.to_vec();
            all.push(item);
            all.extend(items);
            return f(&all);
        }
        few[len] = item;
        len += 1;
    }
    f(&few[..len])
}

/// Refuses a frame (`header` then `attachments`) longer than `max`: what every encoder
/// checks after writing its header.
fn check_frame_size(header: &[u8], attachments: &[&[u8]], max: usize) -> Result<(), CodecError> {
    let size = header.len() + attachments.iter().map(|a| a.len()).sum::<usize>();
    if size > max {
        return Err(CodecError::FrameTooLarge { size, max });
    }
    Ok(())
}

/// Default maximum frame size: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// The serialization used for envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CodecKind {
    /// JSON: every language, every transport.
    #[default]
    Json,
    /// MessagePack (named fields), framed transports only.
    #[serde(rename = "msgpack")]
    MsgPack,
    /// bincode 1.3 (Rust peers only), framed transports only.
    Bincode,
}

impl CodecKind {
    /// Every codec this build speaks.
    pub const ALL: [CodecKind; 3] = [CodecKind::Json, CodecKind::MsgPack, CodecKind::Bincode];

    /// The name used in configuration, flags and the `ready` event.
    pub const fn as_str(self) -> &'static str {
        match self {
            CodecKind::Json => "json",
            CodecKind::MsgPack => "msgpack",
            CodecKind::Bincode => "bincode",
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CodecKind {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CodecKind::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| CodecError::UnknownCodec(s.to_owned()))
    }
}

/// Encodes and decodes frames for one link.
///
/// ```
/// use ferry::codec::{Codec, CodecKind, Framing};
/// use ferry::protocol::Envelope;
///
/// let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, 1 << 20)?;
/// let req = Envelope::request("r-1", "echo", serde_json::json!({"x": 1}));
/// let mut header = Vec::new();
/// let image = vec![7u8; 1000];
/// codec.encode(&req, &[&image], &mut header)?;
/// // A transport sends `header` then the attachment bytes as one frame.
/// let frame = [header.as_slice(), image.as_slice()].concat();
/// let decoded = codec.decode(&frame)?;
/// assert_eq!(decoded.envelope.operation.as_deref(), Some("echo"));
/// assert_eq!(decoded.attachment(&frame, 0), Some(&image[..]));
/// # Ok::<(), ferry::codec::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    kind: CodecKind,
    framing: Framing,
    max_frame: usize,
}

impl Codec {
    /// A codec; refuses combinations that cannot work (a binary codec on a line link).
    pub fn new(kind: CodecKind, framing: Framing, max_frame: usize) -> Result<Self, CodecError> {
        if framing == Framing::Lines && kind != CodecKind::Json {
            return Err(CodecError::CodecNotLineSafe(kind));
        }
        Ok(Codec {
            kind,
            framing,
            max_frame,
        })
    }

    /// The serialization.
    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The maximum frame size in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Encodes `envelope` into `out` (cleared first). With [`Framing::LengthPrefixed`] the
    /// frame is `out` followed by each attachment, which the caller hands to the transport
    /// as separate parts; with [`Framing::Lines`] the attachments are inside `out`.
    pub fn encode(
        &self,
        envelope: &Envelope,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.encode_ref(&EnvelopeRef::from(envelope), attachments, out)
    }

    /// [`encode`](Self::encode) from a borrowed view (the worker runtime and the
    /// connection send through this without building an owned envelope).
    #[inline]
    pub(crate) fn encode_ref(
        &self,
        envelope: &EnvelopeRef<'_>,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        match self.framing {
            Framing::Lines => body::encode_line(envelope, attachments, out)?,
            Framing::LengthPrefixed => {
                let sized = Metas {
                    metas: envelope.attachments.metas,
                    sizes: Some(attachments),
                };
                body::encode_framed(self.kind, envelope, &sized, out)?
            }
        }
        depth::check(envelope.data, out.len())?;
        self.check_size(out, attachments)
    }

    fn check_size(&self, out: &[u8], attachments: &[&[u8]]) -> Result<(), CodecError> {
        check_frame_size(out, attachments, self.max_frame)
    }

    /// [`decode`](Self::decode) into `place`, which it replaces (only a compact link reuses
    /// what a place holds, see [`CompactWire::decode_into`]); so both kinds of link decode
    /// through one call. After an error `place` is unchanged.
    ///
    /// ```
    /// use ferry::codec::{Codec, CodecKind, DecodedFrame, Framing};
    /// use ferry::protocol::Envelope;
    /// let codec = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20)?;
    /// let mut line = Vec::new();
    /// codec.encode(&Envelope::request("r-1", "echo", serde_json::json!(1)), &[], &mut line)?;
    /// let mut place = DecodedFrame::default();
    /// codec.decode_into(&line, &mut place)?;
    /// assert_eq!(place.envelope.operation.as_deref(), Some("echo"));
    /// assert!(codec.decode_into(b"not json", &mut place).is_err());
    /// assert_eq!(place.envelope.message_id, "r-1");
    /// # Ok::<(), ferry::codec::CodecError>(())
    /// ```
    pub fn decode_into(&self, frame: &[u8], place: &mut DecodedFrame) -> Result<(), CodecError> {
        *place = self.decode(frame)?;
        Ok(())
    }

    /// Decodes one frame. Attachments are located, not copied: read them with
    /// [`DecodedFrame::attachment`] over the same `frame` slice (or they are already
    /// decoded from base64 on a line link).
    pub fn decode(&self, frame: &[u8]) -> Result<DecodedFrame, CodecError> {
        if frame.len() > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                size: frame.len(),
                max: self.max_frame,
            });
        }
        let decoded = match self.framing {
            Framing::Lines => body::decode_line(frame)?,
            Framing::LengthPrefixed => body::decode_framed(self.kind, frame, 0)?,
        };
        depth::check_decoded(self.kind, decoded.envelope.data.as_ref(), frame.len())?;
        Ok(decoded)
    }

    /// The `request_id` that a frame [`decode`](Self::decode) refused still names, where
    /// the codec can read it without the rest (a host fails that request instead of letting
    /// it wait). `None` when it cannot be read. Only for frames that failed: it reads
    /// leniently and checks nothing else.
    ///
    /// ```
    /// use ferry::codec::{Codec, CodecKind, Framing};
    ///
    /// let codec = Codec::new(CodecKind::Json, Framing::Lines, 1 << 20).unwrap();
    /// // An answer whose attachment is not base64: refused, but its request is known.
    /// let line = br#"{"version":1,"message_id":"w-2","request_id":"r-7","type":"response",
    ///     "attachments":[{"size":3,"data_base64":"!!!"}]}"#;
    /// assert!(codec.decode(line).is_err());
    /// assert_eq!(codec.answer_id(line).as_deref(), Some("r-7"));
    /// assert_eq!(codec.answer_id(b"not json"), None);
    /// ```
    pub fn answer_id(&self, frame: &[u8]) -> Option<String> {
        match self.framing {
            Framing::Lines => body::json_request_id(frame),
            Framing::LengthPrefixed => body::framed_request_id(self.kind, frame, 0),
        }
    }
}

#[cfg(test)]
mod tests;

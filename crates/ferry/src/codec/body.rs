//! Frame bodies: the header plus attachments, for both framings.

use super::view::{EnvelopeRef, Metas};
use super::{bincode_wire, msgpack, AttachmentError, CodecError, CodecKind, HeaderError};
use crate::protocol::{AttachmentMeta, Envelope, MessageType};
use base64::Engine as _;
use std::ops::Range;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A decoded frame: the envelope and where its attachments are.
#[derive(Debug)]
pub struct DecodedFrame {
    /// The envelope, version already checked.
    pub envelope: Envelope,
    /// Attachments located in the frame (framed links).
    ranges: Ranges,
    /// Attachments decoded from base64 (line links).
    inline: Vec<Vec<u8>>,
    /// The number of the request's id as a compact header carries it (compact frames only).
    id_number: Option<u64>,
}

/// Where attachments are in a frame: the first two in place, any more in a vector (a
/// frame with one or two attachments allocates nothing for them).
#[derive(Debug, Default)]
struct Ranges {
    few: [Range<usize>; 2],
    len: usize,
    more: Vec<Range<usize>>,
}

impl Ranges {
    fn push(&mut self, r: Range<usize>) {
        match self.few.get_mut(self.len) {
            Some(slot) => *slot = r,
            None => self.more.push(r),
        }
        self.len += 1;
    }

    fn get(&self, i: usize) -> Option<&Range<usize>> {
        if i >= self.len {
            return None;
        }
        self.few
            .get(i)
            .or_else(|| self.more.get(i - self.few.len()))
    }
}

/// The longest text buffer [`DecodedFrame::recycle`] keeps for the next frame.
const SPARE_TEXT_MAX: usize = 256;

/// The allocations a decoded frame leaves for the next decode into it (see
/// [`DecodedFrame::recycle`]): two texts (its id, its operation) and its emptied attachment
/// list.
pub(super) struct Spare {
    pub(super) id: String,
    pub(super) operation: String,
    pub(super) metas: Vec<AttachmentMeta>,
}

impl Default for DecodedFrame {
    /// An empty frame (a request with no id) to decode into, e.g. with
    /// [`CompactWire::decode_into`](super::CompactWire::decode_into).
    fn default() -> Self {
        DecodedFrame::located(Envelope::new(MessageType::Request, String::new()))
    }
}

impl DecodedFrame {
    /// A frame whose attachments are added with [`push_range`](Self::push_range).
    pub(super) fn located(envelope: Envelope) -> Self {
        DecodedFrame {
            envelope,
            ranges: Ranges::default(),
            inline: Vec::new(),
            id_number: None,
        }
    }

    /// The number of the request's id (`r-<n>`: the message id of a request, the
    /// `request_id` of anything else) when the frame carried it as a number (a compact
    /// header): a host's pending key without parsing the text back.
    pub(crate) fn id_number(&self) -> Option<u64> {
        self.id_number
    }

    pub(super) fn set_id_number(&mut self, n: u64) {
        self.id_number = Some(n);
    }

    /// Makes this a fresh [`located`](Self::located) frame of `kind` and returns the
    /// buffers the old one held, emptied, so a decode into it allocates nothing for them.
    pub(super) fn recycle(&mut self, kind: MessageType) -> Spare {
        // The buffers are taken out and the rest reset where it lies (replacing the whole
        // envelope copied it out and back, 352 bytes per message).
        let env = &mut self.envelope;
        let mut spare = Spare {
            id: std::mem::take(&mut env.message_id),
            operation: env.operation.take().unwrap_or_default(),
            metas: std::mem::take(&mut env.attachments),
        };
        let request_id = env.request_id.take();
        env.reset(kind);
        self.ranges.len = 0;
        self.ranges.more.clear();
        self.inline.clear();
        self.id_number = None;
        // A response's id is its `request_id`: whichever text has no buffer takes it.
        if let Some(request_id) = request_id {
            if spare.id.capacity() == 0 {
                spare.id = request_id;
            } else if spare.operation.capacity() == 0 {
                spare.operation = request_id;
            }
        }
        // A long operation name sent once is not held for the connection's life.
        for text in [&mut spare.id, &mut spare.operation] {
            if text.capacity() > SPARE_TEXT_MAX {
                *text = String::new();
            }
            text.clear();
        }
        spare.metas.clear();
        spare
    }

    /// Locates the next attachment at `range` of the frame.
    pub(super) fn push_range(&mut self, range: Range<usize>) {
        self.ranges.push(range);
    }

    /// How many attachments the frame has.
    pub fn attachment_count(&self) -> usize {
        self.ranges.len + self.inline.len()
    }

    /// Attachment `i`, borrowed from `frame` (the slice that was decoded) without a copy.
    pub fn attachment<'a>(&'a self, frame: &'a [u8], i: usize) -> Option<&'a [u8]> {
        if let Some(r) = self.ranges.get(i) {
            return frame.get(r.clone());
        }
        self.inline.get(i).map(Vec::as_slice)
    }

    /// Runs `f` on the attachments, borrowed from `frame`, in order (on the stack for up
    /// to four: no allocation for a typical answer).
    pub(crate) fn with_attachments<R>(&self, frame: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> R {
        super::collect_slices(
            (0..self.attachment_count()).filter_map(|i| self.attachment(frame, i)),
            f,
        )
    }

    /// Every attachment copied out, for callers that keep them past the frame buffer.
    pub fn attachments_owned(&self, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut owned = Vec::with_capacity(self.attachment_count());
        owned.extend(
            (0..self.attachment_count())
                .filter_map(|i| self.attachment(frame, i).map(<[u8]>::to_vec)),
        );
        owned
    }
}

/// Appends `envelope` as one JSON line; `attachments`, if any, replace its own metadata
/// (sizes set, bytes inline as base64, names and paths kept).
pub(super) fn encode_line(
    envelope: &EnvelopeRef<'_>,
    attachments: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let header_err = |e: serde_json::Error| CodecError::Header {
        codec: CodecKind::Json,
        source: HeaderError::serde(e),
    };
    if attachments.is_empty() {
        return serde_json::to_writer(out, envelope).map_err(header_err);
    }
    let sized = Metas {
        metas: envelope.attachments.metas,
        sizes: Some(attachments),
    };
    let inline: Vec<AttachmentMeta> = attachments
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let m = sized.get(i);
            let owned = |s: Option<&str>| s.map(str::to_owned);
            AttachmentMeta {
                name: owned(m.name),
                content_type: owned(m.content_type),
                size: m.size,
                data_base64: Some(B64.encode(bytes)),
                path: owned(m.path),
            }
        })
        .collect();
    let with_inline = EnvelopeRef {
        attachments: Metas {
            metas: &inline,
            sizes: None,
        },
        ..*envelope
    };
    serde_json::to_writer(out, &with_inline).map_err(header_err)
}

pub(super) fn decode_line(frame: &[u8]) -> Result<DecodedFrame, CodecError> {
    let text = std::str::from_utf8(frame).map_err(|_| CodecError::NotUtf8)?;
    let mut envelope: Envelope = serde_json::from_str(text).map_err(|e| CodecError::Header {
        codec: CodecKind::Json,
        source: HeaderError::serde(e),
    })?;
    envelope.check_version()?;
    let mut inline = Vec::with_capacity(envelope.attachments.len());
    for (index, meta) in envelope.attachments.iter_mut().enumerate() {
        let bytes = match (meta.data_base64.take(), &meta.path) {
            (Some(b64), _) => B64
                .decode(b64.as_bytes())
                .map_err(|e| CodecError::Attachment {
                    index,
                    source: AttachmentError::Base64(Box::new(e)),
                })?,
            (None, Some(path)) => read_attachment_file(path, meta.size)
                .map_err(|source| CodecError::Attachment { index, source })?,
            (None, None) => {
                return Err(CodecError::Attachment {
                    index,
                    source: AttachmentError::NoData,
                })
            }
        };
        if bytes.len() as u64 != meta.size {
            return Err(CodecError::Attachment {
                index,
                source: AttachmentError::SizeMismatch {
                    announced: meta.size,
                    actual: bytes.len() as u64,
                },
            });
        }
        inline.push(bytes);
    }
    Ok(DecodedFrame {
        envelope,
        ranges: Ranges::default(),
        inline,
        id_number: None,
    })
}

/// The bytes of an attachment sent by `path`: a regular file (a FIFO or a device such as
/// `/dev/zero` would block the reader or grow without end), read up to one byte past the
/// announced `size`, so a file longer than announced costs no more than that.
fn read_attachment_file(path: &str, size: u64) -> Result<Vec<u8>, AttachmentError> {
    use std::io::Read as _;
    let file_err = |source| AttachmentError::File {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(file_err)?;
    if !meta.is_file() {
        return Err(AttachmentError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() != size {
        return Err(AttachmentError::FileSizeMismatch {
            path: path.to_owned(),
            announced: size,
            actual: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(size.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(file_err)?;
    Ok(bytes)
}

/// Appends the framed header of `envelope` with `attachments` in place of its own.
pub(super) fn encode_framed(
    kind: CodecKind,
    envelope: &EnvelopeRef<'_>,
    attachments: &Metas<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    // Appended: a compact link puts a marker byte first.
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let header_err = |source: HeaderError| CodecError::Header {
        codec: kind,
        source,
    };
    let sized = || EnvelopeRef {
        attachments: *attachments,
        ..*envelope
    };
    match kind {
        CodecKind::Json => serde_json::to_writer(&mut *out, &sized())
            .map_err(|e| header_err(HeaderError::serde(e)))?,
        CodecKind::MsgPack => msgpack::encode(envelope, attachments, out).map_err(header_err)?,
        CodecKind::Bincode => bincode_wire::encode(&sized(), out).map_err(header_err)?,
    }
    let header_len =
        u32::try_from(out.len() - start - 4).map_err(|_| CodecError::FrameTooLarge {
            size: out.len(),
            max: u32::MAX as usize,
        })?;
    out[start..start + 4].copy_from_slice(&header_len.to_le_bytes());
    Ok(())
}

/// The envelope header of a length-prefixed frame whose header starts at `start`.
fn header_of(frame: &[u8], start: usize) -> Result<&[u8], CodecError> {
    let len_bytes: [u8; 4] = frame
        .get(start..start + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CodecError::Truncated("no header length"))?;
    let header_len = u32::from_le_bytes(len_bytes) as usize;
    frame
        .get(start + 4..(start + 4).saturating_add(header_len))
        .ok_or_else(|| CodecError::Truncated("header shorter than announced"))
}

/// The `request_id` a length-prefixed frame that did not decode still names (its header
/// at `start`), read as little of the header as each codec allows.
pub(super) fn framed_request_id(kind: CodecKind, frame: &[u8], start: usize) -> Option<String> {
    let header = header_of(frame, start).ok()?;
    match kind {
        CodecKind::Json => json_request_id(header),
        CodecKind::MsgPack => msgpack::request_id(header),
        CodecKind::Bincode => bincode_wire::request_id(header),
    }
}

/// The `request_id` of a JSON envelope (a line, or a framed header) that did not decode.
/// Only an object with the envelope's own `version` and `type` keys counts: on a line link
/// that tells a worker's envelope with a bad field from a stray print, even a JSON log line
/// that mentions a `request_id`. The other fields are only checked to be JSON. `None` past
/// serde_json's nesting limit.
pub(super) fn json_request_id(text: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(rename = "version")]
        _version: serde::de::IgnoredAny,
        #[serde(rename = "type")]
        _kind: serde::de::IgnoredAny,
        #[serde(default)]
        request_id: Option<String>,
    }
    serde_json::from_slice::<Marked>(text).ok()?.request_id
}

/// Decodes the framed body that starts at `start` of `frame` (0, or 1 behind a compact
/// link's marker byte); attachment ranges are offsets into the whole `frame`.
pub(super) fn decode_framed(
    kind: CodecKind,
    frame: &[u8],
    start: usize,
) -> Result<DecodedFrame, CodecError> {
    let header = header_of(frame, start)?;
    let header_len = header.len();
    let header_err = |source: HeaderError| CodecError::header(kind, source);
    // Decoded in place where the codec allows: an envelope is large, and every move of
    // one is a copy.
    let mut decoded = DecodedFrame::default();
    match kind {
        CodecKind::Json => {
            decoded.envelope =
                serde_json::from_slice(header).map_err(|e| header_err(HeaderError::serde(e)))?
        }
        CodecKind::MsgPack => {
            msgpack::decode_into(header, &mut decoded.envelope).map_err(header_err)?
        }
        CodecKind::Bincode => {
            decoded.envelope = bincode_wire::decode(header).map_err(header_err)?
        }
    }
    decoded.envelope.check_version()?;
    let mut offset = start + 4 + header_len;
    let ranges = &mut decoded.ranges;
    for meta in &decoded.envelope.attachments {
        let size =
            usize::try_from(meta.size).map_err(|_| CodecError::Truncated("attachment size"))?;
        let end = offset
            .checked_add(size)
            .filter(|end| *end <= frame.len())
            .ok_or_else(|| CodecError::Truncated("attachments shorter than announced"))?;
        ranges.push(offset..end);
        offset = end;
    }
    if offset != frame.len() {
        return Err(CodecError::Truncated("bytes after the last attachment"));
    }
    Ok(decoded)
}

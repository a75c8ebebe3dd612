//! The compact frame header: a fixed little-endian layout for the hot messages (request,
//! response, cancel), negotiated in the handshake; every other message travels as an
//! envelope frame behind a one-byte marker. The wire contract is docs/protocol.md,
//! section "Compact frames".
//!
//! ```text
//! offset size field
//!  0     1    kind: 0 envelope frame follows, 1 request, 2 response, 3 cancel
//!  1     1    flags: 0x01 data, 0x02 operation by name, 0x04 deadline,
//!             0x08 / 0x10 / 0x20 metric processing_time_ms / memory_usage_mb / gpu_utilization
//!  2     1    priority: 0 normal, 1 high, 2 low
//!  3     1    attachment count n
//!  4     4    operation: index into `ready.operations`, or the name's length in bytes
//!  8     8    request id (the n of the host's `r-<n>`)
//! 16     4    deadline_ms
//! 20     4    data length
//! 24     4n   attachment sizes
//!        8m   one f64 per metric flag, in flag order
//!             operation name (flag 0x02), data (in the link's codec), attachments
//! ```

use super::body::{self, DecodedFrame};
use super::view::{EnvelopeRef, Metas};
use super::{CodecError, CodecKind, HeaderError};
use crate::protocol::{
    AttachmentMeta, Envelope, IdGenerator, MessageType, Metrics, Priority, ReadyInfo, RequestId,
    PROTOCOL_VERSION,
};
use serde_json::Value;

/// The first byte of a compact frame.
mod kind {
    pub const ENVELOPE: u8 = 0;
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CANCEL: u8 = 3;
}

/// The flag bits of byte 1.
mod flag {
    pub const DATA: u8 = 0x01;
    pub const OP_NAME: u8 = 0x02;
    pub const DEADLINE: u8 = 0x04;
    pub const METRIC_TIME: u8 = 0x08;
    pub const METRIC_MEMORY: u8 = 0x10;
    pub const METRIC_GPU: u8 = 0x20;
    pub const KNOWN: u8 = 0x3f;
}

/// Bytes before the attachment sizes.
pub const FIXED_LEN: usize = 24;

/// The text form of request ids on a compact link: `r-<n>` (what a ferry host makes).
static HOST_IDS: IdGenerator = IdGenerator::new(RequestId::PREFIX);

/// Why a compact frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Byte 0 is not a kind this version knows.
    #[error("unknown compact frame kind {0}")]
    UnknownKind(u8),
    /// Byte 1 has bits set that this version does not define.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// Byte 2 is not 0, 1 or 2.
    #[error("unknown priority {0}")]
    UnknownPriority(u8),
    /// The operation index is past the end of the worker's `ready.operations`.
    #[error("operation index {index} out of range (the worker announced {count} operations)")]
    OperationIndex {
        /// The index in the frame.
        index: u32,
        /// How many operations the table has.
        count: usize,
    },
    /// The index names a prefix entry (`device.*`), which cannot be an operation.
    #[error("operation index {0} names a prefix entry")]
    OperationIsPrefix(u32),
    /// The operation name is not UTF-8.
    #[error("operation name is not UTF-8")]
    OperationNotUtf8,
    /// The lengths the header announces do not add up to the frame's length.
    #[error("header announces {announced} bytes, the frame has {actual}")]
    Length {
        /// What the header's lengths add up to (saturating).
        announced: u64,
        /// The frame's length.
        actual: usize,
    },
}

/// The compact wire of one negotiated link: the codec of `data` and envelope frames, and
/// the operation table the worker announced.
#[derive(Debug, Clone)]
pub struct CompactWire {
    codec: CodecKind,
    max_frame: usize,
    /// `ready.operations`; prefix entries stay in place (so indexes match) but are never
    /// used.
    operations: Box<[String]>,
}

impl CompactWire {
    /// The wire for a link whose worker announced `ready`.
    pub fn new(codec: CodecKind, max_frame: usize, ready: &ReadyInfo) -> Self {
        CompactWire {
            codec,
            max_frame,
            operations: ready.operations.clone().into_boxed_slice(),
        }
    }

    /// The index of `operation` in the table (exact entries only).
    fn index_of(&self, operation: &str) -> Option<u32> {
        self.operations
            .iter()
            .position(|o| o == operation && !o.ends_with('*'))
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Encodes `envelope` with `attachments` into `out` (cleared first): the frame is
    /// `out` followed by each attachment. Compact when the message fits the layout, else
    /// an envelope frame behind byte `0x00`.
    ///
    /// ```
    /// use ferry::codec::{CodecKind, CompactWire};
    /// use ferry::protocol::{Envelope, ReadyInfo};
    /// let wire = CompactWire::new(CodecKind::MsgPack, 1 << 20, &ReadyInfo::new("echo", vec!["echo".into()]));
    /// let mut out = Vec::new();
    /// wire.encode(&Envelope::request("r-42", "echo", serde_json::Value::Null), &[b"abc"], &mut out)?;
    /// assert_eq!(out.len(), 24 + 4); // the fixed header and one attachment size
    /// let frame = [out.as_slice(), b"abc"].concat();
    /// let decoded = wire.decode(&frame)?;
    /// assert_eq!(decoded.envelope.message_id, "r-42");
    /// assert_eq!(decoded.attachment(&frame, 0), Some(&b"abc"[..]));
    /// # Ok::<(), ferry::codec::CodecError>(())
    /// ```
    pub fn encode(
        &self,
        envelope: &Envelope,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.encode_ref(&EnvelopeRef::from(envelope), attachments, out)
    }

    /// [`encode`](Self::encode) from a borrowed view.
    pub(crate) fn encode_ref(
        &self,
        env: &EnvelopeRef<'_>,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.encode_numbered(env, None, attachments, out)
    }

    /// [`encode_ref`](Self::encode_ref) for a sender that holds the number of the id the
    /// header carries (a request's `message_id`, an answer's or cancel's `request_id`), so
    /// it is not read back from that text. `id_number` must be that text's number.
    pub(crate) fn encode_numbered(
        &self,
        env: &EnvelopeRef<'_>,
        id_number: Option<u64>,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        if !self.encode_compact(env, id_number, attachments, out)? {
            out.clear();
            out.push(kind::ENVELOPE);
            let sized = Metas {
                metas: env.attachments.metas,
                sizes: Some(attachments),
            };
            body::encode_framed(self.codec, env, &sized, out)?;
        }
        super::depth::check(env.data, out.len())?;
        super::check_frame_size(out, attachments, self.max_frame)
    }

    /// Writes the compact form; `false` (nothing useful written) when `env` has something
    /// the layout cannot carry.
    fn encode_compact(
        &self,
        env: &EnvelopeRef<'_>,
        id_number: Option<u64>,
        attachments: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<bool, CodecError> {
        // The number of `text`: the caller's when it has it, else read back from the text.
        let number_of = |text: Option<&str>| {
            let text = text?;
            debug_assert!(id_number.is_none_or(|n| HOST_IDS.number_of(text) == Some(n)));
            id_number.or_else(|| HOST_IDS.number_of(text))
        };
        if env.version != PROTOCOL_VERSION
            || env.source.is_some()
            || env.destination.is_some()
            || env.event_name.is_some()
            || env.error.is_some()
            || !plain_attachments(&env.attachments, attachments.len())
        {
            return Ok(false);
        }
        let Ok(count) = u8::try_from(attachments.len()) else {
            return Ok(false);
        };
        let mut flags = 0u8;
        let mut priority = 0u8;
        let mut operation = 0u32;
        let mut name: &[u8] = &[];
        let mut deadline = 0u32;
        let (frame_kind, id) = match env.kind {
            MessageType::Request => {
                let (Some(op), None, None, None) =
                    (env.operation, env.metrics, env.success, env.request_id)
                else {
                    return Ok(false);
                };
                let Some(id) = number_of(Some(env.message_id)) else {
                    return Ok(false);
                };
                match self.index_of(op) {
                    Some(i) => operation = i,
                    None => {
                        let Ok(len) = u32::try_from(op.len()) else {
                            return Ok(false);
                        };
                        flags |= flag::OP_NAME;
                        operation = len;
                        name = op.as_bytes();
                    }
                }
                priority = match env.priority {
                    None | Some(Priority::Normal) => 0,
                    Some(Priority::High) => 1,
                    Some(Priority::Low) => 2,
                };
                if let Some(ms) = env.deadline_ms {
                    let Ok(ms) = u32::try_from(ms) else {
                        return Ok(false);
                    };
                    flags |= flag::DEADLINE;
                    deadline = ms;
                }
                (kind::REQUEST, id)
            }
            MessageType::Response => {
                // An empty metrics object is kept by envelope frames only.
                let empty_metrics = env.metrics.is_some_and(|m| metric_values(m) == [None; 3]);
                if env.operation.is_some()
                    || empty_metrics
                    || env.success != Some(true)
                    || env.priority.is_some()
                    || env.deadline_ms.is_some()
                {
                    return Ok(false);
                }
                let Some(id) = number_of(env.request_id) else {
                    return Ok(false);
                };
                (kind::RESPONSE, id)
            }
            MessageType::Cancel => {
                if env.operation.is_some()
                    || env.data.is_some_and(|d| !d.is_null())
                    || !attachments.is_empty()
                    || env.success.is_some()
                    || env.metrics.is_some()
                    || env.priority.is_some()
                    || env.deadline_ms.is_some()
                {
                    return Ok(false);
                }
                let Some(id) = number_of(env.request_id) else {
                    return Ok(false);
                };
                (kind::CANCEL, id)
            }
            MessageType::Event | MessageType::Error => return Ok(false),
        };
        let metrics = env.metrics.map(metric_values).unwrap_or_default();
        for (bit, value) in METRIC_FLAGS.iter().zip(metrics) {
            if value.is_some() {
                flags |= bit;
            }
        }
        let data = env.data.filter(|d| !d.is_null());
        if data.is_some() {
            flags |= flag::DATA;
        }
        out.reserve(FIXED_LEN + 4 * attachments.len() + name.len() + 64);
        out.extend_from_slice(&[frame_kind, flags, priority, count]);
        out.extend_from_slice(&operation.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&deadline.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for a in attachments {
            let Ok(size) = u32::try_from(a.len()) else {
                return Ok(false);
            };
            out.extend_from_slice(&size.to_le_bytes());
        }
        for value in metrics.into_iter().flatten() {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(name);
        if let Some(data) = data {
            let start = out.len();
            self.write_data(data, out)?;
            let Ok(len) = u32::try_from(out.len() - start) else {
                return Ok(false);
            };
            out[20..24].copy_from_slice(&len.to_le_bytes());
        }
        Ok(true)
    }

    fn write_data(&self, data: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let header_err = |source| CodecError::Header {
            codec: self.codec,
            source,
        };
        match self.codec {
            CodecKind::MsgPack => rmp_serde::encode::write_named(out, data)
                .map_err(|e| header_err(HeaderError::serde(e))),
            CodecKind::Json | CodecKind::Bincode => {
                serde_json::to_writer(out, data).map_err(|e| header_err(HeaderError::serde(e)))
            }
        }
    }

    fn read_data(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        let header_err = |source| CodecError::header(self.codec, source);
        match self.codec {
            CodecKind::MsgPack => {
                super::msgpack::read_nested(bytes, super::MAX_DATA_DEPTH).map_err(header_err)
            }
            CodecKind::Json | CodecKind::Bincode => {
                serde_json::from_slice(bytes).map_err(|e| header_err(HeaderError::serde(e)))
            }
        }
    }

    /// Decodes one frame of a compact link. Attachments are located, not copied.
    pub fn decode(&self, frame: &[u8]) -> Result<DecodedFrame, CodecError> {
        let mut decoded = DecodedFrame::default();
        self.decode_into(frame, &mut decoded)?;
        Ok(decoded)
    }

    /// [`decode`](Self::decode) into `out`, reusing what it holds (its id and operation
    /// texts, its attachment list) so that a receiver decoding frame after frame into one
    /// place allocates nothing for them. After an error `out` holds no meaningful frame.
    ///
    /// ```
    /// use ferry::codec::{CodecKind, CompactWire, DecodedFrame};
    /// use ferry::protocol::{Envelope, ReadyInfo};
    /// use serde_json::Value;
    ///
    /// let info = ReadyInfo::new("echo", vec!["echo".into()]);
    /// let wire = CompactWire::new(CodecKind::MsgPack, 1 << 20, &info);
    /// let mut header = Vec::new();
    /// let mut place = DecodedFrame::default();
    /// for n in 1..=2 {
    ///     let id = format!("r-{n}");
    ///     let request = Envelope::request(id.as_str(), "echo", Value::Null);
    ///     wire.encode(&request, &[b"abc"], &mut header)?;
    ///     let frame = [header.as_slice(), b"abc"].concat();
    ///     wire.decode_into(&frame, &mut place)?;
    ///     assert_eq!(place.envelope.message_id, id);
    ///     assert_eq!(place.attachment(&frame, 0), Some(&b"abc"[..]));
    /// }
    /// # Ok::<(), ferry::codec::CodecError>(())
    /// ```
    pub fn decode_into(&self, frame: &[u8], out: &mut DecodedFrame) -> Result<(), CodecError> {
        self.decode_any_depth(frame, out)?;
        super::depth::check_decoded(self.codec, out.envelope.data.as_ref(), frame.len())
    }

    /// The `request_id` that a frame [`decode`](Self::decode) refused still names: a
    /// compact response's id from its fixed header, an envelope frame's as
    /// [`Codec::answer_id`](super::Codec::answer_id) reads it. Only for frames that failed.
    pub fn answer_id(&self, frame: &[u8]) -> Option<String> {
        match *frame.first()? {
            kind::ENVELOPE => body::framed_request_id(self.codec, frame, 1),
            kind::RESPONSE => {
                let fixed: &[u8; FIXED_LEN] = frame.get(..FIXED_LEN)?.try_into().ok()?;
                Some(text_id(u64_at(fixed, 8)))
            }
            _ => None,
        }
    }

    /// [`decode_into`](Self::decode_into) without the nesting limit of `data`.
    fn decode_any_depth(&self, frame: &[u8], out: &mut DecodedFrame) -> Result<(), CodecError> {
        if frame.len() > self.max_frame {
            return Err(CodecError::FrameTooLarge {
                size: frame.len(),
                max: self.max_frame,
            });
        }
        let Some(&first) = frame.first() else {
            return Err(CodecError::Truncated("empty frame"));
        };
        if first == kind::ENVELOPE {
            *out = body::decode_framed(self.codec, frame, 1)?;
            return Ok(());
        }
        let fixed: &[u8; FIXED_LEN] = frame
            .get(..FIXED_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CodecError::Truncated("compact header shorter than 24 bytes"))?;
        let header = Fixed::parse(fixed)?;
        let compact = |e: CompactError| CodecError::Compact(e);
        // Every length is a claim: add them up (in u64, no overflow) and compare with the
        // frame before slicing anything.
        let count = usize::from(header.count);
        let metric_count = (header.flags
            & (flag::METRIC_TIME | flag::METRIC_MEMORY | flag::METRIC_GPU))
            .count_ones() as usize;
        let sizes_at = FIXED_LEN;
        let metrics_at = sizes_at + 4 * count;
        let name_at = metrics_at + 8 * metric_count;
        let mut announced = name_at as u64 + u64::from(header.data_len);
        if header.flags & flag::OP_NAME != 0 {
            announced += u64::from(header.operation);
        }
        let sizes = frame.get(sizes_at..metrics_at);
        if let Some(sizes) = sizes {
            announced += sizes
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .sum::<u64>();
        }
        if sizes.is_none() || announced != frame.len() as u64 {
            return Err(compact(CompactError::Length {
                announced,
                actual: frame.len(),
            }));
        }
        // From here every offset is inside the frame: the sums above matched its length.
        let spare = out.recycle(header.message_type());
        out.set_id_number(header.id);
        let mut id_text = spare.id;
        RequestId::push_text(header.id, &mut id_text);
        let envelope = &mut out.envelope;
        let mut at = name_at;
        // A name on a frame other than a request is skipped (senders write none).
        let name_len = if header.flags & flag::OP_NAME != 0 {
            header.operation as usize
        } else {
            0
        };
        let mut metrics = Metrics::default();
        let mut metric_values = frame[metrics_at..name_at]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        for (bit, slot) in METRIC_FLAGS.iter().zip([
            &mut metrics.processing_time_ms,
            &mut metrics.memory_usage_mb,
            &mut metrics.gpu_utilization,
        ]) {
            if header.flags & bit != 0 {
                *slot = metric_values.next();
            }
        }
        match header.kind {
            kind::REQUEST => {
                let name = if header.flags & flag::OP_NAME != 0 {
                    std::str::from_utf8(&frame[at..at + name_len])
                        .map_err(|_| compact(CompactError::OperationNotUtf8))?
                } else {
                    self.operation_at(header.operation)?
                };
                let mut operation = spare.operation;
                operation.push_str(name);
                envelope.message_id = id_text;
                envelope.operation = Some(operation);
                envelope.priority = match header.priority {
                    1 => Some(Priority::High),
                    2 => Some(Priority::Low),
                    _ => Some(Priority::Normal),
                };
                envelope.deadline_ms =
                    (header.flags & flag::DEADLINE != 0).then_some(u64::from(header.deadline_ms));
            }
            kind::RESPONSE => {
                envelope.request_id = Some(id_text);
                envelope.success = Some(true);
            }
            _ => envelope.request_id = Some(id_text),
        }
        // Metrics belong to responses; elsewhere their bytes are skipped.
        if metric_count > 0 && header.kind == kind::RESPONSE {
            envelope.metrics = Some(metrics);
        }
        at += name_len;
        let data_end = at + header.data_len as usize;
        if header.flags & flag::DATA != 0 {
            envelope.data = Some(self.read_data(&frame[at..data_end])?).filter(|d| !d.is_null());
        }
        let mut offset = data_end;
        if count > 0 {
            let mut metas = spare.metas;
            metas.reserve(count);
            for c in frame[sizes_at..metrics_at].chunks_exact(4) {
                let size = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
                out.push_range(offset..offset + size);
                offset += size;
                metas.push(AttachmentMeta {
                    name: None,
                    content_type: None,
                    size: size as u64,
                    data_base64: None,
                    path: None,
                });
            }
            out.envelope.attachments = metas;
        }
        Ok(())
    }

    fn operation_at(&self, index: u32) -> Result<&str, CodecError> {
        let entry = self.operations.get(index as usize).ok_or_else(|| {
            CodecError::Compact(CompactError::OperationIndex {
                index,
                count: self.operations.len(),
            })
        })?;
        if entry.ends_with('*') {
            return Err(CodecError::Compact(CompactError::OperationIsPrefix(index)));
        }
        Ok(entry)
    }
}

/// The id of the request a compact request frame carries, if the frame is long enough to
/// say: what a worker answers with an error when the rest of the frame is unreadable.
pub fn request_id_of(frame: &[u8]) -> Option<String> {
    let fixed: &[u8; FIXED_LEN] = frame.get(..FIXED_LEN)?.try_into().ok()?;
    (fixed[0] == kind::REQUEST).then(|| text_id(u64_at(fixed, 8)))
}

/// `r-<n>`.
fn text_id(n: u64) -> String {
    RequestId::new(n).as_str().to_owned()
}

const METRIC_FLAGS: [u8; 3] = [flag::METRIC_TIME, flag::METRIC_MEMORY, flag::METRIC_GPU];

fn metric_values(m: &Metrics) -> [Option<f64>; 3] {
    [m.processing_time_ms, m.memory_usage_mb, m.gpu_utilization]
}

/// Whether the attachments' metadata is only their sizes (what the layout carries).
fn plain_attachments(metas: &Metas<'_>, count: usize) -> bool {
    (0..count).all(|i| {
        let m = metas.get(i);
        m.name.is_none() && m.content_type.is_none() && m.path.is_none()
    })
}

fn u32_at(b: &[u8; FIXED_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; FIXED_LEN], at: usize) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(n)
}

/// The fixed 24 bytes, checked.
struct Fixed {
    kind: u8,
    flags: u8,
    priority: u8,
    count: u8,
    operation: u32,
    id: u64,
    deadline_ms: u32,
    data_len: u32,
}

impl Fixed {
    fn parse(b: &[u8; FIXED_LEN]) -> Result<Self, CodecError> {
        let compact = |e| Err(CodecError::Compact(e));
        let h = Fixed {
            kind: b[0],
            flags: b[1],
            priority: b[2],
            count: b[3],
            operation: u32_at(b, 4),
            id: u64_at(b, 8),
            deadline_ms: u32_at(b, 16),
            data_len: u32_at(b, 20),
        };
        if !matches!(h.kind, kind::REQUEST | kind::RESPONSE | kind::CANCEL) {
            return compact(CompactError::UnknownKind(h.kind));
        }
        if h.flags & !flag::KNOWN != 0 {
            return compact(CompactError::ReservedFlags(h.flags & !flag::KNOWN));
        }
        if h.priority > 2 {
            return compact(CompactError::UnknownPriority(h.priority));
        }
        Ok(h)
    }

    fn message_type(&self) -> MessageType {
        match self.kind {
            kind::REQUEST => MessageType::Request,
            kind::RESPONSE => MessageType::Response,
            _ => MessageType::Cancel,
        }
    }
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;

//! MessagePack envelopes, written and read by hand on the hot path.
//!
//! **Writing** produces exactly the bytes of `rmp_serde::encode::write_named` over the
//! envelope (a map with string keys in field order, unset fields omitted, integers in
//! their smallest form, floats as `f64`); the free-form parts (`data`, `error`) still go
//! through `rmp_serde`, which is what it would have done inside the map.
//!
//! **Reading** takes the shape every ferry runtime writes (string keys, string enums,
//! known fields, each at most once) straight into an [`Envelope`]: no serde visitor per
//! field, no UTF-8 check of keys, whose bytes are compared with the known names.
//! Anything else (unknown keys, integer keys or enums, `bin` strings, a missing field, a
//! type mismatch, trailing bytes) is handed to `rmp_serde` whole, so what is accepted,
//! what is refused and how are `rmp_serde`'s decisions, as before, with one exception:
//! `rmp_serde` reads here at most the envelope's map and [`MAX_DATA_DEPTH`] levels below
//! it (its own default, 1023, lets a 2 KB frame overflow a thread's stack), and a header
//! nested deeper is refused as `CodecError::DataTooDeep`. The tests check both paths
//! against `rmp_serde` on random envelopes and on corrupted ones.

use super::depth::MAX_DATA_DEPTH;
use super::view::{EnvelopeRef, MetaRef, Metas};
use super::HeaderError;
use crate::protocol::schema::{envelope_fields, is_optional, Field};
use crate::protocol::{AttachmentMeta, Envelope, ErrorBody, MessageType, Metrics, Priority};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Writing

/// `name` as a MessagePack fixstr (marker and bytes), built at compile time; `N` is its
/// length plus one, and `name` is shorter than 32 bytes.
const fn fixstr<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    assert!(bytes.len() < 32 && bytes.len() + 1 == N);
    let mut out = [0u8; N];
    out[0] = 0xa0 | bytes.len() as u8;
    let mut i = 0;
    while i < bytes.len() {
        out[i + 1] = bytes[i];
        i += 1;
    }
    out
}

/// A field name, encoded at compile time (a copy of constant length when written).
macro_rules! key {
    ($name:literal) => {{
        const KEY: [u8; $name.len() + 1] = fixstr($name);
        &KEY
    }};
}

#[inline]
fn put_map_len(out: &mut Vec<u8>, n: usize) {
    // Envelopes have at most 17 fields, metrics 3, attachment metadata 5.
    if n < 16 {
        out.push(0x80 | n as u8);
    } else {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
}

#[inline]
fn put_array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[inline]
fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v < 256 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 65_536 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 4_294_967_296 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), HeaderError> {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xda);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xdb);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        return Err(HeaderError::StringTooLong);
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[inline]
fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn put_opt_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) -> Result<(), HeaderError> {
    if let Some(v) = v {
        out.extend_from_slice(key);
        put_str(out, v)?;
    }
    Ok(())
}

fn put_serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), HeaderError> {
    rmp_serde::encode::write_named(out, v).map_err(HeaderError::serde)
}

fn put_meta(out: &mut Vec<u8>, m: &MetaRef<'_>) -> Result<(), HeaderError> {
    let n = 1
        + usize::from(m.name.is_some())
        + usize::from(m.content_type.is_some())
        + usize::from(m.data_base64.is_some())
        + usize::from(m.path.is_some());
    put_map_len(out, n);
    put_opt_str(out, key!("name"), m.name)?;
    put_opt_str(out, key!("content_type"), m.content_type)?;
    out.extend_from_slice(key!("size"));
    put_uint(out, m.size);
    put_opt_str(out, key!("data_base64"), m.data_base64)?;
    put_opt_str(out, key!("path"), m.path)
}

fn put_metrics(out: &mut Vec<u8>, m: &Metrics) {
    let fields: [(&[u8], Option<f64>); 3] = [
        (key!("processing_time_ms"), m.processing_time_ms),
        (key!("memory_usage_mb"), m.memory_usage_mb),
        (key!("gpu_utilization"), m.gpu_utilization),
    ];
    put_map_len(out, fields.iter().filter(|(_, v)| v.is_some()).count());
    for (key, v) in fields {
        if let Some(v) = v {
            out.extend_from_slice(key);
            put_f64(out, v);
        }
    }
}

/// A field's borrowed type, written as a map entry (`key` then the value) when it is set.
trait Put {
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError>;
}

impl Put for u32 {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        out.extend_from_slice(key);
        put_uint(out, (*self).into());
        Ok(())
    }
}

impl Put for &str {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        out.extend_from_slice(key);
        put_str(out, self)
    }
}

impl Put for MessageType {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        out.extend_from_slice(key);
        put_str(out, self.as_str())
    }
}

impl Put for Option<&str> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        put_opt_str(out, key, *self)
    }
}

impl Put for Option<Priority> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        put_opt_str(out, key, self.map(Priority::as_str))
    }
}

impl Put for Option<u64> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if let Some(v) = *self {
            out.extend_from_slice(key);
            put_uint(out, v);
        }
        Ok(())
    }
}

impl Put for Option<bool> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if let Some(v) = *self {
            out.extend_from_slice(key);
            out.push(if v { 0xc3 } else { 0xc2 });
        }
        Ok(())
    }
}

/// `data` (`null` is omitted like absent).
impl Put for Option<&Value> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if let Some(data) = self.filter(|d| !d.is_null()) {
            out.extend_from_slice(key);
            put_serde(out, data)?;
        }
        Ok(())
    }
}

impl Put for Option<&ErrorBody> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if let Some(error) = self {
            out.extend_from_slice(key);
            put_serde(out, error)?;
        }
        Ok(())
    }
}

impl Put for Option<&Metrics> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if let Some(metrics) = self {
            out.extend_from_slice(key);
            put_metrics(out, metrics);
        }
        Ok(())
    }
}

impl Put for Metas<'_> {
    #[inline(always)]
    fn put(&self, key: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        if !self.is_empty() {
            out.extend_from_slice(key);
            put_array_len(out, self.len());
            for i in 0..self.len() {
                put_meta(out, &self.get(i))?;
            }
        }
        Ok(())
    }
}

/// The field `$name` as [`encode`] writes it: `attachments` is the one passed in its place.
macro_rules! written {
    ($e:ident, $attachments:ident, attachments) => {
        $attachments
    };
    ($e:ident, $attachments:ident, $name:ident) => {
        &$e.$name
    };
}

/// Generates [`encode`] from the field list.
macro_rules! define_encode {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// Appends `e`, with `attachments` in place of its own, as a MessagePack map to
        /// `out`.
        pub(super) fn encode(
            e: &EnvelopeRef<'_>,
            attachments: &Metas<'_>,
            out: &mut Vec<u8>,
        ) -> Result<(), HeaderError> {
            let count = 0 $(+ usize::from(!Field::is_unset(written!(e, attachments, $name))))*;
            out.reserve(64 + e.message_id.len());
            put_map_len(out, count);
            $(Put::put(written!(e, attachments, $name), key!($key), out)?;)*
            Ok(())
        }
    };
}
envelope_fields!(define_encode);

// ---------------------------------------------------------------------------------------
// Reading

/// Why the fast reader gave up; `rmp_serde` then reads the header and decides.
struct Unusual;

type Fast<T> = Result<T, Unusual>;

/// The fewest bytes one attachment's metadata takes (`{"size": 0}`: fixmap marker, the
/// fixstr `size`, a fixint); `size` is required, so no valid entry is shorter.
const MIN_META_BYTES: usize = 7;

/// Nesting below which a free-form value is handed to `rmp_serde` from its own start
/// (which restarts `rmp_serde`'s depth count); deeper ones take the whole-header path.
const MAX_FAST_DEPTH: usize = 256;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Fast<u8> {
        let b = *self.bytes.get(self.pos).ok_or(Unusual)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Fast<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Unusual)?;
        let s = self.bytes.get(self.pos..end).ok_or(Unusual)?;
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Fast<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| Unusual)
    }

    #[inline]
    fn peek(&self) -> Fast<u8> {
        self.bytes.get(self.pos).copied().ok_or(Unusual)
    }

    /// A `str` (any width), its bytes unchecked.
    #[inline]
    fn str_bytes(&mut self) -> Fast<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => usize::from(self.byte()?),
            0xda => usize::from(u16::from_be_bytes(self.be()?)),
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return Err(Unusual),
        };
        self.take(n)
    }

    #[inline]
    fn string(&mut self) -> Fast<String> {
        let bytes = self.str_bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Unusual)
    }

    /// `nil` (consumed) or not (left in place).
    #[inline]
    fn nil(&mut self) -> Fast<bool> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    #[inline]
    fn opt_string(&mut self) -> Fast<Option<String>> {
        if self.nil()? {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A non-negative integer in any unsigned form.
    #[inline]
    fn uint(&mut self) -> Fast<u64> {
        Ok(match self.byte()? {
            b @ 0x00..=0x7f => u64::from(b),
            0xcc => u64::from(self.byte()?),
            0xcd => u16::from_be_bytes(self.be()?).into(),
            0xce => u32::from_be_bytes(self.be()?).into(),
            0xcf => u64::from_be_bytes(self.be()?),
            _ => return Err(Unusual),
        })
    }

    fn opt_f64(&mut self) -> Fast<Option<f64>> {
        Ok(match self.byte()? {
            0xc0 => None,
            0xcb => Some(f64::from_be_bytes(self.be()?)),
            0xca => Some(f32::from_be_bytes(self.be()?).into()),
            _ => return Err(Unusual),
        })
    }

    fn map_len(&mut self) -> Fast<usize> {
        Ok(match self.byte()? {
            b @ 0x80..=0x8f => usize::from(b & 0x0f),
            0xde => usize::from(u16::from_be_bytes(self.be()?)),
            0xdf => u32::from_be_bytes(self.be()?) as usize,
            _ => return Err(Unusual),
        })
    }

    fn array_len(&mut self) -> Fast<usize> {
        Ok(match self.byte()? {
            b @ 0x90..=0x9f => usize::from(b & 0x0f),
            0xdc => usize::from(u16::from_be_bytes(self.be()?)),
            0xdd => u32::from_be_bytes(self.be()?) as usize,
            _ => return Err(Unusual),
        })
    }

    /// Steps over one value of any type, at most `MAX_FAST_DEPTH` deep, and returns its bytes.
    fn value_bytes(&mut self) -> Fast<&'a [u8]> {
        let start = self.pos;
        // Values still to step over, per open container; no recursion.
        let mut pending: Vec<usize> = Vec::new();
        let mut left = 1usize;
        loop {
            while left == 0 {
                match pending.pop() {
                    Some(outer) => left = outer,
                    None => return Ok(&self.bytes[start..self.pos]),
                }
            }
            left -= 1;
            let marker = self.byte()?;
            let skip = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                0xa0..=0xbf => usize::from(marker & 0x1f),
                0xcc | 0xd0 => 1,
                0xcd | 0xd1 => 2,
                0xca | 0xce | 0xd2 => 4,
                0xcb | 0xcf | 0xd3 => 8,
                0xc4 | 0xd9 => usize::from(self.byte()?),
                0xc5 | 0xda => usize::from(u16::from_be_bytes(self.be()?)),
                0xc6 | 0xdb => u32::from_be_bytes(self.be()?) as usize,
                0x80..=0x8f | 0xde | 0xdf | 0x90..=0x9f | 0xdc | 0xdd => {
                    self.pos -= 1;
                    let (n, per) = if matches!(marker, 0x80..=0x8f | 0xde | 0xdf) {
                        (self.map_len()?, 2)
                    } else {
                        (self.array_len()?, 1)
                    };
                    if pending.len() >= MAX_FAST_DEPTH {
                        return Err(Unusual);
                    }
                    pending.push(left);
                    // Each element needs at least one byte: refuse counts the rest of the
                    // header cannot hold before multiplying them.
                    if n > self.bytes.len() - self.pos {
                        return Err(Unusual);
                    }
                    left = n * per;
                    continue;
                }
                // Extension types and the reserved marker: rare, left to rmp_serde.
                _ => return Err(Unusual),
            };
            self.take(skip)?;
        }
    }

    /// A free-form value, read by `rmp_serde` from its own bytes (at most
    /// [`MAX_DATA_DEPTH`] levels: deeper, the whole-header path refuses it).
    fn serde_value<T: serde::de::DeserializeOwned>(&mut self) -> Fast<T> {
        let bytes = self.value_bytes()?;
        read_nested(bytes, MAX_DATA_DEPTH).map_err(|_| Unusual)
    }

    fn kind(&mut self) -> Fast<MessageType> {
        Ok(match self.str_bytes()? {
            b"request" => MessageType::Request,
            b"response" => MessageType::Response,
            b"event" => MessageType::Event,
            b"error" => MessageType::Error,
            b"cancel" => MessageType::Cancel,
            _ => return Err(Unusual),
        })
    }

    fn priority(&mut self) -> Fast<Priority> {
        Ok(match self.str_bytes()? {
            b"high" => Priority::High,
            b"normal" => Priority::Normal,
            b"low" => Priority::Low,
            _ => return Err(Unusual),
        })
    }

    fn metrics(&mut self) -> Fast<Metrics> {
        let mut m = Metrics::default();
        let mut seen = 0u8;
        for _ in 0..self.map_len()? {
            let bit = match self.str_bytes()? {
                b"processing_time_ms" => {
                    m.processing_time_ms = self.opt_f64()?;
                    1
                }
                b"memory_usage_mb" => {
                    m.memory_usage_mb = self.opt_f64()?;
                    2
                }
                b"gpu_utilization" => {
                    m.gpu_utilization = self.opt_f64()?;
                    4
                }
                _ => return Err(Unusual),
            };
            if seen & bit != 0 {
                return Err(Unusual);
            }
            seen |= bit;
        }
        Ok(m)
    }

    fn attachment(&mut self) -> Fast<AttachmentMeta> {
        let mut meta = AttachmentMeta::default();
        let mut seen = 0u8;
        for _ in 0..self.map_len()? {
            let bit = match self.str_bytes()? {
                b"name" => {
                    meta.name = self.opt_string()?;
                    1
                }
                b"content_type" => {
                    meta.content_type = self.opt_string()?;
                    2
                }
                b"size" => {
                    meta.size = self.uint()?;
                    4
                }
                b"data_base64" => {
                    meta.data_base64 = self.opt_string()?;
                    8
                }
                b"path" => {
                    meta.path = self.opt_string()?;
                    16
                }
                _ => return Err(Unusual),
            };
            if seen & bit != 0 {
                return Err(Unusual);
            }
            seen |= bit;
        }
        if seen & 4 == 0 {
            return Err(Unusual);
        }
        Ok(meta)
    }
}

/// A field's owned type, read from the fast path's shape.
trait Read: Sized {
    fn read(r: &mut Reader<'_>) -> Fast<Self>;
}

impl Read for u32 {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        u32::try_from(r.uint()?).map_err(|_| Unusual)
    }
}

impl Read for String {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        r.string()
    }
}

impl Read for Option<String> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        r.opt_string()
    }
}

impl Read for MessageType {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        r.kind()
    }
}

impl Read for Option<Priority> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(if r.nil()? { None } else { Some(r.priority()?) })
    }
}

impl Read for Option<u64> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(if r.nil()? { None } else { Some(r.uint()?) })
    }
}

impl Read for Option<Value> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(if r.nil()? {
            None
        } else {
            Some(r.serde_value()?)
        })
    }
}

impl Read for Option<bool> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(match r.byte()? {
            0xc0 => None,
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => return Err(Unusual),
        })
    }
}

impl Read for Option<ErrorBody> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(if r.nil()? {
            None
        } else {
            Some(r.serde_value()?)
        })
    }
}

impl Read for Option<Metrics> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        Ok(if r.nil()? { None } else { Some(r.metrics()?) })
    }
}

impl Read for Vec<AttachmentMeta> {
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Fast<Self> {
        let n = r.array_len()?;
        // A count is a claim: refuse one the rest cannot hold before reserving for it (an
        // `AttachmentMeta` is ~100 bytes, so a count bounded only by the bytes left
        // reserved ~100 times the header).
        if n > (r.bytes.len() - r.pos) / MIN_META_BYTES {
            return Err(Unusual);
        }
        let mut metas = Vec::with_capacity(n);
        for _ in 0..n {
            metas.push(r.attachment()?);
        }
        Ok(metas)
    }
}

/// Generates `Reader::envelope` from the field list.
macro_rules! define_read {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// The keys as byte strings, for matching.
        #[allow(non_upper_case_globals)]
        mod keys {
            $(pub(super) const $name: &[u8] = $key.as_bytes();)*
        }

        /// Each field's position in the list: its bit in `seen`.
        #[allow(non_camel_case_types, dead_code)]
        enum Position {
            $($name,)*
            Count,
        }
        const _: () = assert!((Position::Count as u32) <= u32::BITS);

        /// The bits of the required fields.
        const REQUIRED: u32 = 0 $(| if is_optional!($($default)?) { 0 } else { 1 << Position::$name as u32 })*;

        impl Reader<'_> {
            /// Reads the envelope into `e` (a fresh one: its fields are only set, never
            /// cleared).
            fn envelope(&mut self, e: &mut Envelope) -> Fast<()> {
                let mut seen = 0u32;
                for _ in 0..self.map_len()? {
                    let bit: u32 = match self.str_bytes()? {
                        $(keys::$name => {
                            e.$name = Read::read(self)?;
                            1 << Position::$name as u32
                        })*
                        _ => return Err(Unusual),
                    };
                    if seen & bit != 0 {
                        return Err(Unusual);
                    }
                    seen |= bit;
                }
                if seen & REQUIRED != REQUIRED || self.pos != self.bytes.len() {
                    return Err(Unusual);
                }
                Ok(())
            }
        }
    };
}
envelope_fields!(define_read);

/// Reads one MessagePack envelope header into `e`, a fresh envelope (the fast reader only
/// sets fields; `rmp_serde`, when it takes over, replaces the whole envelope).
pub(super) fn decode_into(header: &[u8], e: &mut Envelope) -> Result<(), HeaderError> {
    let mut reader = Reader {
        bytes: header,
        pos: 0,
    };
    match reader.envelope(e) {
        Ok(()) => Ok(()),
        Err(Unusual) => {
            // The envelope's own map, then `data` at most MAX_DATA_DEPTH levels.
            *e = read_nested(header, MAX_DATA_DEPTH + 1)?;
            Ok(())
        }
    }
}

/// The `request_id` of a MessagePack envelope header that did not decode, read without
/// the rest: the other fields' values are stepped over (no recursion, any shape), so a
/// header refused for its `data` still says which request it answers. `None` when the
/// header is not a map, has no string `request_id`, or breaks off first.
pub(super) fn request_id(header: &[u8]) -> Option<String> {
    let mut reader = Reader {
        bytes: header,
        pos: 0,
    };
    for _ in 0..reader.map_len().ok()? {
        if reader.str_bytes().ok()? == keys::request_id {
            return reader.opt_string().ok()?;
        }
        reader.value_bytes().ok()?;
    }
    None
}

/// `rmp_serde::from_slice`, reading at most `levels` nested arrays and maps
/// ([`HeaderError::TooDeep`] beyond). Its own default, 1023 levels, recurses deep enough on
/// a 2 KB frame to overflow a 2 MiB thread stack in a debug build.
pub(super) fn read_nested<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    levels: usize,
) -> Result<T, HeaderError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // rmp_serde refuses the container that brings its count to 0: `levels + 1` allows
    // `levels`.
    de.set_max_depth(levels + 1);
    T::deserialize(&mut de).map_err(|e| match e {
        rmp_serde::decode::Error::DepthLimitExceeded => HeaderError::TooDeep,
        other => HeaderError::serde(other),
    })
}

/// Reads one MessagePack envelope header.
#[cfg(test)]
pub(super) fn decode(header: &[u8]) -> Result<Envelope, HeaderError> {
    let mut e = Envelope::new(MessageType::Request, String::new());
    decode_into(header, &mut e).map(|()| e)
}

/// The fast reader alone (`None` where it would hand over to `rmp_serde`).
#[cfg(test)]
pub(super) fn decode_fast(header: &[u8]) -> Option<Envelope> {
    let mut e = Envelope::new(MessageType::Request, String::new());
    Reader {
        bytes: header,
        pos: 0,
    }
    .envelope(&mut e)
    .ok()
    .map(|()| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn serde_bytes(e: &Envelope) -> Vec<u8> {
        let mut out = Vec::new();
        rmp_serde::encode::write_named(&mut out, e).unwrap();
        out
    }

    fn full() -> Envelope {
        let mut e = Envelope::request("r-1", "op", json!({"a": [1, -2, 3.5, "x"], "b": null}));
        e.request_id = Some("q".repeat(40));
        e.timestamp = Some("2026-11-22T08:00:00.000Z".into());
        e.worker_type = Some("w".repeat(300));
        e.source = Some(String::new());
        e.destination = Some("d".into());
        e.priority = Some(Priority::Low);
        e.deadline_ms = Some(70_000);
        e.success = Some(false);
        e.error = Some(crate::protocol::ErrorBody::new(
            crate::protocol::ErrorCode::Timeout,
            "late",
        ));
        e.metrics = Some(Metrics {
            processing_time_ms: Some(1.25),
            memory_usage_mb: None,
            gpu_utilization: Some(0.5),
        });
        e.event_name = Some("progress".into());
        e.attachments = vec![
            AttachmentMeta {
                name: Some("a.png".into()),
                content_type: Some("image/png".into()),
                size: 300,
                data_base64: None,
                path: Some("/tmp/x".into()),
            },
            AttachmentMeta::default(),
        ];
        e
    }

    #[test]
    fn writes_the_bytes_rmp_serde_writes() {
        let mut bare = Envelope::cancel("r-2", "r-1");
        bare.version = 70_000;
        for e in [full(), bare, Envelope::response("w-1", "r-1", Value::Null)] {
            let mut out = Vec::new();
            let view = EnvelopeRef::from(&e);
            encode(&view, &view.attachments, &mut out).unwrap();
            assert_eq!(out, serde_bytes(&e));
        }
    }

    #[test]
    fn reads_what_rmp_serde_reads() {
        for e in [full(), Envelope::cancel("r-2", "r-1")] {
            let bytes = serde_bytes(&e);
            let fast = decode_fast(&bytes).expect("the fast path reads it");
            assert_eq!(fast, rmp_serde::from_slice::<Envelope>(&bytes).unwrap());
            assert_eq!(fast, e);
        }
    }

    /// Both readers' answers, comparable (`Debug`, so that a NaN equals itself).
    fn both(bytes: &[u8]) -> (String, String) {
        let ours = decode(bytes).map_err(|e| e.to_string());
        let theirs = rmp_serde::from_slice::<Envelope>(bytes).map_err(|e| e.to_string());
        (format!("{ours:?}"), format!("{theirs:?}"))
    }

    #[test]
    fn unusual_headers_get_rmp_serde_answers() {
        let bytes = serde_bytes(&full());
        // Every truncation and every single-byte change: the same result and the same
        // error as rmp_serde.
        for end in 0..bytes.len() {
            let (ours, theirs) = both(&bytes[..end]);
            assert_eq!(ours, theirs, "cut at {end}");
        }
        for i in 0..bytes.len() {
            for b in [0x00, 0x7f, 0x80, 0xa1, 0xc0, 0xc1, 0xc2, 0xd9, 0xff] {
                let mut changed = bytes.clone();
                changed[i] = b;
                let (ours, theirs) = both(&changed);
                assert_eq!(ours, theirs, "byte {i} set to {b:#x}");
            }
        }
    }

    #[test]
    fn unknown_keys_and_integer_enums_fall_back_to_rmp_serde() {
        // {"version":1,"message_id":"m","type":1 (an index),"extra":[1,2]}
        let mut bytes = vec![0x84];
        for (k, v) in [
            ("version", vec![0x01]),
            ("message_id", vec![0xa1, b'm']),
            ("type", vec![0x01]),
            ("extra", vec![0x92, 0x01, 0x02]),
        ] {
            put_str(&mut bytes, k).unwrap();
            bytes.extend_from_slice(&v);
        }
        let (ours, theirs) = both(&bytes);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn attachment_counts_the_header_cannot_hold_go_to_rmp_serde() {
        // {"attachments": [<19000 announced>], ...} then zeros: rmp_serde's answer, and no
        // reservation first (fuzz/findings/msgpack_attachments_reserve.bin checks that).
        let mut bytes = vec![0x81];
        put_str(&mut bytes, "attachments").unwrap();
        bytes.push(0xdc);
        bytes.extend_from_slice(&19_000u16.to_be_bytes());
        bytes.resize(bytes.len() + 19_100, 0);
        assert!(decode_fast(&bytes).is_none());
        let (ours, theirs) = both(&bytes);
        assert_eq!(ours, theirs);
        // A count that fits (three entries of seven bytes) still takes the fast path.
        let mut ok = vec![0x84];
        for (k, v) in [
            ("version", vec![0x01]),
            ("message_id", vec![0xa1, b'm']),
            ("type", vec![0xa5, b'e', b'v', b'e', b'n', b't']),
        ] {
            put_str(&mut ok, k).unwrap();
            ok.extend_from_slice(&v);
        }
        put_str(&mut ok, "attachments").unwrap();
        ok.push(0x93);
        for _ in 0..3 {
            ok.push(0x81);
            put_str(&mut ok, "size").unwrap();
            ok.push(0x00);
        }
        let fast = decode_fast(&ok).expect("fast path");
        assert_eq!(fast.attachments.len(), 3);
    }
}

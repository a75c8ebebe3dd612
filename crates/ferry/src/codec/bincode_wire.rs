//! bincode's wire form of the envelope.
//!
//! bincode is not self-describing: it cannot skip absent fields nor decode a
//! `serde_json::Value`. The wire structs, generated from the field list
//! (`protocol/schema.rs`), keep every field (options included) in list order, and carry the
//! free-form JSON parts (`data`, `metrics`, `attachments`) as JSON text, the message type
//! and priority as their index and the error body as a tuple ([`ToWire`], [`FromWire`]).

use super::view::{EnvelopeRef, Metas};
use super::HeaderError;
use crate::protocol::schema::envelope_fields;
use crate::protocol::{
    AttachmentMeta, Envelope, ErrorBody, ErrorCode, MessageType, Metrics, Priority,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A field's borrowed type as it is written: `Wire` is what bincode serializes.
trait ToWire<'a> {
    type Wire: Serialize;
    fn to_wire(&self) -> Result<Self::Wire, HeaderError>;
}

/// A field's owned type as it is read: `Wire` is what bincode deserializes.
trait FromWire: Sized {
    type Wire: serde::de::DeserializeOwned;
    fn from_wire(wire: Self::Wire) -> Result<Self, HeaderError>;
    /// The wire form of an owned value (the tests' reference for `encode`).
    #[cfg(test)]
    fn reference(&self) -> Self::Wire;
}

/// Fields written as they are (numbers, flags, text).
macro_rules! as_is {
    ($($owned:ty => $borrowed:ty),* $(,)?) => {$(
        impl<'a> ToWire<'a> for $borrowed {
            type Wire = $borrowed;
            #[inline(always)]
            fn to_wire(&self) -> Result<Self::Wire, HeaderError> {
                Ok(*self)
            }
        }
        impl FromWire for $owned {
            type Wire = $owned;
            #[inline(always)]
            fn from_wire(wire: Self::Wire) -> Result<Self, HeaderError> {
                Ok(wire)
            }
            #[cfg(test)]
            fn reference(&self) -> Self::Wire {
                self.clone()
            }
        }
    )*};
}
as_is!(
    u32 => u32,
    String => &'a str,
    Option<String> => Option<&'a str>,
    Option<u64> => Option<u64>,
    Option<bool> => Option<bool>,
);

/// The message type as its index.
impl ToWire<'_> for MessageType {
    type Wire = u8;
    fn to_wire(&self) -> Result<u8, HeaderError> {
        Ok(kind_to_u8(*self))
    }
}

impl FromWire for MessageType {
    type Wire = u8;
    fn from_wire(wire: u8) -> Result<Self, HeaderError> {
        kind_from_u8(wire)
    }
    #[cfg(test)]
    fn reference(&self) -> u8 {
        kind_to_u8(*self)
    }
}

/// The priority as its index.
impl ToWire<'_> for Option<Priority> {
    type Wire = Option<u8>;
    fn to_wire(&self) -> Result<Option<u8>, HeaderError> {
        Ok(self.map(|p| p as u8))
    }
}

impl FromWire for Option<Priority> {
    type Wire = Option<u8>;
    fn from_wire(wire: Option<u8>) -> Result<Self, HeaderError> {
        wire.map(priority_from_u8).transpose()
    }
    #[cfg(test)]
    fn reference(&self) -> Option<u8> {
        self.map(|p| p as u8)
    }
}

/// `data` as JSON text (`null` like absent).
impl ToWire<'_> for Option<&Value> {
    type Wire = Option<String>;
    fn to_wire(&self) -> Result<Option<String>, HeaderError> {
        self.filter(|d| !d.is_null()).map(to_json).transpose()
    }
}

impl FromWire for Option<Value> {
    type Wire = Option<String>;
    fn from_wire(wire: Option<String>) -> Result<Self, HeaderError> {
        wire.as_deref().map(from_json).transpose()
    }
    #[cfg(test)]
    fn reference(&self) -> Option<String> {
        self.as_ref()
            .filter(|d| !d.is_null())
            .map(|d| to_json(d).unwrap())
    }
}

/// The error body as `(code, message, retryable)`.
impl<'a> ToWire<'a> for Option<&'a ErrorBody> {
    type Wire = Option<(&'a str, &'a str, bool)>;
    fn to_wire(&self) -> Result<Self::Wire, HeaderError> {
        Ok(self.map(|b| (b.code.as_str(), b.message.as_str(), b.retryable)))
    }
}

impl FromWire for Option<ErrorBody> {
    type Wire = Option<(String, String, bool)>;
    fn from_wire(wire: Self::Wire) -> Result<Self, HeaderError> {
        Ok(wire.map(|(code, message, retryable)| ErrorBody {
            code: ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal),
            message,
            retryable,
        }))
    }
    #[cfg(test)]
    fn reference(&self) -> Self::Wire {
        self.as_ref()
            .map(|b| (b.code.as_str().to_owned(), b.message.clone(), b.retryable))
    }
}

/// Metrics as JSON text.
impl ToWire<'_> for Option<&Metrics> {
    type Wire = Option<String>;
    fn to_wire(&self) -> Result<Option<String>, HeaderError> {
        self.map(to_json).transpose()
    }
}

impl FromWire for Option<Metrics> {
    type Wire = Option<String>;
    fn from_wire(wire: Option<String>) -> Result<Self, HeaderError> {
        wire.as_deref().map(from_json).transpose()
    }
    #[cfg(test)]
    fn reference(&self) -> Option<String> {
        self.as_ref().map(|m| to_json(m).unwrap())
    }
}

/// Attachment metadata as JSON text, absent when there is none.
impl ToWire<'_> for Metas<'_> {
    type Wire = Option<String>;
    fn to_wire(&self) -> Result<Option<String>, HeaderError> {
        (!self.is_empty()).then(|| to_json(self)).transpose()
    }
}

impl FromWire for Vec<AttachmentMeta> {
    type Wire = Option<String>;
    fn from_wire(wire: Option<String>) -> Result<Self, HeaderError> {
        Ok(wire
            .as_deref()
            .map(from_json)
            .transpose()?
            .unwrap_or_default())
    }
    #[cfg(test)]
    fn reference(&self) -> Option<String> {
        (!self.is_empty()).then(|| to_json(self).unwrap())
    }
}

/// Generates the wire structs, [`encode`] and [`decode`] from the field list.
macro_rules! define_wire {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// What is written: every field, in list order (bincode writes `&str` and
        /// `String` alike, so this is [`Wire`]'s layout).
        #[derive(Serialize)]
        struct WireRef<'a> {
            $($name: <$borrowed as ToWire<'a>>::Wire,)*
        }

        /// What is read.
        #[derive(Deserialize)]
        #[cfg_attr(test, derive(Serialize))]
        pub(super) struct Wire {
            $($name: <$owned as FromWire>::Wire,)*
        }

        /// The wire form of an owned envelope, field by field (the tests' reference for
        /// `encode`).
        #[cfg(test)]
        pub(super) fn reference_wire(e: &Envelope) -> Wire {
            Wire {
                $($name: FromWire::reference(&e.$name),)*
            }
        }

        pub(super) fn encode(e: &EnvelopeRef<'_>, out: &mut Vec<u8>) -> Result<(), HeaderError> {
            let wire = WireRef {
                $($name: ToWire::to_wire(&e.$name)?,)*
            };
            bincode::serialize_into(out, &wire).map_err(HeaderError::serde)
        }

        pub(super) fn decode(bytes: &[u8]) -> Result<Envelope, HeaderError> {
            use bincode::Options as _;
            // Why explicit options: the default `deserialize` trusts length prefixes and
            // can be made to allocate gigabytes; the limit bounds every allocation by the
            // header size.
            let wire: Wire = bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .allow_trailing_bytes()
                .with_limit(bytes.len() as u64)
                .deserialize(bytes)
                .map_err(HeaderError::serde)?;
            Ok(Envelope {
                $($name: FromWire::from_wire(wire.$name)?,)*
            })
        }
    };
}
envelope_fields!(define_wire);

/// The `request_id` of a bincode envelope header that did not decode: the first three
/// fields (`version`, `message_id`, `request_id`, the list's order) read alone, so a header
/// refused for a later field still says which request it answers.
pub(super) fn request_id(bytes: &[u8]) -> Option<String> {
    use bincode::Options as _;
    #[derive(Deserialize)]
    struct Prefix {
        _version: u32,
        _message_id: String,
        request_id: Option<String>,
    }
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize::<Prefix>(bytes)
        .ok()?
        .request_id
}

fn kind_to_u8(k: MessageType) -> u8 {
    match k {
        MessageType::Request => 0,
        MessageType::Response => 1,
        MessageType::Event => 2,
        MessageType::Error => 3,
        MessageType::Cancel => 4,
    }
}

fn kind_from_u8(k: u8) -> Result<MessageType, HeaderError> {
    Ok(match k {
        0 => MessageType::Request,
        1 => MessageType::Response,
        2 => MessageType::Event,
        3 => MessageType::Error,
        4 => MessageType::Cancel,
        other => return Err(HeaderError::UnknownMessageType(other)),
    })
}

fn priority_from_u8(p: u8) -> Result<Priority, HeaderError> {
    Ok(match p {
        0 => Priority::High,
        1 => Priority::Normal,
        2 => Priority::Low,
        other => return Err(HeaderError::UnknownPriority(other)),
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<String, HeaderError> {
    serde_json::to_string(v).map_err(HeaderError::serde)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, HeaderError> {
    serde_json::from_str(s).map_err(HeaderError::serde)
}

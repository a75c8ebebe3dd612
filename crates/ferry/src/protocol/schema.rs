//! The envelope's fields, listed once.
//!
//! [`envelope_fields!`] holds the one list of the envelope's fields, in wire order. Every
//! form of the envelope is generated from it: the owned [`Envelope`](super::Envelope) and
//! its serde form (`protocol/envelope.rs`), the borrowed `EnvelopeRef` and the conversions
//! between the two (`codec/view.rs`), the MessagePack writer and reader
//! (`codec/msgpack.rs`) and bincode's wire structs (`codec/bincode_wire.rs`).
//!
//! Each of those files defines a macro that receives the list and generates its code; what
//! a field's *type* means for a codec is a trait implemented once per type in that file
//! (for instance how an `Option<&str>` is written in MessagePack), so the generated code is
//! plain, statically dispatched field-by-field code, as if written by hand.
//!
//! # Adding a field
//!
//! Add one entry to the list below, at the position it takes on the wire. If its types are
//! ones the list already uses (`Option<String>` / `Option<&'a str>`, `Option<u64>`, ...),
//! nothing else changes. A field of a new type needs the per-type traits implemented for
//! it: [`Field`] here, `Borrowed` in `codec/view.rs`, `Put`/`Read` in `codec/msgpack.rs`
//! and `ToWire`/`FromWire` in `codec/bincode_wire.rs` (the compiler names each one
//! missing). Then document it in `docs/protocol.md` (the wire contract, kept by hand).

/// Calls `$consumer! { ... }` with the envelope's field list, in wire order.
///
/// Each entry is
///
/// ```text
/// /// doc comment (becomes the public field's rustdoc)
/// name "wire key": OwnedType, BorrowedType [, default];
/// ```
///
/// `default` marks an optional field: absent on the wire reads as [`Field::UNSET`], and an
/// unset value ([`Field::is_unset`]) is omitted when writing. Fields without it are
/// required. `BorrowedType` may use the lifetime `'a`. Types are spelled with full paths
/// because the list expands in several modules.
macro_rules! envelope_fields {
    ($consumer:ident) => {
        $consumer! {
            /// Protocol version; must equal [`PROTOCOL_VERSION`](crate::protocol::PROTOCOL_VERSION).
            version "version": u32, u32;
            /// Unique id of this message on its sender's side.
            message_id "message_id": String, &'a str;
            /// The request this message answers, reports on or cancels.
            request_id "request_id": Option<String>, Option<&'a str>, default;
            /// RFC 3339 UTC time the message was made (informational).
            timestamp "timestamp": Option<String>, Option<&'a str>, default;
            /// The message type.
            kind "type": $crate::protocol::MessageType, $crate::protocol::MessageType;
            /// The operation a request asks for.
            operation "operation": Option<String>, Option<&'a str>, default;
            /// The worker type a request is meant for.
            worker_type "worker_type": Option<String>, Option<&'a str>, default;
            /// Who sent it (free-form, for tracing).
            source "source": Option<String>, Option<&'a str>, default;
            /// Who it is for (free-form, for tracing).
            destination "destination": Option<String>, Option<&'a str>, default;
            /// Scheduling priority of a request.
            priority "priority": Option<$crate::protocol::Priority>,
                Option<$crate::protocol::Priority>, default;
            /// Milliseconds the request may take, from when the worker receives it.
            deadline_ms "deadline_ms": Option<u64>, Option<u64>, default;
            /// The payload: request input, response output, event detail. `null` and absent
            /// are the same on the wire (both are omitted and read back as `None`).
            data "data": Option<::serde_json::Value>, Option<&'a ::serde_json::Value>, default;
            /// `true` on responses, `false` on errors.
            success "success": Option<bool>, Option<bool>, default;
            /// What went wrong, on errors.
            error "error": Option<$crate::protocol::ErrorBody>,
                Option<&'a $crate::protocol::ErrorBody>, default;
            /// Worker-side measurements, on responses.
            metrics "metrics": Option<$crate::protocol::Metrics>,
                Option<&'a $crate::protocol::Metrics>, default;
            /// The event's name (`ready`, `progress`, ...), on events.
            event_name "event_name": Option<String>, Option<&'a str>, default;
            /// Binary attachments that travel with the message.
            attachments "attachments": Vec<$crate::protocol::AttachmentMeta>,
                Metas<'a>, default;
        }
    };
}
pub(crate) use envelope_fields;

use super::{AttachmentMeta, ErrorBody, MessageType, Metrics, Priority};
use serde_json::Value;

/// What "unset" means for a field's type, owned or borrowed.
///
/// For optional fields (`default` in the list) [`UNSET`](Field::UNSET) is what an absent
/// field reads as and [`is_unset`](Field::is_unset) decides whether it is omitted. Required
/// fields are never unset; their `UNSET` is only the placeholder a constructor overwrites.
pub(crate) trait Field: Sized {
    /// The value before anything is set.
    const UNSET: Self;
    /// Whether the value is left off the wire.
    fn is_unset(&self) -> bool;
}

/// Required fields: never omitted.
macro_rules! required {
    ($($t:ty = $unset:expr),* $(,)?) => {$(
        impl Field for $t {
            const UNSET: Self = $unset;
            #[inline(always)]
            fn is_unset(&self) -> bool {
                false
            }
        }
    )*};
}
required!(
    u32 = 0,
    String = String::new(),
    &str = "",
    MessageType = MessageType::Request
);

/// Optional fields: omitted when `None`.
macro_rules! optional {
    ($($t:ty),* $(,)?) => {$(
        impl Field for Option<$t> {
            const UNSET: Self = None;
            #[inline(always)]
            fn is_unset(&self) -> bool {
                self.is_none()
            }
        }
    )*};
}
optional!(String, &str, Priority, u64, bool, ErrorBody, &ErrorBody, Metrics, &Metrics);

/// `data`: `null` and absent are the same on the wire.
impl Field for Option<Value> {
    const UNSET: Self = None;
    #[inline(always)]
    fn is_unset(&self) -> bool {
        matches!(self, None | Some(Value::Null))
    }
}

impl Field for Option<&Value> {
    const UNSET: Self = None;
    #[inline(always)]
    fn is_unset(&self) -> bool {
        matches!(self, None | Some(Value::Null))
    }
}

impl Field for Vec<AttachmentMeta> {
    const UNSET: Self = Vec::new();
    #[inline(always)]
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

/// Whether the list marks a field optional (`default`), as a constant expression.
macro_rules! is_optional {
    () => {
        false
    };
    (default) => {
        true
    };
}
pub(crate) use is_optional;

/// Generates [`KEYS`].
#[cfg(test)]
macro_rules! define_keys {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// Every field's wire key, in wire order.
        pub(crate) const KEYS: &[&str] = &[$($key),*];
    };
}
#[cfg(test)]
envelope_fields!(define_keys);

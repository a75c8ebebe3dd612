//! A borrowed view of an envelope, which is what the codecs actually encode.
//!
//! Encoding from a view lets the hot paths send a message without building an owned
//! [`Envelope`] first (no `String` per id, no clone of `data`), and lets a framed
//! encoding fill in attachment sizes without cloning the envelope. Its serde form is
//! field for field the one of [`Envelope`] (same names, order and omissions), so every
//! codec writes the same bytes from either. Both are generated from the one field list
//! (`protocol/schema.rs`).

use crate::protocol::schema::{envelope_fields, Field};
use crate::protocol::{AttachmentMeta, Envelope, MessageType};
use serde::ser::{Serialize, Serializer};

/// Generates [`EnvelopeRef`] and its conversions from the field list.
macro_rules! define_envelope_ref {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $key:literal: $owned:ty, $borrowed:ty $(, $default:ident)?;
    )*) => {
        /// An envelope by reference. Build one from an [`Envelope`] with `From`, or field by
        /// field on a hot path.
        #[derive(Debug, Clone, Copy, serde::Serialize)]
        pub(crate) struct EnvelopeRef<'a> {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $key)]
                $(#[serde($default, skip_serializing_if = "Field::is_unset")])?
                pub $name: $borrowed,
            )*
        }

        impl<'a> EnvelopeRef<'a> {
            /// Every field unset; the required ones hold placeholders.
            const UNSET: Self = EnvelopeRef {
                $($name: <$borrowed as Field>::UNSET,)*
            };

            /// An owned envelope with the same fields.
            #[cfg(test)]
            pub(crate) fn to_envelope(self) -> Envelope {
                Envelope {
                    $($name: Borrowed::to_owned_field(self.$name),)*
                }
            }
        }

        impl<'a> From<&'a Envelope> for EnvelopeRef<'a> {
            #[inline]
            fn from(e: &'a Envelope) -> Self {
                EnvelopeRef {
                    $($name: Borrowed::borrow(&e.$name),)*
                }
            }
        }
    };
}
envelope_fields!(define_envelope_ref);

impl<'a> EnvelopeRef<'a> {
    /// A view with only the required fields set.
    #[inline]
    pub(crate) fn new(kind: MessageType, message_id: &'a str) -> Self {
        EnvelopeRef {
            version: crate::protocol::PROTOCOL_VERSION,
            message_id,
            kind,
            ..EnvelopeRef::UNSET
        }
    }
}

/// A field's borrowed type `Self` as a view of its owned type `O`.
pub(crate) trait Borrowed<'a, O>: Sized {
    /// The view of `owned`.
    fn borrow(owned: &'a O) -> Self;
    /// An owned copy.
    #[cfg(test)]
    fn to_owned_field(self) -> O;
}

/// Types that are their own view (copied).
impl<'a, T: Copy> Borrowed<'a, T> for T {
    #[inline(always)]
    fn borrow(owned: &'a T) -> Self {
        *owned
    }
    #[cfg(test)]
    fn to_owned_field(self) -> T {
        self
    }
}

impl<'a> Borrowed<'a, String> for &'a str {
    #[inline(always)]
    fn borrow(owned: &'a String) -> Self {
        owned
    }
    #[cfg(test)]
    fn to_owned_field(self) -> String {
        self.to_owned()
    }
}

impl<'a> Borrowed<'a, Option<String>> for Option<&'a str> {
    #[inline(always)]
    fn borrow(owned: &'a Option<String>) -> Self {
        owned.as_deref()
    }
    #[cfg(test)]
    fn to_owned_field(self) -> Option<String> {
        self.map(str::to_owned)
    }
}

/// Free-form parts (`data`, `error`, `metrics`), by reference.
impl<'a, T: Clone> Borrowed<'a, Option<T>> for Option<&'a T> {
    #[inline(always)]
    fn borrow(owned: &'a Option<T>) -> Self {
        owned.as_ref()
    }
    #[cfg(test)]
    fn to_owned_field(self) -> Option<T> {
        self.cloned()
    }
}

impl<'a> Borrowed<'a, Vec<AttachmentMeta>> for Metas<'a> {
    #[inline(always)]
    fn borrow(owned: &'a Vec<AttachmentMeta>) -> Self {
        Metas {
            metas: owned,
            sizes: None,
        }
    }
    #[cfg(test)]
    fn to_owned_field(self) -> Vec<AttachmentMeta> {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        (0..self.len())
            .map(|i| {
                let m = self.get(i);
                AttachmentMeta {
                    name: owned(m.name),
                    content_type: owned(m.content_type),
                    size: m.size,
                    data_base64: owned(m.data_base64),
                    path: owned(m.path),
                }
            })
            .collect()
    }
}

/// The `attachments` field: the metadata as it is, or resized to the attachments that
/// travel raw in a framed body with each `size` set from the bytes (and no `data_base64`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metas<'a> {
    pub metas: &'a [AttachmentMeta],
    /// The raw attachments, when they decide the count and sizes.
    pub sizes: Option<&'a [&'a [u8]]>,
}

// The borrowed form of the `attachments` field; `Metas` is named unqualified in the
// field list (`protocol/schema.rs`), which is below this layer.
impl Field for Metas<'_> {
    const UNSET: Self = Metas {
        metas: &[],
        sizes: None,
    };
    #[inline(always)]
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

impl<'a> Metas<'a> {
    /// How many attachments go on the wire.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self.sizes {
            Some(sizes) => sizes.len(),
            None => self.metas.len(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attachment `i` as it goes on the wire (`i < len()`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> MetaRef<'a> {
        let meta = self.metas.get(i);
        let text =
            |f: fn(&'a AttachmentMeta) -> &'a Option<String>| meta.and_then(|m| f(m).as_deref());
        match self.sizes {
            Some(sizes) => MetaRef {
                name: text(|m| &m.name),
                content_type: text(|m| &m.content_type),
                size: sizes[i].len() as u64,
                data_base64: None,
                path: text(|m| &m.path),
            },
            None => MetaRef {
                name: text(|m| &m.name),
                content_type: text(|m| &m.content_type),
                size: meta.map_or(0, |m| m.size),
                data_base64: text(|m| &m.data_base64),
                path: text(|m| &m.path),
            },
        }
    }
}

impl Serialize for Metas<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..self.len()).map(|i| self.get(i)))
    }
}

/// One [`AttachmentMeta`] by reference; the same serde form.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct MetaRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<&'a str>,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
}

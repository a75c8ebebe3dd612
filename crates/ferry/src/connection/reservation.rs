//! Claiming a place on a connection before sending (the pool claims under its dispatch
//! lock and sends outside it), and sending the request once claimed.

use super::slot::Slot;
use super::{CallError, Connection, Pending};
use crate::codec::EnvelopeRef;
use crate::protocol::{Envelope, MessageType, RequestId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a sender puts in the fields a request leaves unset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fill<'a> {
    /// `timestamp`, when the request has none.
    pub timestamp: Option<&'a str>,
    /// `worker_type`, when the request has none.
    pub worker_type: Option<&'a str>,
}

/// A place claimed on a connection for one request; see [`Connection::reserve`].
pub struct Reservation {
    /// Taken when sent; still here on drop: the place is released.
    pub(super) claim: Option<Claim>,
}

pub(super) struct Claim {
    pub(super) conn: Arc<Connection>,
    pub(super) id: RequestId,
    pub(super) key: u64,
    pub(super) slot: Arc<Slot>,
}

impl Claim {
    fn release(&self) {
        self.conn.state.lock().pending.remove(&self.key);
        self.conn.freed();
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.claim.as_ref().map(|c| c.id))
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// Whether the link sends a request's `timestamp` (envelope frames do; compact frames
    /// carry none, so a caller need not read the clock for it).
    pub fn sends_timestamps(&self) -> bool {
        self.claim
            .as_ref()
            .is_none_or(|c| c.conn.frame_header() == crate::protocol::FrameHeader::Envelope)
    }

    /// Sends `request` under the reserved id and returns the handle to wait on.
    pub fn send(
        self,
        request: &Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.send_filled(request, Fill::default(), attachments, deadline)
    }

    /// [`send`](Self::send), with `fill` supplying the fields the request leaves unset (on
    /// the wire only).
    pub(crate) fn send_filled(
        mut self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        let Some(claim) = self.claim.take() else {
            unreachable!("a reservation is sent once: send takes it by value");
        };
        // Sent under the reserved id from a view: the envelope is not rewritten.
        let mut view = EnvelopeRef::from(request);
        view.message_id = claim.id.as_str();
        view.kind = MessageType::Request;
        view.timestamp = view.timestamp.or(fill.timestamp);
        view.worker_type = view.worker_type.or(fill.worker_type);
        if let Err(e) = claim.conn.send_request(&view, Some(claim.key), attachments) {
            claim.release();
            if let CallError::WorkerCrashed { status } = &e {
                claim.conn.fail_all(status);
            }
            return Err(e);
        }
        let Claim {
            conn,
            id,
            key,
            slot,
        } = claim;
        Ok(Pending {
            conn,
            id,
            key,
            slot,
            window: deadline.map(|d| d.saturating_duration_since(Instant::now())),
            deadline,
            finished: false,
            is_async: false,
            lead_until: None,
        })
    }

    /// Like [`send`](Self::send), for a caller that will wait with
    /// [`Pending::next_async`]: the reader thread reads on its behalf.
    pub fn send_async(
        self,
        request: &Envelope,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.send_async_filled(request, Fill::default(), attachments, deadline)
    }

    /// [`send_async`](Self::send_async), with `fill` as in `send_filled`.
    pub(crate) fn send_async_filled(
        self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Pending, CallError> {
        self.send_async_with(request, fill, attachments, deadline, None)
    }

    /// [`send_async_filled`](Self::send_async_filled) for a caller that awaits
    /// [`Pending::next_async`] at once: its polls read the link on the caller's thread for
    /// `lead` after the send (the pool's `async_lead`) before the reader thread is woken,
    /// so a quick answer costs no thread hop. A zero `lead` is `send_async_filled`.
    pub(crate) fn send_async_leading(
        self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
        lead: Duration,
    ) -> Result<Pending, CallError> {
        let lead = (!lead.is_zero()).then_some(lead);
        self.send_async_with(request, fill, attachments, deadline, lead)
    }

    fn send_async_with(
        self,
        request: &Envelope,
        fill: Fill<'_>,
        attachments: &[&[u8]],
        deadline: Option<Instant>,
        lead: Option<Duration>,
    ) -> Result<Pending, CallError> {
        let Some((conn, key)) = self.claim.as_ref().map(|c| (c.conn.clone(), c.key)) else {
            unreachable!("a reservation is sent once: send_async takes it by value");
        };
        if lead.is_none() {
            conn.register_async(key)?;
        }
        match self.send_filled(request, fill, attachments, deadline) {
            Ok(mut p) => {
                p.is_async = true;
                p.lead_until = lead.map(|lead| Instant::now() + lead);
                Ok(p)
            }
            Err(e) => {
                conn.async_done(key);
                Err(e)
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            claim.release();
        }
    }
}

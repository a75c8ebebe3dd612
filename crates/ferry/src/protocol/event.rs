//! Events as a caller reads them: the protocol's `progress` event typed, anything else as
//! it came.

use super::{Envelope, MessageType, EVENT_PROGRESS};

/// A worker's `progress` event: `{"progress": 0.4, "stage": "...", "message": "..."}`.
///
/// ```
/// use ferry::protocol::{Envelope, Event, Progress};
/// use serde_json::json;
///
/// let env = Envelope::event(
///     "w-7",
///     Some("r-1".into()),
///     "progress",
///     json!({"progress": 0.4, "stage": "denoise", "message": "step 12/30"}),
/// );
/// let Event::Progress(p) = Event::from_envelope(&env) else { panic!("not progress") };
/// assert_eq!(p, Progress { fraction: 0.4, stage: "denoise".into(), message: "step 12/30".into() });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// How far the request is, from 0.0 to 1.0 (clamped; the wire field is `progress`).
    pub fraction: f64,
    /// The stage's name (empty when the worker sent none).
    pub stage: String,
    /// A human-readable detail (empty when the worker sent none).
    pub message: String,
}

impl Progress {
    /// The progress an envelope reports: a `progress` event whose data has a numeric
    /// `progress`; `None` for anything else.
    pub fn from_envelope(envelope: &Envelope) -> Option<Progress> {
        if envelope.kind != MessageType::Event
            || envelope.event_name.as_deref() != Some(EVENT_PROGRESS)
        {
            return None;
        }
        let data = envelope.data.as_ref()?;
        let fraction = data.get("progress")?.as_f64()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Progress {
            // NaN is not a fraction of anything: read as no progress yet.
            fraction: if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            },
            stage: text("stage"),
            message: text("message"),
        })
    }
}

/// One event about a request, as a caller's event callback receives it.
///
/// The protocol's `progress` event arrives parsed; every other event (a worker's own
/// names, a `progress` event without a numeric `progress`) arrives as the envelope itself.
///
/// ```
/// use ferry::protocol::{Envelope, Event};
/// use serde_json::json;
///
/// let env = Envelope::event("w-8", Some("r-1".into()), "preview", json!({"step": 3}));
/// match Event::from_envelope(&env) {
///     Event::Progress(p) => println!("{:.0}% {}", p.fraction * 100.0, p.message),
///     Event::Other(env) => assert_eq!(env.event_name.as_deref(), Some("preview")),
///     _ => {}
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The protocol's `progress` event.
    Progress(Progress),
    /// Any other event, as received.
    Other(&'a Envelope),
}

impl<'a> Event<'a> {
    /// Reads an event envelope.
    pub fn from_envelope(envelope: &'a Envelope) -> Event<'a> {
        match Progress::from_envelope(envelope) {
            Some(p) => Event::Progress(p),
            None => Event::Other(envelope),
        }
    }

    /// The event's name on the wire (`progress`, or the worker's own).
    pub fn name(&self) -> &str {
        match self {
            Event::Progress(_) => EVENT_PROGRESS,
            Event::Other(env) => env.event_name.as_deref().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, data: serde_json::Value) -> Envelope {
        Envelope::event("w-1", Some("r-1".into()), name, data)
    }

    #[test]
    fn progress_without_stage_or_message_reads_as_empty_text() {
        let env = event("progress", json!({"progress": 1.5}));
        assert_eq!(
            Event::from_envelope(&env),
            Event::Progress(Progress {
                fraction: 1.0,
                stage: String::new(),
                message: String::new()
            })
        );
    }

    #[test]
    fn other_events_and_malformed_progress_fall_back_to_the_envelope() {
        for env in [
            event("preview", json!({"progress": 0.5})),
            event("progress", json!({"progress": "half"})),
            event("progress", json!(null)),
        ] {
            assert_eq!(Event::from_envelope(&env), Event::Other(&env));
        }
        assert_eq!(Event::from_envelope(&event("x", json!(1))).name(), "x");
    }
}

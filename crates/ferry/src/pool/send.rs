//! Pool calls built with [`Call`]: the front door for embedding hosts.

use super::{Pool, PoolError};
use crate::connection::{envelope_events, Call};
use crate::worker::{CallOptions, Response};
use std::borrow::Cow;

impl Pool {
    /// Sends `call` to a worker and waits for the answer: dispatch, send and receive happen
    /// on this thread, and the call's event handler sees each event as it arrives. The
    /// connection assigns the message id. The call's deadline (or the pool's
    /// `request_timeout`) bounds queueing, retries and the answer.
    ///
    /// Any program that speaks the protocol is a worker; this one speaks the old design's
    /// legacy dialect in one line of shell, so the example runs anywhere:
    ///
    /// ```
    /// use ferry::prelude::*;
    /// use serde_json::json;
    ///
    /// let script = r#"while read -r _; do echo '{"success": true, "data": "pong"}'; done"#;
    /// let spec = WorkerSpec::new("pong", "sh", ["-c", script]).dialect(Dialect::Legacy);
    /// let pool = Pool::start(spec, PoolConfig::default().workers(2, 2))?;
    /// let reply = pool.send(Call::new("ping").data(json!({"n": 1})))?;
    /// assert_eq!(reply.data, json!("pong"));
    /// pool.shutdown();
    /// # Ok::<(), PoolError>(())
    /// ```
    pub fn send(&self, call: Call<'_>) -> Result<Response, PoolError> {
        let (request, attachments, mut on_event) = call.into_parts();
        let parts: Vec<&[u8]> = attachments.iter().map(|a| &a[..]).collect();
        self.call_with(
            request,
            &parts,
            &CallOptions::default(),
            envelope_events(&mut on_event),
        )
    }

    /// [`send`](Self::send) from async code: the request is sent from this task, which then
    /// reads the link itself for up to the pool's
    /// [`async_lead`](crate::pool::PoolConfig::async_lead) (50 µs by default; an answer
    /// within it costs no thread hop); after that the connection's reader thread delivers
    /// events and the answer (one wake-up). Waiting never blocks the executor longer than
    /// that window, so it runs on any runtime, a current-thread one included. Borrowed
    /// attachments are copied once (owned ones are moved).
    ///
    /// ```
    /// use ferry::prelude::*;
    ///
    /// let script = r#"while read -r _; do echo '{"success": true, "data": "pong"}'; done"#;
    /// let spec = WorkerSpec::new("pong", "sh", ["-c", script]).dialect(Dialect::Legacy);
    /// let pool = Pool::start(spec, PoolConfig::default())?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    /// let reply = runtime.block_on(pool.send_async(Call::new("ping")))?;
    /// assert_eq!(reply.data, "pong");
    /// pool.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn send_async(&self, call: Call<'_>) -> Result<Response, PoolError> {
        let (request, attachments, mut on_event) = call.into_parts();
        let attachments = attachments.into_iter().map(Cow::into_owned).collect();
        self.call_async(
            request,
            attachments,
            CallOptions::default(),
            envelope_events(&mut on_event),
        )
        .await
    }
}

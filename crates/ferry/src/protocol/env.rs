//! The environment variables a host sets for the worker it spawns: part of the wire
//! contract, since a worker in any language reads them to find its channel (see
//! `docs/protocol.md`, "The channel").

/// Which transport carries the protocol: `stdio` (default), `socket`, `tcp`.
pub const FERRY_TRANSPORT: &str = "FERRY_TRANSPORT";

/// Which codec encodes envelopes: `json` (default), `msgpack`, `bincode`.
pub const FERRY_CODEC: &str = "FERRY_CODEC";

/// The frame header the host offers on a framed link: `compact`, or `envelope` (the
/// default when unset). A worker that speaks it accepts with `frame_header` in `ready`.
pub const FERRY_FRAME_HEADER: &str = "FERRY_FRAME_HEADER";

/// `stdio` transport: `length_prefixed` when the host offers to switch the link to
/// length-prefixed binary frames right after the worker's `ready` line; unset (or `lines`)
/// otherwise. A worker that speaks it accepts with `stdio_framing` and `stdio_codec` in
/// `ready` (docs/protocol.md, "Binary frames on stdio"); one that ignores it keeps NDJSON.
pub const FERRY_STDIO_FRAMING: &str = "FERRY_STDIO_FRAMING";

/// `stdio` transport, with `FERRY_STDIO_FRAMING=length_prefixed`: the codec of the frames
/// after the switch (`msgpack`, `bincode` or `json`). `FERRY_CODEC` stays `json`, the
/// codec of the `ready` line and of a worker that does not switch.
pub const FERRY_STDIO_CODEC: &str = "FERRY_STDIO_CODEC";

/// The maximum frame size in bytes, both directions.
pub const FERRY_MAX_FRAME: &str = "FERRY_MAX_FRAME";

/// The id the host gave this worker (for logs).
pub const FERRY_WORKER_ID: &str = "FERRY_WORKER_ID";

/// The worker type the host expects.
pub const FERRY_WORKER_TYPE: &str = "FERRY_WORKER_TYPE";

/// The host's process id, so a worker can notice its host is gone.
pub const FERRY_HOST_PID: &str = "FERRY_HOST_PID";

/// The worker's private temp folder, made by the host (also in `TMPDIR`, `TMP`,
/// `TEMP`): removed by the host when the worker ends, and by the worker's watchdog when
/// the host dies first.
pub const FERRY_TMPDIR: &str = "FERRY_TMPDIR";

/// `socket` transport: the name to connect to, a path or `@name` (namespaced).
pub const FERRY_SOCKET: &str = "FERRY_SOCKET";

/// `tcp` transport: the host's address, `host:port`.
pub const FERRY_TCP_ADDR: &str = "FERRY_TCP_ADDR";

/// `socket` and `tcp` transports: the token to offer in the connection handshake.
pub const FERRY_TOKEN: &str = "FERRY_TOKEN";

/// `tcp` transport: `1` when the host speaks TLS (the worker connects with TLS 1.2 or 1.3
/// and verifies the host's certificate, then does the token handshake inside it); unset or
/// `0` for plain TCP.
pub const FERRY_TLS: &str = "FERRY_TLS";

/// `tcp` transport with TLS: the PEM file of the certificates the worker trusts (the CA
/// that signed the host's certificate, or a self-signed certificate itself).
pub const FERRY_TLS_CA: &str = "FERRY_TLS_CA";

/// `tcp` transport with TLS: the name the host's certificate is verified for, a DNS name or
/// an IP address (default: the host part of `FERRY_TCP_ADDR`).
pub const FERRY_TLS_SERVER_NAME: &str = "FERRY_TLS_SERVER_NAME";

/// The device the host assigned this worker (a pool's `devices`), e.g. `cuda:1` or `cpu`;
/// unset when none was. For `cuda:N` the host also sets `CUDA_VISIBLE_DEVICES=N`, so the
/// worker sees that GPU alone, as its device 0.
pub const FERRY_DEVICE: &str = "FERRY_DEVICE";

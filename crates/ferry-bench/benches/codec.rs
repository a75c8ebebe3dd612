//! The codecs alone, no process and no transport: encoding and decoding one request
//! envelope and its response, through the public [`Codec`] the engine uses on every link,
//! beside a general-purpose crate doing the same job where there is one, so the table says
//! whether each hand-written path earns its place. Run: `cargo bench --bench codec`.
//!
//! Messages (as the suite sends them): a request (`echo`, with a timestamp and worker type,
//! as `WorkerProcess::call_with` fills them) and its response, each with `data` a JSON
//! string of 64 B or 4 KiB; and the same pair with `data` null and one 1 MiB attachment.
//!
//! Paths, each in groups `codec_encode` and `codec_decode` with the message as parameter:
//!
//! | id | what | beside |
//! |---|---|---|
//! | `msgpack_ferry` | [`CodecKind::MsgPack`], framed: the hand-written writer and reader of `codec/msgpack.rs` | `msgpack_rmp_serde` |
//! | `msgpack_rmp_serde` | `rmp_serde::encode::write_named` / `rmp_serde::from_slice` over the same envelope (with its attachment sizes set), behind the same 4-byte length | |
//! | `json_ferry_framed` | [`CodecKind::Json`], framed: the borrowed view's `Serialize` (`codec/view.rs`) | `json_serde_derive` |
//! | `json_serde_derive` | `serde_json` over the owned [`Envelope`]'s derived `Serialize` (encode only: decoding is `serde_json` in both) | |
//! | `json_ferry_lines` | [`CodecKind::Json`] on a line link (stdio): attachments inline as base64 | |
//! | `bincode_ferry` | [`CodecKind::Bincode`], framed (the `bincode` crate over a wire struct; no hand-written path) | |
//! | `legacy` | the legacy dialect through its public API: `legacy::encode_request` + `serde_json` (requests), `serde_json` + `legacy::decode_answer` (answers) | |
//! | `compact_ferry` | [`CompactWire`] over MessagePack (docs/protocol.md, section 9): the hand-written 24-byte header, the message with the host's numeric id (`r-1`), the operation by its index in `ready` | `msgpack_ferry` |
//!
//! Group `json_text`: a JSON value as text, the way `ferry serve` writes an answer's data,
//! with parameter `string_64B`, `string_4KiB`, `string_1MiB` (a string of letters), `escapes_4KiB`
//! (a string with a quote, backslash or newline every 16 bytes) and `object_small` (a few
//! keys, numbers and short strings): `ferry_json_text`
//! ([`ferry::codec::json_text::push_value`], 64 or eight bytes checked at once) beside
//! `serde_json_to_string`, which it matches byte for byte.
//!
//! Not benched alone: the borrowed view *decoder* and the legacy dialect's borrowed line
//! writer are `pub(crate)` in `ferry`; the view's encoder is timed through every framed
//! `encode`. Figures and ratios: `docs/benchmarks.md`.

use criterion::measurement::WallTime;
use criterion::Throughput;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use ferry::codec::{Codec, CodecKind, CompactWire, Framing, DEFAULT_MAX_FRAME};
use ferry::protocol::{legacy, AttachmentMeta, Envelope, ReadyInfo};
use serde_json::Value;
use std::hint::black_box;
use std::time::Duration;

/// One message and its attachments.
struct Message {
    /// `request_64B`, `response_4KiB`, `request_1MiB_attachment`, ...
    name: String,
    envelope: Envelope,
    attachments: Vec<Vec<u8>>,
}

impl Message {
    fn parts(&self) -> Vec<&[u8]> {
        self.attachments.iter().map(Vec::as_slice).collect()
    }

    /// The envelope as a framed encoder writes it: each attachment's size in its metadata.
    fn sized(&self) -> Envelope {
        let mut e = self.envelope.clone();
        e.attachments = self
            .attachments
            .iter()
            .map(|a| AttachmentMeta {
                size: a.len() as u64,
                ..AttachmentMeta::default()
            })
            .collect();
        e
    }

    /// The message as a host and worker on a compact link send it: the id in the host's
    /// numeric form (`r-1`), which compact frames carry as a number, and no timestamp or
    /// worker type (compact frames drop them).
    fn hot(&self) -> Envelope {
        let mut e = self.envelope.clone();
        if e.request_id.is_some() {
            e.request_id = Some("r-1".into());
        } else {
            e.message_id = "r-1".into();
        }
        e.timestamp = None;
        e.worker_type = None;
        e
    }

    fn bytes(&self) -> u64 {
        let data = match &self.envelope.data {
            Some(Value::String(s)) => s.len(),
            _ => 0,
        };
        (data + self.attachments.iter().map(Vec::len).sum::<usize>()) as u64
    }
}

fn pair(label: &str, data: Value, attachments: Vec<Vec<u8>>) -> [Message; 2] {
    let data_is_null = data.is_null();
    let mut request = Envelope::request("m-00000000000000000001", "echo", data.clone());
    request.timestamp = Some("2026-11-30T12:00:00.000000Z".into());
    request.worker_type = Some("echo".into());
    let mut response = Envelope::response("w-00000000000000000001", "m-00000000000000000001", data);
    response.timestamp = Some("2026-11-30T12:00:00.000010Z".into());
    if data_is_null {
        // What the wire carries and every decoder returns: null data is absent.
        request.data = None;
        response.data = None;
    }
    [
        Message {
            name: format!("request_{label}"),
            envelope: request,
            attachments: attachments.clone(),
        },
        Message {
            name: format!("response_{label}"),
            envelope: response,
            attachments,
        },
    ]
}

fn messages() -> Vec<Message> {
    let text = |n: usize| {
        let bytes = ferry_bench::payload(n);
        Value::String(String::from_utf8(bytes).expect("the suite's payloads are ASCII"))
    };
    let mut all = Vec::new();
    all.extend(pair("64B", text(64), Vec::new()));
    all.extend(pair("4KiB", text(4096), Vec::new()));
    all.extend(pair(
        "1MiB_attachment",
        Value::Null,
        vec![ferry_bench::payload(1 << 20)],
    ));
    all
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

/// The compact wire of a worker that announced `echo` (MessagePack data).
fn compact_wire() -> CompactWire {
    CompactWire::new(
        CodecKind::MsgPack,
        DEFAULT_MAX_FRAME,
        &ReadyInfo::new("echo", vec!["echo".into()]),
    )
}

/// A compact frame of `m`: the header part, then the attachments. Checked to be a compact
/// frame (first byte 1 or 2), not the envelope frame a compact link falls back to.
fn compact_frame(wire: &CompactWire, m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    wire.encode(&m.hot(), &m.parts(), &mut out).expect("encode");
    assert!(matches!(out.first(), Some(1 | 2)), "{} is compact", m.name);
    for a in &m.attachments {
        out.extend_from_slice(a);
    }
    out
}

fn codec(kind: CodecKind, framing: Framing) -> Codec {
    Codec::new(kind, framing, DEFAULT_MAX_FRAME).expect("a valid codec")
}

/// The frame a transport would carry: header, then the attachments.
fn frame(codec: &Codec, m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    codec
        .encode(&m.envelope, &m.parts(), &mut out)
        .expect("encode");
    if codec.framing() == Framing::LengthPrefixed {
        for a in &m.attachments {
            out.extend_from_slice(a);
        }
    }
    out
}

/// `rmp_serde`'s framed header: the same 4-byte length, then `write_named`.
fn rmp_encode(sized: &Envelope, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(out, sized).expect("rmp_serde encode");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
}

/// `rmp_serde`'s read of a framed header (attachments located after it, not copied).
fn rmp_decode(frame: &[u8]) -> (Envelope, usize) {
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    let envelope: Envelope = rmp_serde::from_slice(&frame[4..4 + len]).expect("rmp_serde decode");
    (envelope, 4 + len)
}

/// The legacy worker's answer line to `m` (`success`, `request_id`, `data`).
fn legacy_answer(m: &Message) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "success": true,
        "request_id": m.envelope.message_id,
        "data": m.envelope.data.clone().unwrap_or(Value::Null),
    }))
    .expect("JSON")
}

fn encode(c: &mut Criterion) {
    let mut group = group(c, "codec_encode");
    let msgpack = codec(CodecKind::MsgPack, Framing::LengthPrefixed);
    let json_framed = codec(CodecKind::Json, Framing::LengthPrefixed);
    let json_lines = codec(CodecKind::Json, Framing::Lines);
    let bincode = codec(CodecKind::Bincode, Framing::LengthPrefixed);
    let compact = compact_wire();
    let mut out = Vec::with_capacity(2 << 20);
    for m in messages() {
        group.throughput(Throughput::Bytes(m.bytes()));
        group.sample_size(if m.bytes() >= 1 << 20 { 20 } else { 100 });
        let parts = m.parts();
        let sized = m.sized();
        for (id, codec) in [
            ("msgpack_ferry", &msgpack),
            ("json_ferry_framed", &json_framed),
            ("json_ferry_lines", &json_lines),
            ("bincode_ferry", &bincode),
        ] {
            group.bench_function(BenchmarkId::new(id, &m.name), |b| {
                b.iter(|| {
                    codec
                        .encode(black_box(&m.envelope), black_box(&parts), &mut out)
                        .expect("encode");
                    black_box(out.len())
                })
            });
        }
        group.bench_function(BenchmarkId::new("msgpack_rmp_serde", &m.name), |b| {
            b.iter(|| {
                rmp_encode(black_box(&sized), &mut out);
                black_box(out.len())
            })
        });
        let hot = m.hot();
        // Outside the timing: the message is one a compact link sends compact.
        compact_frame(&compact, &m);
        group.bench_function(BenchmarkId::new("compact_ferry", &m.name), |b| {
            b.iter(|| {
                compact
                    .encode(black_box(&hot), black_box(&parts), &mut out)
                    .expect("encode");
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("json_serde_derive", &m.name), |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(&[0; 4]);
                serde_json::to_writer(&mut out, black_box(&sized)).expect("JSON");
                let len = (out.len() - 4) as u32;
                out[..4].copy_from_slice(&len.to_le_bytes());
                black_box(out.len())
            })
        });
        if m.name.starts_with("request") {
            group.bench_function(BenchmarkId::new("legacy", &m.name), |b| {
                b.iter(|| {
                    out.clear();
                    let line = legacy::encode_request(black_box(&m.envelope));
                    serde_json::to_writer(&mut out, &line).expect("JSON");
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = group(c, "codec_decode");
    let msgpack = codec(CodecKind::MsgPack, Framing::LengthPrefixed);
    let json_framed = codec(CodecKind::Json, Framing::LengthPrefixed);
    let json_lines = codec(CodecKind::Json, Framing::Lines);
    let bincode = codec(CodecKind::Bincode, Framing::LengthPrefixed);
    let compact = compact_wire();
    for m in messages() {
        group.throughput(Throughput::Bytes(m.bytes()));
        group.sample_size(if m.bytes() >= 1 << 20 { 20 } else { 100 });
        for (id, codec) in [
            ("msgpack_ferry", &msgpack),
            ("json_ferry_framed", &json_framed),
            ("json_ferry_lines", &json_lines),
            ("bincode_ferry", &bincode),
        ] {
            let frame = frame(codec, &m);
            let decoded = codec.decode(&frame).expect("decode");
            assert_eq!(decoded.envelope.data, m.envelope.data, "{id} {}", m.name);
            assert_eq!(decoded.attachment_count(), m.attachments.len());
            // Decoded frames are dropped outside the timing: a decoder's cost is reading.
            group.bench_function(BenchmarkId::new(id, &m.name), |b| {
                b.iter_with_large_drop(|| codec.decode(black_box(&frame)).expect("decode"))
            });
        }
        // The same bytes: the hand-written writer produces `write_named`'s exactly.
        let frame = frame(&msgpack, &m);
        let (envelope, _) = rmp_decode(&frame);
        assert_eq!(
            envelope,
            m.sized(),
            "rmp_serde reads what msgpack_ferry wrote"
        );
        group.bench_function(BenchmarkId::new("msgpack_rmp_serde", &m.name), |b| {
            b.iter_with_large_drop(|| rmp_decode(black_box(&frame)))
        });
        let compact_bytes = compact_frame(&compact, &m);
        let decoded = compact.decode(&compact_bytes).expect("decode");
        assert_eq!(decoded.envelope.data, m.envelope.data, "compact {}", m.name);
        assert_eq!(decoded.attachment_count(), m.attachments.len());
        group.bench_function(BenchmarkId::new("compact_ferry", &m.name), |b| {
            b.iter_with_large_drop(|| compact.decode(black_box(&compact_bytes)).expect("decode"))
        });
        if m.name.starts_with("response") && m.attachments.is_empty() {
            let line = legacy_answer(&m);
            group.bench_function(BenchmarkId::new("legacy", &m.name), |b| {
                b.iter_with_large_drop(|| {
                    let value: Value = serde_json::from_slice(black_box(&line)).expect("JSON");
                    legacy::decode_answer(value, String::from("m-1")).expect("answer")
                })
            });
        }
    }
    group.finish();
}

/// The values of group `json_text`.
fn json_values() -> Vec<(&'static str, Value)> {
    let letters =
        |n: usize| -> String { (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect() };
    let escapes: String = (0..4096)
        .map(|i| match i % 48 {
            15 => '"',
            31 => '\\',
            47 => '\n',
            _ => 'x',
        })
        .collect();
    vec![
        ("string_64B", Value::String(letters(64))),
        ("string_4KiB", Value::String(letters(4096))),
        ("string_1MiB", Value::String(letters(1 << 20))),
        ("escapes_4KiB", Value::String(escapes)),
        (
            "object_small",
            serde_json::json!({"prompt": "a lighthouse at dusk", "seed": 42, "steps": 30,
                "guidance": 7.5, "size": [1024, 1024], "negative": null}),
        ),
    ]
}

fn json_text(c: &mut Criterion) {
    let mut group = group(c, "json_text");
    for (name, value) in json_values() {
        let text = serde_json::to_string(&value).unwrap();
        let mut mine = String::new();
        ferry::codec::json_text::push_value(&mut mine, &value);
        assert_eq!(mine, text, "{name}: not the text serde_json writes");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(BenchmarkId::new("ferry_json_text", name), |b| {
            b.iter(|| {
                let mut out = String::with_capacity(text.len());
                ferry::codec::json_text::push_value(&mut out, black_box(&value));
                out
            })
        });
        group.bench_function(BenchmarkId::new("serde_json_to_string", name), |b| {
            b.iter(|| serde_json::to_string(black_box(&value)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode, json_text);
criterion_main!(benches);

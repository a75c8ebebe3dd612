//! The host calling the real Rust echo worker over tcp with TLS (a self-signed certificate
//! made by the test): the worker reads `FERRY_TLS` and `FERRY_TLS_CA` and verifies the
//! host; one told to trust another certificate fails to start instead of hanging.

use crate::common;

use common::{ferry_bin, with_watchdog, WATCHDOG};
use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::tls::TlsOptions;
use ferry::transport::{TransportKind, TransportOptions};
use ferry::worker::{CallOptions, SpawnError, WorkerProcess, WorkerSpec};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A self-signed certificate for `localhost` and `127.0.0.1` in `dir`: (cert, key).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

fn spec(tls: TlsOptions, codec: CodecKind) -> WorkerSpec {
    let mut spec = WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]);
    spec.transport = TransportKind::Tcp;
    let mut options = TransportOptions::default();
    options.tcp.tls = Some(tls);
    spec.transport_options = options;
    spec.codec = codec;
    spec
}

#[test]
fn echo_with_attachments_over_tls_with_every_codec() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "host");
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let big: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i >> 3) as u8).collect();
        for codec in CodecKind::ALL {
            let mut w = WorkerProcess::spawn(spec(TlsOptions::new(&cert, &key), codec))
                .unwrap_or_else(|e| panic!("{codec}: spawn: {e}"));
            for i in 0..10 {
                let data = json!({"i": i, "text": "héllo \n \u{1F980}"});
                let request = Envelope::request("", "echo", data.clone());
                let reply = w
                    .call_with(request, &[&image, b"raw"], &CallOptions::default(), |_| {})
                    .unwrap_or_else(|e| panic!("{codec}: call: {e}"));
                assert_eq!(reply.data, data, "{codec}");
                assert_eq!(reply.attachments, vec![image.clone(), b"raw".to_vec()]);
            }
            let request = Envelope::request("", "echo", json!({"name": "big.bin"}));
            let reply = w
                .call_with(request, &[&big], &CallOptions::default(), |_| {})
                .unwrap();
            assert!(reply.attachments[0] == big, "{codec}: 16 MiB differ");
            let status = w.shutdown().unwrap();
            assert!(status.success(), "{codec}: worker exit {status}");
        }
    });
}

#[test]
fn worker_told_to_trust_another_certificate_fails_to_start() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "host");
        let (other, _) = self_signed(dir.path(), "other");
        let tls = TlsOptions::new(&cert, &key).trust(&other);
        let err = WorkerProcess::spawn(spec(tls, CodecKind::Json)).unwrap_err();
        // The worker refuses the host's certificate and exits: a startup failure, reported
        // when the worker exits (not at the startup deadline).
        assert!(matches!(err, SpawnError::ExitedBeforeReady { .. }), "{err}");
    });
}

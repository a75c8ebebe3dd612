//! The Python echo worker (`ferry_worker`, running on the engine's worker runtime) over tcp
//! with TLS: the runtime reads `FERRY_TLS` and `FERRY_TLS_CA` and verifies the host, so
//! Python workers get TLS without Python code of their own.

use crate::common;
use crate::common::python as python_env;

use common::with_watchdog;
use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::tls::TlsOptions;
use ferry::transport::TransportKind;
use ferry::worker::{CallOptions, SpawnError, WorkerProcess, WorkerSpec};
use python_env::python_or_skip;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn spec(python: &Path, tls: TlsOptions) -> WorkerSpec {
    let mut spec = WorkerSpec::new(
        "echo",
        python.display().to_string(),
        ["-m", "ferry_worker.echo"],
    );
    spec.transport = TransportKind::Tcp;
    spec.codec = CodecKind::MsgPack;
    spec.transport_options.tcp.tls = Some(tls);
    spec
}

#[test]
fn python_echo_worker_over_tls() {
    let Some(python) = python_or_skip("python_echo_worker_over_tls") else {
        return;
    };
    with_watchdog(Duration::from_secs(120), move || {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
            let cert = dir.path().join(format!("{name}.pem"));
            let key = dir.path().join(format!("{name}.key"));
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
            (cert, key)
        };
        let (cert, key) = write("host");
        let (other, _) = write("other");

        let mut w = WorkerProcess::spawn(spec(&python, TlsOptions::new(&cert, &key)))
            .expect("python worker starts over TLS");
        let image = vec![3u8; 200_000];
        let request = Envelope::request("", "echo", json!({"over": "tls"}));
        let reply = w
            .call_with(request, &[&image], &CallOptions::default(), |_| {})
            .unwrap();
        assert_eq!(reply.data, json!({"over": "tls"}));
        assert_eq!(reply.attachments, vec![image]);
        assert!(w.shutdown().unwrap().success());

        // Told to trust another certificate, the worker refuses the host and exits.
        let err = WorkerProcess::spawn(spec(&python, TlsOptions::new(&cert, &key).trust(&other)))
            .unwrap_err();
        assert!(matches!(err, SpawnError::ExitedBeforeReady { .. }), "{err}");
    });
}

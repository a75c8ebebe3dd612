//! A worker type on the tcp transport with TLS (`tls_cert`, `tls_key` in ferry.toml, a
//! self-signed certificate made by the test) serves calls through `ferry serve`.

use crate::common;

use common::http::Server;
use common::{with_watchdog, WATCHDOG};
use serde_json::json;

#[test]
fn tcp_worker_type_with_tls_serves_a_call() {
    with_watchdog(WATCHDOG, || {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert = dir.path().join("host.pem");
        let key = dir.path().join("host.key");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        let config = format!(
            r#"
[server]
bind = "127.0.0.1:0"

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
transport = "tcp"
codec = "msgpack"
tls_cert = {cert:?}
tls_key = {key:?}
[workers.echo.pool]
min_workers = 1
max_workers = 1
"#,
            ferry = common::ferry_bin(),
            cert = cert.to_str().unwrap(),
            key = key.to_str().unwrap(),
        );
        let server = Server::start(&config);
        let mut c = server.client();
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"echo","data":{"prompt":"over TLS"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["data"], json!({"prompt": "over TLS"}));
        assert!(server.stop().success());
    });
}

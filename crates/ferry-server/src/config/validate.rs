//! Checks beyond what the types enforce. Errors are `(dotted key, reason)`.

use super::{FerryConfig, StepConfig, WorkerTypeConfig};
use ferry::codec::{Codec, CodecKind};
use ferry::transport::TransportKind;
use ferry::worker::Dialect;
use serde_json::Value;
use std::collections::HashSet;

type Invalid = (String, String);

/// The `tls_*` keys of a worker type that are set, by name.
fn tls_keys(w: &WorkerTypeConfig) -> [(&'static str, bool); 4] {
    [
        ("tls_cert", w.tls_cert.is_some()),
        ("tls_key", w.tls_key.is_some()),
        ("tls_ca", w.tls_ca.is_some()),
        ("tls_server_name", w.tls_server_name.is_some()),
    ]
}

/// TLS keys: only with `transport = "tcp"`, `tls_cert` and `tls_key` together, the others
/// only with them, a server name that is a DNS name or an IP address.
fn check_tls_keys(w: &WorkerTypeConfig) -> Result<(), (&'static str, String)> {
    let Some((first, _)) = tls_keys(w).into_iter().find(|(_, set)| *set) else {
        return Ok(());
    };
    if w.transport != TransportKind::Tcp {
        return Err((
            first,
            format!(
                "TLS is for the tcp transport only (this worker type uses `{}`)",
                w.transport
            ),
        ));
    }
    match (&w.tls_cert, &w.tls_key) {
        (Some(_), Some(_)) => {}
        (Some(_), None) => return Err(("tls_key", "tls_cert needs tls_key".into())),
        (None, _) => {
            return Err((
                "tls_cert",
                format!("{first} needs tls_cert and tls_key (the host's certificate and key)"),
            ))
        }
    }
    if let Some(name) = &w.tls_server_name {
        if let Err(e) = ferry::transport::tls::check_server_name(name) {
            return Err(("tls_server_name", e.to_string()));
        }
    }
    Ok(())
}

/// Reads the files a worker type names (TLS certificate, key, trusted certificates), once
/// their paths are resolved from the configuration file's folder.
pub(super) fn files(c: &FerryConfig) -> Result<(), Invalid> {
    for (name, w) in &c.workers {
        let Some(tls) = w.tls_options() else {
            continue;
        };
        if let Err(e) = tls.check() {
            let k = match &e {
                ferry::transport::TransportError::TlsConfig { item, .. } => match *item {
                    "certificate chain" => "tls_cert",
                    "trusted certificates" if w.tls_ca.is_some() => "tls_ca",
                    "trusted certificates" => "tls_cert",
                    "server name" => "tls_server_name",
                    _ => "tls_key",
                },
                _ => "tls_cert",
            };
            return Err((format!("workers.{name}.{k}"), e.to_string()));
        }
    }
    Ok(())
}

pub(super) fn validate(c: &FerryConfig) -> Result<(), Invalid> {
    let bad = |key: String, reason: &str| Err((key, reason.to_owned()));
    if c.server.bind.parse::<std::net::SocketAddr>().is_err() {
        return bad(
            "server.bind".into(),
            "expected an IP address and port, e.g. 127.0.0.1:8080",
        );
    }
    if c.server.body_limit_bytes == 0 {
        return bad("server.body_limit_bytes".into(), "must be positive");
    }
    let server_positive = [
        ("header_timeout_ms", c.server.header_timeout_ms == 0),
        ("body_timeout_ms", c.server.body_timeout_ms == 0),
        ("idle_timeout_ms", c.server.idle_timeout_ms == 0),
        ("max_connections", c.server.max_connections == 0),
    ];
    for (key, zero) in server_positive {
        if zero {
            return bad(format!("server.{key}"), "must be positive");
        }
    }
    if !(64..=60_000).contains(&c.server.max_uri_bytes) {
        return bad(
            "server.max_uri_bytes".into(),
            "must be from 64 to 60000 bytes",
        );
    }
    if !(1024..=1 << 20).contains(&c.server.max_header_bytes) {
        return bad(
            "server.max_header_bytes".into(),
            "must be from 1024 to 1048576 bytes",
        );
    }
    for (name, w) in &c.workers {
        let key = |k: &str| format!("workers.{name}.{k}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            return bad(
                format!("workers.{name}"),
                "worker type names use letters, digits, '_' and '-'",
            );
        }
        if w.command.trim().is_empty() {
            return bad(key("command"), "must not be empty");
        }
        // With length-prefixed stdio frames the codec is the one after the switch.
        let stdio_switch = w.transport == TransportKind::Stdio
            && w.stdio_framing == ferry::protocol::StdioFraming::LengthPrefixed;
        if stdio_switch && w.dialect == Dialect::Legacy {
            return bad(
                key("stdio_framing"),
                "the legacy dialect speaks JSON lines only",
            );
        }
        let framing = if stdio_switch {
            ferry::codec::Framing::LengthPrefixed
        } else {
            w.transport.framing()
        };
        if let Err(e) = Codec::new(w.codec, framing, w.max_frame) {
            return bad(key("codec"), &e.to_string());
        }
        if w.dialect == Dialect::Legacy {
            if w.transport != TransportKind::Stdio || w.codec != CodecKind::Json {
                return bad(
                    key("dialect"),
                    "the legacy dialect runs over stdio with json only",
                );
            }
            if w.pool.max_in_flight != 1 {
                return bad(
                    key("pool.max_in_flight"),
                    "legacy workers take one request at a time: must be 1",
                );
            }
        }
        if let Some(capacity) = w.shm_capacity {
            if !capacity.is_power_of_two() || !(4096..=1 << 30).contains(&capacity) {
                return bad(
                    key("shm_capacity"),
                    "must be a power of two from 4096 to 1073741824 bytes",
                );
            }
        }
        if w.max_frame < 1024 {
            return bad(key("max_frame"), "must be at least 1024 bytes");
        }
        if let Some(token) = &w.token {
            if let Err(e) = ferry::transport::Token::new(token.clone()) {
                return bad(key("token"), &e.to_string());
            }
        }
        if let Err((k, reason)) = check_tls_keys(w) {
            return bad(key(k), &reason);
        }
        if w.startup_timeout_ms == 0 {
            return bad(key("startup_timeout_ms"), "must be positive");
        }
        for (k, op) in w.api_operations.iter().flatten().enumerate() {
            if let Err(reason) = check_operation_pattern(op) {
                return bad(key(&format!("api_operations.{k}")), &reason);
            }
        }
        if let Err(e) = w.pool.validate() {
            return bad(key(&format!("pool.{}", e.key)), &e.reason);
        }
    }
    let mut ids = HashSet::new();
    for (i, wf) in c.workflows.iter().enumerate() {
        let key = |k: &str| format!("workflows.{i}.{k}");
        if !is_valid_id(&wf.id) {
            return bad(
                key("id"),
                "1 to 64 letters, digits, '_', '-' or '.', not starting with '.'",
            );
        }
        if !ids.insert(wf.id.as_str()) {
            return bad(key("id"), "must be unique");
        }
        if wf.steps.is_empty() {
            return bad(key("steps"), "a workflow needs at least one step");
        }
        let mut names: Vec<&str> = Vec::new();
        for (j, step) in wf.steps.iter().enumerate() {
            let skey = |k: &str| format!("workflows.{i}.steps.{j}.{k}");
            if step.name.is_empty() || names.contains(&step.name.as_str()) {
                return bad(skey("name"), "must be non-empty and unique in the workflow");
            }
            if !c.workers.contains_key(&step.worker_type) {
                return bad(
                    skey("worker_type"),
                    &format!("no worker type `{}` is configured", step.worker_type),
                );
            }
            if let Some(from) = &step.attachments_from {
                if from != "request" && !names.contains(&from.as_str()) {
                    return bad(
                        skey("attachments_from"),
                        "must be `request` or an earlier step's name",
                    );
                }
            }
            if let Err(reason) = check_references(step, &names) {
                return bad(skey("input"), &reason);
            }
            if let Some(list) = &step.for_each {
                let probe = StepConfig {
                    input: Value::String(list.clone()),
                    for_each: None,
                    ..step.clone()
                };
                if !list.starts_with('$') {
                    return bad(
                        skey("for_each"),
                        "expected a reference to a list ($request.NAME, $previous..., $steps.NAME...)",
                    );
                }
                if let Err(reason) = check_references(&probe, &names) {
                    return bad(skey("for_each"), &reason);
                }
            }
            names.push(&step.name);
        }
    }
    Ok(())
}

/// An id that is safe in a URL path segment, a log line and a file name.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// An `api_operations` entry: an exact name, `prefix.*`, or `*`; never a built-in.
fn check_operation_pattern(op: &str) -> Result<(), String> {
    if super::BUILT_IN_OPERATIONS.contains(&op) {
        return Err(format!(
            "`{op}` is a built-in operation, never callable over HTTP"
        ));
    }
    let body = op.strip_suffix(".*").unwrap_or(op);
    let well_formed = op == "*"
        || (!body.is_empty()
            && body.len() <= 128
            && !body.contains('*')
            && body.chars().all(|c| c.is_ascii_graphic()));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "`{op}`: expected an operation name, `prefix.*` or `*`"
        ))
    }
}

/// Every `$steps.NAME` in the template names an earlier step.
fn check_references(step: &StepConfig, earlier: &[&str]) -> Result<(), String> {
    fn walk(v: &Value, earlier: &[&str], each: bool) -> Result<(), String> {
        match v {
            Value::String(s) if s.starts_with('$') => {
                let mut parts = s[1..].trim_end_matches('?').split('.');
                match parts.next() {
                    Some("request") | Some("previous") => Ok(()),
                    Some("item") | Some("index") if each => Ok(()),
                    Some("steps") => match parts.next() {
                        Some(name) if earlier.contains(&name) => Ok(()),
                        Some(name) => Err(format!(
                            "`{s}` refers to `{name}`, which is not an earlier step"
                        )),
                        None => Err(format!("`{s}` names no step")),
                    },
                    _ => Err(format!(
                        "`{s}`: references start with $request, $previous or $steps.NAME \
                         ($item and $index in a step with for_each)"
                    )),
                }
            }
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, earlier, each)),
            Value::Object(map) => map.values().try_for_each(|i| walk(i, earlier, each)),
            _ => Ok(()),
        }
    }
    walk(&step.input, earlier, step.for_each.is_some())
}

#[cfg(test)]
mod tls_tests {
    use crate::config::FerryConfig;
    use std::path::Path;

    /// A self-signed certificate and its key written into `dir` as `host.pem`, `host.key`.
    fn self_signed(dir: &Path) {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("host.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("host.key"), made.key_pair.serialize_pem()).unwrap();
    }

    fn worker(keys: &str) -> String {
        format!("[workers.w]\ncommand = \"w\"\n{keys}\n")
    }

    #[test]
    fn tls_keys_need_the_tcp_transport() {
        let e = FerryConfig::parse(
            &worker("transport = \"socket\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\""),
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "workers.w.tls_cert");
        assert!(e.reason.contains("tcp transport only"), "{e}");
        assert_eq!(e.line, Some(4));
        let e = FerryConfig::parse(&worker("tls_server_name = \"gpu-box\""), "t").unwrap_err();
        assert_eq!(e.key, "workers.w.tls_server_name");
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let e = FerryConfig::parse(&worker("transport = \"tcp\"\ntls_cert = \"c.pem\""), "t")
            .unwrap_err();
        assert_eq!(e.key, "workers.w.tls_key");
        let e = FerryConfig::parse(&worker("transport = \"tcp\"\ntls_key = \"k.pem\""), "t")
            .unwrap_err();
        assert_eq!(e.key, "workers.w.tls_cert");
        let e = FerryConfig::parse(
            &worker(
                "transport = \"tcp\"\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_server_name = \"a b\"",
            ),
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "workers.w.tls_server_name");
    }

    #[test]
    fn tls_files_are_read_at_load_relative_to_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        let path = dir.path().join("ferry.toml");
        let tcp = "transport = \"tcp\"\ntls_cert = \"host.pem\"";
        std::fs::write(&path, worker(&format!("{tcp}\ntls_key = \"host.key\""))).unwrap();
        let c = FerryConfig::load(&path).unwrap();
        let tls = c.workers["w"].spec("w").transport_options.tcp.tls.unwrap();
        assert_eq!(tls.cert_chain, dir.path().join("host.pem"));
        assert_eq!(tls.private_key, dir.path().join("host.key"));

        std::fs::write(&path, worker(&format!("{tcp}\ntls_key = \"missing.key\""))).unwrap();
        let e = FerryConfig::load(&path).unwrap_err();
        assert_eq!(e.key, "workers.w.tls_key");
        assert_eq!(e.line, Some(5));
        assert!(e.reason.contains("missing.key"), "{e}");

        std::fs::write(dir.path().join("junk.pem"), "not PEM").unwrap();
        let keys = "\ntls_key = \"host.key\"\ntls_ca = \"junk.pem\"";
        std::fs::write(&path, worker(&format!("{tcp}{keys}"))).unwrap();
        let e = FerryConfig::load(&path).unwrap_err();
        assert_eq!(e.key, "workers.w.tls_ca");
    }
}

#[cfg(test)]
mod stdio_framing_tests {
    use crate::config::FerryConfig;
    use ferry::codec::CodecKind;
    use ferry::protocol::StdioFraming;

    fn worker(keys: &str) -> String {
        format!("[workers.w]\ncommand = \"w\"\n{keys}\n")
    }

    #[test]
    fn a_binary_codec_on_stdio_needs_length_prefixed_stdio_framing() {
        let e = FerryConfig::parse(&worker("codec = \"msgpack\""), "t").unwrap_err();
        assert_eq!(e.key, "workers.w.codec");
        let c = FerryConfig::parse(
            &worker("codec = \"msgpack\"\nstdio_framing = \"length_prefixed\""),
            "t",
        )
        .unwrap();
        let spec = c.workers["w"].spec("w");
        assert_eq!(spec.stdio_framing, StdioFraming::LengthPrefixed);
        assert_eq!(spec.codec, CodecKind::MsgPack);
    }

    #[test]
    fn stdio_framing_defaults_to_lines_and_refuses_unknown_names() {
        let c = FerryConfig::parse(&worker(""), "t").unwrap();
        assert_eq!(c.workers["w"].stdio_framing, StdioFraming::Lines);
        assert!(FerryConfig::parse(&worker("stdio_framing = \"frames\""), "t").is_err());
        let e = FerryConfig::parse(
            &worker("dialect = \"legacy\"\nstdio_framing = \"length_prefixed\"\n[workers.w.pool]\nmax_in_flight = 1"),
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "workers.w.stdio_framing");
    }
}

//! The iceoryx2 ping-pong peer through the bench harness: a child `ferry-peer floor
//! iceoryx2-echo` answers with the bytes sent, `ferry bench`'s suite measures it beside
//! the shm floor and puts its figure on the shm rows; a peer that cannot start is a typed
//! failure. Without the `iceoryx2` feature: the peer is absent and says how to build it.

const FERRY: &str = env!("CARGO_BIN_EXE_ferry-peer");

#[cfg(not(feature = "iceoryx2"))]
#[test]
fn without_the_feature_the_peer_is_absent_and_says_how_to_build_it() {
    use ferry_bench::{BenchError, PeerKind};
    const { assert!(!ferry_bench::peer_iceoryx2::BUILT) };
    assert!(PeerKind::for_transport("shm").is_empty());
    let missing = PeerKind::missing_for_transport("shm");
    assert_eq!(missing.len(), 1);
    assert!(missing[0].1.contains("--features"), "{missing:?}");
    let e = match PeerKind::Iceoryx2.spawn(FERRY.as_ref(), 64) {
        Ok(_) => panic!("a build without the feature started the peer"),
        Err(e) => e,
    };
    assert_eq!(e.code(), "bench_peer_failed", "{e}");
    let e = ferry_bench::peer_iceoryx2::echo(64, "ferry-test").unwrap_err();
    assert!(matches!(e, BenchError::PeerFailed { .. }), "{e:?}");
}

#[cfg(feature = "iceoryx2")]
mod with_the_feature {
    use super::FERRY;
    use ferry::transport::TransportKind;
    use ferry_bench::peer_iceoryx2::Iceoryx2Peer;
    use ferry_bench::{measure, payload, Limits, PeerKind, Pin, SuiteOptions, Target};
    use std::time::Duration;

    #[test]
    fn the_peer_echoes_the_bytes_sent() {
        for size in [1, 64, 4096, 1 << 20] {
            let mut peer =
                Iceoryx2Peer::spawn(FERRY, &["floor", "iceoryx2-echo", &size.to_string()], size)
                    .expect("the iceoryx2 peer starts");
            for round in 0..3u8 {
                let mut message = payload(size);
                message[0] = b'A' + round;
                peer.round_trip(&message).expect("a round trip");
                assert_eq!(peer.last_echo(), &message[..], "size {size}, round {round}");
            }
            let limits = Limits::new(200, Duration::from_secs(5));
            let stats =
                measure(&mut peer, &payload(size), &limits, &mut |_, _| {}).expect("measured");
            assert!(stats.iterations > 0);
            assert!(stats.p50_us <= stats.p99_us);
        }
    }

    #[test]
    fn a_peer_that_does_not_start_is_a_typed_failure() {
        // `ferry-peer` with a size that is not a number exits at once with a usage error.
        let e = Iceoryx2Peer::spawn(FERRY, &["floor", "iceoryx2-echo", "not-a-size"], 64)
            .expect_err("the peer exits before it is ready");
        assert_eq!(e.code(), "bench_peer_failed", "{e}");
        let e =
            Iceoryx2Peer::spawn("/nonexistent/ferry-peer", &[], 64).expect_err("no such program");
        assert_eq!(e.code(), "bench_peer_failed", "{e}");
    }

    #[test]
    fn the_suite_measures_the_peer_beside_the_shm_floor() {
        assert_eq!(PeerKind::for_transport("shm"), vec![PeerKind::Iceoryx2]);
        let mut options = SuiteOptions::new(FERRY);
        options.targets = vec![Target::Engine(TransportKind::Shm)];
        options.workers = vec![ferry_bench::WorkerLang::Rust];
        options.payloads = Some(vec![64]);
        options.iterations = 100;
        options.pin = Pin::None;
        options.pipelined_depth = 0;
        let report = ferry_bench::run(&options, &mut |_| {}).expect("the run");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let peers: Vec<_> = report.peers.iter().filter(|p| p.pin == Pin::None).collect();
        assert_eq!(peers.len(), 1, "{:?}", report.peers);
        assert_eq!(peers[0].peer, "iceoryx2");
        let row = report
            .results
            .iter()
            .find(|r| r.transport == "shm" && r.pin == Pin::None)
            .expect("the shm row");
        assert_eq!(row.peer.as_deref(), Some("iceoryx2"));
        assert_eq!(row.peer_p50_us, Some(peers[0].stats.p50_us));
        assert!(row.ratio_to_peer.is_some());
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("json")).expect("valid json");
        assert_eq!(json["peers"][0]["peer"], "iceoryx2");
        assert!(json["results"][0]["ratio_to_peer"].is_number(), "{json}");
        assert!(report.render().contains("x peer"));
    }
}

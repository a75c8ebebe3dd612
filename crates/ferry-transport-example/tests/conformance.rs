//! ferry's transport conformance suite on the example transport: the same checks the
//! engine runs on its own transports (`ferry::conformance_tests!`, feature `conformance`).

use ferry::transport::Link;

fn pipes(max_frame: usize) -> (Link, Link) {
    ferry_transport_example::pipe_pair(max_frame).expect("pipes")
}

ferry::conformance_tests!(pipe_transport, pipes);

//! The processes the criterion benches talk to, with the same arguments as the `ferry`
//! command's `worker` and `floor` subcommands, so a bench needs no server build:
//!
//! - `ferry-peer worker echo`: the Rust echo worker (operations echo, sleep, fail, print);
//! - `ferry-peer floor pipe-echo SIZE`, `floor uds-echo SIZE PATH`, `floor tcp-echo SIZE
//!   ADDR`, `floor shm-echo`, `floor shm-frame-echo [MAX_FRAME]`: the bare floor peers of
//!   [`ferry_bench::floor`];
//! - `ferry-peer floor iceoryx2-echo SIZE PREFIX`: the iceoryx2 ping-pong peer of
//!   [`ferry_bench::peer_iceoryx2`] (fails unless built with the `iceoryx2` feature).

use std::process::ExitCode;

type PeerResult = Result<(), Box<dyn std::error::Error>>;

const USAGE: &str = "usage: ferry-peer worker echo | ferry-peer floor \
    (pipe-echo SIZE | uds-echo SIZE PATH | tcp-echo SIZE ADDR | shm-echo | shm-frame-echo [MAX_FRAME] \
    | iceoryx2-echo SIZE PREFIX)";

fn number(arg: Option<&String>) -> Result<usize, Box<dyn std::error::Error>> {
    let text = arg.ok_or(USAGE)?;
    text.parse()
        .map_err(|_| format!("not a size: {text:?}\n{USAGE}").into())
}

fn run(args: &[String]) -> PeerResult {
    let words: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
    match words.as_slice() {
        ["worker", "echo"] => Ok(ferry::worker::serve(
            "echo",
            &ferry::worker::echo::OPERATIONS,
            ferry::worker::echo::Echo,
        )?),
        ["floor", "pipe-echo"] => Ok(ferry_bench::floor::pipe_echo(number(args.get(2))?)?),
        #[cfg(unix)]
        ["floor", "uds-echo"] => {
            let path = args.get(3).ok_or(USAGE)?;
            Ok(ferry_bench::floor::uds_echo(number(args.get(2))?, path)?)
        }
        ["floor", "tcp-echo"] => {
            let addr = args.get(3).ok_or(USAGE)?;
            Ok(ferry_bench::floor::tcp_echo(number(args.get(2))?, addr)?)
        }
        ["floor", "shm-echo"] => Ok(ferry_bench::floor::shm_echo()?),
        ["floor", "shm-frame-echo"] => {
            let max_frame = match args.get(2) {
                None => ferry::codec::DEFAULT_MAX_FRAME,
                some => number(some)?,
            };
            Ok(ferry_bench::floor::shm_frame_echo(max_frame)?)
        }
        ["floor", "iceoryx2-echo"] => {
            let prefix = args.get(3).ok_or(USAGE)?;
            Ok(ferry_bench::peer_iceoryx2::echo(
                number(args.get(2))?,
                prefix,
            )?)
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

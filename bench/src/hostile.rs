//! Connections that never complete: they open the port and send nothing, or drip the
//! start of a TLS handshake (or an NRPE query) a byte a second. The server must cut them at
//! its deadline and keep serving everyone else meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigie_collector::nrpe::packet::{Version, encode_query};

use crate::unix_ms;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The port to pester.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// `idle`: send nothing; `drip`: send one byte a second.
    #[arg(long, value_enum, default_value = "idle")]
    mode: Mode,
    /// What a dripping connection sends: the start of a TLS ClientHello, or an NRPE query.
    #[arg(long, value_enum, default_value = "tls")]
    payload: Payload,
    /// Give up waiting for the server to close them after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Idle,
    Drip,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    Tls,
    Nrpe,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let payload: Vec<u8> = match args.payload {
        // A handshake record of 512 bytes announced, ClientHello type, then zeros.
        Payload::Tls => [
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc][..],
            &[0; 503],
        ]
        .concat(),
        Payload::Nrpe => encode_query(Version::V4, "check_load!bench"),
    };
    let started = Instant::now();
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        match TcpStream::connect(args.addr).await {
            Ok(s) => conns.push(s),
            Err(e) => bail!("connection {} to {}: {e}", conns.len() + 1, args.addr),
        }
    }
    let opened_at = Instant::now();
    println!(
        "{}",
        serde_json::json!({"opened": conns.len(), "t_ms": unix_ms(), "open_s": (opened_at - started).as_secs_f64()})
    );
    let mut tasks = Vec::new();
    for mut s in conns {
        let payload = payload.clone();
        let mode = args.mode;
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut sent = 0;
            let mut drip = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Some(opened_at.elapsed()),
                        Ok(_) => {}
                    },
                    _ = drip.tick(), if mode == Mode::Drip && sent < payload.len() => {
                        if s.write_all(&payload[sent..sent + 1]).await.is_err() {
                            return Some(opened_at.elapsed());
                        }
                        sent += 1;
                    }
                }
            }
        }));
    }
    let mut closed = Vec::new();
    let deadline = tokio::time::Instant::now() + args.hold;
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Some(after))) => closed.push(after),
            Ok(_) => {}
            Err(_) => abort.abort(),
        }
    }
    let still_open = args.connections - closed.len();
    let mut line = crate::summary(&mut closed);
    line["closed"] = closed.len().into();
    line["still_open"] = still_open.into();
    line["what"] = "seconds from open to the server's close, in ms".into();
    println!("{line}");
    Ok(())
}

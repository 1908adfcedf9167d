//! The NRPE-compatible listener: the stock `check_nrpe` asks, the check engine answers.
//!
//! One TCP connection per check: (TLS handshake,) one query, one reply in the query's
//! version, then close. The reply and the TLS close_notify leave in one flush and the socket
//! is shut down at once, because check_nrpe waits for the close before it exits; the client's
//! own close is then read so the kernel never answers it with a reset.
//!
//! Queries are `command` or `command!arg!…`. On `[nrpe] listen` addresses the first
//! argument names the agent; on `[nrpe.agents]` ports the agent is fixed. Other arguments
//! fill `$ARG1$`…`$ARG16$` only when `allow_arguments` is on. Nothing is ever run through a
//! shell: a command line is split into words once, and arguments are substituted inside
//! words, so they can never add options.

pub mod packet;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use crate::checks::{Engine, State};
use crate::config::Nrpe as NrpeConfig;
use crate::link::ReloadingTls;
use packet::{PacketError, V3_HEADER, decode_query, encode_response, packet_len};

/// Connections served at once; more wait in the kernel's backlog. Each is cut at
/// `connection_timeout`; the bound is high enough that a thousand idle or slow clients do
/// not delay a real check.
const MAX_CONNECTIONS: usize = 4096;
/// Refused hosts answered at once; more are closed without a word.
const REFUSED_CONNECTIONS: usize = 32;
/// The whole exchange with a refused host, handshake included.
const REFUSED_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest command name echoed back in an error.
const MAX_ECHO: usize = 64;
/// How long to wait for the client's own close after replying.
const LINGER: Duration = Duration::from_secs(2);
/// `$ARG1$` … `$ARG16$`, like the stock daemon.
const MAX_ARGS: usize = 16;

/// One entry of `allowed_hosts`: an address or a CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block (e.g. 10.8.0.0/24)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(AllowedHost { addr, prefix })
    }
}

impl AllowedHost {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(a.to_bits()), u128::from(b.to_bits()), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Splits a command line into words: whitespace separates, '…' and "…" quote.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unbalanced quote in {line:?}"));
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("empty command line".into());
    }
    Ok(words)
}

/// Replaces `$ARGn$` with the n-th argument (empty when absent) and `$$` with `$`.
fn substitute(word: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
            continue;
        }
        let macro_end = rest[1..].find('$').map(|j| j + 1);
        let n = macro_end.and_then(|j| rest[1..j].strip_prefix("ARG")?.parse::<usize>().ok());
        match (n, macro_end) {
            (Some(n), Some(j)) if (1..=MAX_ARGS).contains(&n) => {
                out.push_str(args.get(n - 1).copied().unwrap_or(""));
                rest = &rest[j + 1..];
            }
            _ => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The NRPE service: configuration, check engine, and TLS.
pub struct Server {
    config: NrpeConfig,
    engine: Engine,
    tls: Option<Arc<ReloadingTls>>,
    slots: Arc<Semaphore>,
    refused_slots: Arc<Semaphore>,
    refusals: Arc<crate::refusals::RefusalLog>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("nrpe::Server")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(config: NrpeConfig, engine: Engine, tls: Option<Arc<ReloadingTls>>) -> Server {
        Server {
            config,
            engine,
            tls,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            refused_slots: Arc::new(Semaphore::new(REFUSED_CONNECTIONS)),
            refusals: crate::refusals::RefusalLog::new("NRPE"),
        }
    }

    /// What to answer a query text, for a listener bound to `fixed_agent` or not.
    pub fn answer(&self, text: &str, fixed_agent: Option<&str>) -> (State, String) {
        if text == "_NRPE_CHECK" {
            return (
                State::Ok,
                format!(
                    "NRPE v4.1.0 (vigie-collector {})",
                    env!("CARGO_PKG_VERSION")
                ),
            );
        }
        let mut parts = text.split('!');
        let command = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        let (agent, args) = match fixed_agent {
            Some(agent) => (agent, rest.as_slice()),
            None => match rest.split_first() {
                Some((agent, args)) if !agent.is_empty() => (*agent, args),
                _ => {
                    return (
                        State::Unknown,
                        format!(
                            "NRPE: no agent named; on this port the first argument is the agent: check_nrpe -c {command} -a AGENT"
                        ),
                    );
                }
            },
        };
        if !args.is_empty() && !self.config.allow_arguments {
            return (
                State::Unknown,
                format!(
                    "NRPE: command arguments are disabled on this collector (allow_arguments = false); got {} after the agent name",
                    if args.len() == 1 {
                        "1 argument".to_owned()
                    } else {
                        format!("{} arguments", args.len())
                    }
                ),
            );
        }
        if args.len() > MAX_ARGS {
            return (
                State::Unknown,
                format!(
                    "NRPE: too many arguments ({}; at most {MAX_ARGS})",
                    args.len()
                ),
            );
        }
        let Some(line) = self.config.commands.get(command) else {
            return (
                State::Unknown,
                format!(
                    "NRPE: Command '{}' not defined",
                    packet::truncate(command, MAX_ECHO)
                ),
            );
        };
        // The table was validated at start-up; a failure here cannot happen, but costs
        // nothing to report.
        let words = match split_words(line) {
            Ok(w) => w,
            Err(e) => return (State::Unknown, format!("NRPE: command '{command}': {e}")),
        };
        let argv: Vec<String> = words.iter().map(|w| substitute(w, args)).collect();
        let outcome = self.engine.run(agent, &argv);
        (outcome.state, outcome.output)
    }

    /// Accepts connections on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        fixed_agent: Option<String>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let local = listener.local_addr().ok();
        tracing::info!(
            addr = ?local,
            agent = fixed_agent.as_deref().unwrap_or("(first argument)"),
            tls = self.tls.is_some(),
            "NRPE listening"
        );
        let fixed_agent: Option<Arc<str>> = fixed_agent.map(Arc::from);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "NRPE accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // A refused host still gets one sentence instead of a bare reset (which check_nrpe
            // reports as "Receive header underflow", or dies of SIGPIPE over).
            let allowed = self
                .config
                .allowed_hosts
                .iter()
                .any(|h| h.contains(peer.ip()));
            let slot = if allowed {
                // At the connection limit, stop accepting: new clients wait in the backlog.
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    break;
                };
                slot
            } else {
                if self.refusals.admit() {
                    tracing::warn!(%peer, "NRPE client refused: not in allowed_hosts");
                }
                // Refused hosts get their sentence from a small pool of their own, so they
                // can never take the slots of allowed ones; beyond it they are just closed.
                match self.refused_slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => continue,
                }
            };
            let server = self.clone();
            let agent = fixed_agent.clone();
            tokio::spawn(async move {
                if let Err(e) = server.handle(tcp, peer, agent.as_deref(), allowed).await
                    && server.refusals.admit()
                {
                    tracing::warn!(%peer, "NRPE query refused: {e}");
                }
                drop(slot);
            });
        }
    }

    async fn handle(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        agent: Option<&str>,
        allowed: bool,
    ) -> Result<(), String> {
        let _ = tcp.set_nodelay(true);
        let limit = if allowed {
            self.config.connection_timeout
        } else {
            REFUSED_TIMEOUT
        };
        let deadline = Instant::now() + limit;
        // Sending gets its own short deadline: a client that stops reading must not keep
        // its slot.
        let send_deadline = || Instant::now() + Duration::from_secs(5);
        let timeout_msg = || format!("no complete query within {}s", limit.as_secs_f64());
        match &self.tls {
            Some(state) => {
                let mut tls = timeout_at(deadline, state.acceptor().accept(tcp))
                    .await
                    .map_err(|_| timeout_msg())?
                    .map_err(|e| format!("tls handshake: {e}"))?;
                let reply = timeout_at(
                    deadline,
                    self.read_and_answer(&mut tls, peer, agent, allowed),
                )
                .await
                .map_err(|_| timeout_msg())??;
                // Reply and close_notify in one flush, then FIN.
                let (_, conn) = tls.get_mut();
                std::io::Write::write_all(&mut conn.writer(), &reply).map_err(|e| e.to_string())?;
                conn.send_close_notify();
                timeout_at(send_deadline(), tls.flush())
                    .await
                    .map_err(|_| "the client does not read its reply".to_owned())?
                    .map_err(|e| format!("sending the reply: {e}"))?;
                let _ = timeout_at(send_deadline(), tls.get_mut().0.shutdown()).await;
                linger(&mut tls).await;
            }
            None => {
                let mut tcp = tcp;
                let reply = timeout_at(
                    deadline,
                    self.read_and_answer(&mut tcp, peer, agent, allowed),
                )
                .await
                .map_err(|_| timeout_msg())??;
                timeout_at(send_deadline(), tcp.write_all(&reply))
                    .await
                    .map_err(|_| "the client does not read its reply".to_owned())?
                    .map_err(|e| format!("sending the reply: {e}"))?;
                let _ = timeout_at(send_deadline(), tcp.shutdown()).await;
                linger(&mut tcp).await;
            }
        }
        Ok(())
    }

    async fn read_and_answer<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        peer: SocketAddr,
        agent: Option<&str>,
        allowed: bool,
    ) -> Result<Vec<u8>, String> {
        let mut header = [0u8; V3_HEADER];
        s.read_exact(&mut header)
            .await
            .map_err(|e| format!("reading the query header: {e}"))?;
        let len = packet_len(&header).map_err(|e: PacketError| e.to_string())?;
        let mut packet = vec![0u8; len];
        packet[..V3_HEADER].copy_from_slice(&header);
        s.read_exact(&mut packet[V3_HEADER..])
            .await
            .map_err(|e| format!("reading the query ({len} bytes): {e}"))?;
        let query = decode_query(&packet).map_err(|e| e.to_string())?;
        let (state, output) = if allowed {
            self.answer(&query.text, agent)
        } else {
            (
                State::Unknown,
                format!(
                    "NRPE: host {} is not in the collector's allowed_hosts",
                    peer.ip()
                ),
            )
        };
        tracing::debug!(%peer, version = %query.version, query = %query.text, state = state.label(), "NRPE check");
        Ok(encode_response(query.version, state.code(), &output))
    }
}

/// Reads (and drops) whatever the client still sends until it closes, briefly: closing a
/// socket with unread data would reset the connection.
async fn linger<S: AsyncRead + Unpin>(s: &mut S) {
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts() {
        let h: AllowedHost = "10.8.0.0/16".parse().expect("cidr");
        assert!(h.contains("10.8.200.1".parse().expect("ip")));
        assert!(!h.contains("10.9.0.1".parse().expect("ip")));
        assert!(h.contains("::ffff:10.8.0.1".parse().expect("mapped")));
        let one: AllowedHost = "127.0.0.1".parse().expect("ip");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let v6: AllowedHost = "fd00::/8".parse().expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        let all: AllowedHost = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "host.example", "10.0.0/8", ""] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn words_and_macros() {
        assert_eq!(
            split_words("disk -w 20% -p '/mnt/my disk'  -p \"/var\"").expect("ok"),
            ["disk", "-w", "20%", "-p", "/mnt/my disk", "-p", "/var"]
        );
        assert!(split_words("disk -p '/x").is_err());
        assert!(split_words("  ").is_err());
        let args = ["5", "10 -c 1"];
        assert_eq!(substitute("$ARG1$", &args), "5");
        assert_eq!(
            substitute("$ARG2$", &args),
            "10 -c 1",
            "an argument stays one word"
        );
        assert_eq!(substitute("$ARG3$", &args), "");
        assert_eq!(substitute("a$$b", &args), "a$b");
        assert_eq!(substitute("$ARG17$x$", &args), "$ARG17$x$");
        assert_eq!(substitute("-w$ARG1$%", &args), "-w5%");
    }
}

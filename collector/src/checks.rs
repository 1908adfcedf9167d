//! The check engine: judges an agent's latest report the way the Monitoring Plugins would.
//!
//! A check is a command line (`load -w 15,10,5 -c 30,25,20`) evaluated against the registry.
//! Output and perfdata have the shapes of check_load, check_disk, check_users and check_swap
//! (monitoring-plugins 2.3), so existing graphs and parsers keep working. An unknown agent, a
//! disconnected one or a stale report is UNKNOWN, saying which and since when; `alive` turns
//! those into CRITICAL. Both doors (NRPE and the admin API) call [`Engine::run`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigie_proto::{AgentState, AgentStatus, Filesystem, Report};

use crate::registry::Registry;
use crate::threshold::Range;

/// A Nagios service state; the numeric value is the plugin exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The result of one check: a state and the plugin output (with perfdata after `|`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub output: String,
}

impl Outcome {
    fn new(state: State, output: String) -> Self {
        Outcome { state, output }
    }
}

/// The checks, by name, with their usage lines.
pub const CHECKS: &[(&str, &str)] = &[
    ("alive", "alive [--stale-after DURATION]"),
    (
        "load",
        "load -w WLOAD1,WLOAD5,WLOAD15 -c CLOAD1,CLOAD5,CLOAD15 [-r]",
    ),
    (
        "disk",
        "disk -w LIMIT -c LIMIT [-p PATH]... (LIMIT: free space as N% or a size such as 500MB, 2GB)",
    ),
    ("mem", "mem -w PERCENT -c PERCENT (used memory)"),
    (
        "swap",
        "swap -w LIMIT -c LIMIT [-n ok|warning|critical|unknown] (LIMIT: free swap as N% or a size)",
    ),
    ("users", "users -w RANGE -c RANGE (logged-in sessions)"),
];

fn usage(check: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(n, _)| *n == check)
        .map_or("", |(_, u)| u)
}

/// Evaluates checks against the registry.
#[derive(Debug, Clone)]
pub struct Engine {
    registry: Arc<Registry>,
    /// Age after which a report is stale; `None`: three times the agent's interval.
    stale_after: Option<Duration>,
}

/// Options as the Monitoring Plugins parse them: `-w X`, `-wX`, `--warning X`, `--warning=X`.
#[derive(Default, Debug)]
struct Opts {
    warning: Option<String>,
    critical: Option<String>,
    paths: Vec<String>,
    per_cpu: bool,
    stale_after: Option<String>,
    no_swap_state: Option<String>,
}

fn parse_opts(args: &[String], allowed: &str) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let (key, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (long.to_owned(), None),
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let (k, rest) = short.split_at(1);
            (k.to_owned(), (!rest.is_empty()).then(|| rest.to_owned()))
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let key = match key.as_str() {
            "w" | "warning" => 'w',
            "c" | "critical" => 'c',
            "p" | "path" => 'p',
            "r" | "percpu" => 'r',
            "n" | "no-swap" => 'n',
            "stale-after" => 's',
            _ => return Err(format!("unknown option {arg:?}")),
        };
        if !allowed.contains(key) {
            return Err(format!("option {arg:?} does not apply to this check"));
        }
        if key == 'r' {
            o.per_cpu = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("option {arg:?} needs a value"))?;
                i += 1;
                v.clone()
            }
        };
        match key {
            'w' => o.warning = Some(value),
            'c' => o.critical = Some(value),
            'p' => o.paths.push(value),
            'n' => o.no_swap_state = Some(value),
            _ => o.stale_after = Some(value),
        }
    }
    Ok(o)
}

fn required(v: &Option<String>, opt: &str) -> Result<String, String> {
    v.clone().ok_or_else(|| format!("{opt} is required"))
}

/// Free space limit of check_disk and check_swap: a percentage or a size.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FreeLimit {
    Percent(f64),
    Bytes(u64),
}

impl FreeLimit {
    /// `20%`, `500` (MiB, check_disk's default unit), `500MB`, `2GB`, `1TB`, `4096B` (binary
    /// multiples, as check_disk's units are).
    fn parse(s: &str) -> Result<FreeLimit, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(FreeLimit::Percent)
                .ok_or_else(|| format!("invalid percentage {s:?}"));
        }
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid limit {s:?}: write N% or a size such as 500MB"))?;
        let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
            "B" => 1.0,
            "KB" | "KIB" | "K" => 1024.0,
            "" | "MB" | "MIB" | "M" => 1024.0 * 1024.0,
            "GB" | "GIB" | "G" => 1024.0 * 1024.0 * 1024.0,
            "TB" | "TIB" | "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(format!("invalid unit in {s:?}: use %, B, KB, MB, GB or TB")),
        };
        Ok(FreeLimit::Bytes((n * mult) as u64))
    }

    /// Whether `free` bytes out of `total` (with `free_pct` as the plugin computes it) is
    /// below the limit.
    fn alerts(self, free: u64, free_pct: f64) -> bool {
        match self {
            FreeLimit::Percent(p) => free_pct < p,
            FreeLimit::Bytes(b) => free < b,
        }
    }

    /// The limit expressed as used bytes of `total` (check_disk's perfdata), rounded down.
    fn used_limit(self, total: u64) -> u64 {
        match self {
            FreeLimit::Percent(p) => (total as f64 * (100.0 - p) / 100.0) as u64,
            FreeLimit::Bytes(b) => total.saturating_sub(b),
        }
    }

    /// The limit as bytes of `total`, for perfdata.
    fn bytes_of(self, total: u64) -> u64 {
        match self {
            FreeLimit::Percent(p) => (total as f64 * p / 100.0) as u64,
            FreeLimit::Bytes(b) => b,
        }
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A perfdata label, quoted when it holds a space, `=` or a quote.
fn label(s: &str) -> String {
    if s.contains([' ', '=', '\'']) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        s.to_owned()
    }
}

fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ago_ms(ms: i64) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    crate::cli::short_age(Duration::from_secs(secs))
}

/// What the freshness rules say about an agent.
enum Freshness<'a> {
    Unknown,
    Disconnected(&'a AgentStatus),
    NoReport(&'a AgentStatus),
    Stale(&'a AgentStatus, Duration),
    Fresh(&'a AgentStatus, &'a Report),
}

impl Engine {
    pub fn new(registry: Arc<Registry>, stale_after: Option<Duration>) -> Engine {
        Engine {
            registry,
            stale_after,
        }
    }

    fn stale_after(&self, status: &AgentStatus, over: Option<Duration>) -> Duration {
        over.or(self.stale_after).unwrap_or_else(|| {
            let interval = status.hello.as_ref().map_or(10_000, |h| h.interval_ms);
            Duration::from_millis(u64::from(interval.max(1000)) * 3)
        })
    }

    fn freshness<'a>(
        &self,
        status: Option<&'a AgentStatus>,
        over: Option<Duration>,
    ) -> Freshness<'a> {
        let Some(s) = status else {
            return Freshness::Unknown;
        };
        if s.state != AgentState::Connected as i32 {
            return Freshness::Disconnected(s);
        }
        let Some(report) = s.last_report.as_ref() else {
            return Freshness::NoReport(s);
        };
        let limit = self.stale_after(s, over);
        if Duration::from_millis(s.last_report_age_ms) > limit {
            return Freshness::Stale(s, limit);
        }
        Freshness::Fresh(s, report)
    }

    /// Runs `argv` (check name, then its options) for `agent`.
    pub fn run(&self, agent: &str, argv: &[String]) -> Outcome {
        let Some((name, args)) = argv.split_first() else {
            return Outcome::new(
                State::Unknown,
                "UNKNOWN - no check given; checks: alive, load, disk, mem, swap, users".into(),
            );
        };
        let prefix = name.to_ascii_uppercase();
        let allowed = match name.as_str() {
            "alive" => "s",
            "load" => "wcr",
            "disk" => "wcp",
            "mem" | "users" => "wc",
            "swap" => "wcn",
            _ => {
                return Outcome::new(
                    State::Unknown,
                    format!(
                        "UNKNOWN - unknown check {name:?}; checks: alive, load, disk, mem, swap, users"
                    ),
                );
            }
        };
        let bad_args = |e: String| {
            Outcome::new(
                State::Unknown,
                format!("{prefix} UNKNOWN - {e}. Usage: {}", usage(name)),
            )
        };
        let opts = match parse_opts(args, allowed) {
            Ok(o) => o,
            Err(e) => return bad_args(e),
        };
        let status = self.registry.status(agent);
        if name == "alive" {
            return match self.alive(agent, status.as_ref(), &opts) {
                Ok(o) => o,
                Err(e) => bad_args(e),
            };
        }
        // Parse the thresholds before looking at the agent: bad arguments are reported as
        // such whatever the agent's state.
        let check: Result<Check, String> = match name.as_str() {
            "load" => load(&opts),
            "disk" => disk(&opts),
            "mem" => mem(&opts),
            "swap" => swap(&opts),
            _ => users(&opts),
        };
        let check = match check {
            Ok(c) => c,
            Err(e) => return bad_args(e),
        };
        match self.freshness(status.as_ref(), None) {
            Freshness::Fresh(_, report) => check(report),
            other => Outcome::new(
                State::Unknown,
                format!("{prefix} UNKNOWN - {}", why_not(agent, &other)),
            ),
        }
    }

    fn alive(
        &self,
        agent: &str,
        status: Option<&AgentStatus>,
        opts: &Opts,
    ) -> Result<Outcome, String> {
        let over = opts
            .stale_after
            .as_deref()
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| format!("invalid duration {s:?} for --stale-after ({e})"))
            })
            .transpose()?;
        let fresh = self.freshness(status, over);
        let age = |s: &AgentStatus| {
            if s.last_report.is_some() {
                format!("{}s", s.last_report_age_ms / 1000)
            } else {
                "U".to_owned()
            }
        };
        let perf =
            |s: &AgentStatus| format!("age={};;{};0;", age(s), self.stale_after(s, over).as_secs());
        Ok(match fresh {
            Freshness::Fresh(s, _) => Outcome::new(
                State::Ok,
                format!(
                    "ALIVE OK - {agent} reported {} ago, connected since {}|{}",
                    crate::cli::short_age(Duration::from_millis(s.last_report_age_ms)),
                    rfc3339_ms(s.connected_since_ms),
                    perf(s)
                ),
            ),
            Freshness::Unknown => Outcome::new(
                State::Unknown,
                format!("ALIVE UNKNOWN - {}", why_not(agent, &Freshness::Unknown)),
            ),
            Freshness::Disconnected(s) | Freshness::NoReport(s) | Freshness::Stale(s, _) => {
                Outcome::new(
                    State::Critical,
                    format!("ALIVE CRITICAL - {}|{}", why_not(agent, &fresh), perf(s)),
                )
            }
        })
    }
}

/// The sentence that says why there is no usable report.
fn why_not(agent: &str, f: &Freshness<'_>) -> String {
    match f {
        Freshness::Unknown => {
            format!("no agent named {agent:?} has connected to this collector since it started")
        }
        Freshness::Disconnected(s) => {
            let last = if s.last_report.is_some() {
                format!("; last report {} ago", ago_ms(s.last_report_ms))
            } else {
                String::new()
            };
            format!(
                "agent {agent} is disconnected since {} ({} ago){last}",
                rfc3339_ms(s.disconnected_since_ms),
                ago_ms(s.disconnected_since_ms)
            )
        }
        Freshness::NoReport(s) => format!(
            "agent {agent} has not reported yet (connected {} ago)",
            ago_ms(s.connected_since_ms)
        ),
        Freshness::Stale(s, limit) => format!(
            "last report from {agent} is {}s old (stale after {}s), received {}",
            s.last_report_age_ms / 1000,
            limit.as_secs(),
            rfc3339_ms(s.last_report_ms)
        ),
        Freshness::Fresh(..) => String::new(),
    }
}

/// check_load's thresholds: three numbers, or one for all three.
fn load_limits(s: &str, opt: &str) -> Result<[f64; 3], String> {
    let parts: Vec<&str> = s.split(',').collect();
    let nums = parts
        .iter()
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        })
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| format!("{opt} expects 1 or 3 numbers, got {s:?}"))?;
    match nums.as_slice() {
        [v] => Ok([*v; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(format!("{opt} expects 1 or 3 numbers, got {s:?}")),
    }
}

type Check = Box<dyn Fn(&Report) -> Outcome>;

fn load(o: &Opts) -> Result<Check, String> {
    let warn = load_limits(&required(&o.warning, "-w")?, "-w")?;
    let crit = load_limits(&required(&o.critical, "-c")?, "-c")?;
    let per_cpu = o.per_cpu;
    Ok(Box::new(move |r: &Report| {
        let Some(l) = r.load.as_ref() else {
            return Outcome::new(
                State::Unknown,
                "LOAD UNKNOWN - the agent sent no load averages".into(),
            );
        };
        let total = [l.load1, l.load5, l.load15];
        let cpus = f64::from(l.cpus.max(1));
        let judged = if per_cpu {
            total.map(|v| v / cpus)
        } else {
            total
        };
        let state = if (0..3).any(|i| judged[i] > crit[i]) {
            State::Critical
        } else if (0..3).any(|i| judged[i] > warn[i]) {
            State::Warning
        } else {
            State::Ok
        };
        let names = ["load1", "load5", "load15"];
        let mut out = format!("LOAD {} - ", state.label());
        let mut perf = String::new();
        if per_cpu {
            let _ = write!(
                out,
                "scaled load average: {:.2}, {:.2}, {:.2} - ",
                judged[0], judged[1], judged[2]
            );
            for i in 0..3 {
                let _ = write!(
                    perf,
                    "{}={:.3};;;0; scaled_{}={:.3};{:.3};{:.3};0; ",
                    names[i], total[i], names[i], judged[i], warn[i], crit[i]
                );
            }
        } else {
            for i in 0..3 {
                let _ = write!(
                    perf,
                    "{}={:.3};{:.3};{:.3};0; ",
                    names[i], total[i], warn[i], crit[i]
                );
            }
        }
        let _ = write!(
            out,
            "total load average: {:.2}, {:.2}, {:.2}|{perf}",
            total[0], total[1], total[2]
        );
        Outcome::new(state, out)
    }))
}

/// The filesystem of the report that holds `path`: the longest mount point that is a
/// path prefix of it.
fn holding<'a>(fss: &'a [Filesystem], path: &str) -> Option<&'a Filesystem> {
    fss.iter()
        .filter(|f| {
            let m = f.mount_point.as_str();
            path == m
                || m == "/"
                || path
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|f| f.mount_point.len())
}

fn disk(o: &Opts) -> Result<Check, String> {
    let warn = FreeLimit::parse(&required(&o.warning, "-w")?)?;
    let crit = FreeLimit::parse(&required(&o.critical, "-c")?)?;
    let paths = o.paths.clone();
    Ok(Box::new(move |r: &Report| {
        let selected: Vec<&Filesystem> = if paths.is_empty() {
            r.filesystems.iter().collect()
        } else {
            let mut v: Vec<&Filesystem> = Vec::new();
            for p in &paths {
                match holding(&r.filesystems, p) {
                    Some(f) if !v.iter().any(|x| x.mount_point == f.mount_point) => v.push(f),
                    Some(_) => {}
                    None => {
                        let mounted: Vec<&str> = r
                            .filesystems
                            .iter()
                            .map(|f| f.mount_point.as_str())
                            .collect();
                        return Outcome::new(
                            State::Unknown,
                            format!(
                                "DISK UNKNOWN - no filesystem of the agent holds {p} (mounted: {})",
                                mounted.join(", ")
                            ),
                        );
                    }
                }
            }
            v
        };
        if selected.is_empty() {
            return Outcome::new(
                State::Unknown,
                "DISK UNKNOWN - the agent reported no filesystems".into(),
            );
        }
        let mut state = State::Ok;
        let mut text = String::new();
        let mut perf = String::new();
        for f in selected {
            let free_pct = percent(
                f.available_bytes,
                f.available_bytes.saturating_add(f.used_bytes),
            );
            let inode_free = 100.0 - percent(f.inodes_used, f.inodes_total);
            let s = if crit.alerts(f.available_bytes, free_pct) {
                State::Critical
            } else if warn.alerts(f.available_bytes, free_pct) {
                State::Warning
            } else {
                State::Ok
            };
            state = state.max(s);
            let _ = write!(
                text,
                " {} {}MiB ({:.0}% inode={:.0}%);",
                f.mount_point,
                f.available_bytes >> 20,
                free_pct,
                inode_free
            );
            // Perfdata is in used bytes: the limits become "total minus the free limit".
            let total = f.total_bytes;
            let _ = write!(
                perf,
                " {}={}B;{};{};0;{}",
                label(&f.mount_point),
                f.used_bytes,
                warn.used_limit(total),
                crit.used_limit(total),
                total
            );
        }
        Outcome::new(
            state,
            format!("DISK {} - free space:{text}|{perf}", state.label()),
        )
    }))
}

fn mem_percent(s: &str, opt: &str) -> Result<f64, String> {
    s.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("{opt} expects a percentage of used memory such as 80%, got {s:?}"))
}

fn mib(bytes: u64) -> String {
    let v = bytes as f64 / (1u64 << 20) as f64;
    if v >= 10240.0 {
        format!("{:.1}GiB", v / 1024.0)
    } else {
        format!("{v:.0}MiB")
    }
}

fn mem(o: &Opts) -> Result<Check, String> {
    let warn = mem_percent(&required(&o.warning, "-w")?, "-w")?;
    let crit = mem_percent(&required(&o.critical, "-c")?, "-c")?;
    Ok(Box::new(move |r: &Report| {
        let Some(m) = r.memory.as_ref().filter(|m| m.total_bytes > 0) else {
            return Outcome::new(
                State::Unknown,
                "MEM UNKNOWN - the agent sent no memory figures".into(),
            );
        };
        let used = percent(m.used_bytes, m.total_bytes);
        let state = if used > crit {
            State::Critical
        } else if used > warn {
            State::Warning
        } else {
            State::Ok
        };
        let of = |p: f64| (m.total_bytes as f64 * p / 100.0) as u64;
        Outcome::new(
            state,
            format!(
                "MEM {} - {used:.1}% used ({} of {}, {} available)|used={}B;{};{};0;{} total={}B",
                state.label(),
                mib(m.used_bytes),
                mib(m.total_bytes),
                mib(m.available_bytes),
                m.used_bytes,
                of(warn),
                of(crit),
                m.total_bytes,
                m.total_bytes
            ),
        )
    }))
}

fn swap(o: &Opts) -> Result<Check, String> {
    let warn = FreeLimit::parse(&required(&o.warning, "-w")?)?;
    let crit = FreeLimit::parse(&required(&o.critical, "-c")?)?;
    let no_swap = match o
        .no_swap_state
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("critical") => State::Critical,
        Some("ok") => State::Ok,
        Some("warning") => State::Warning,
        Some("unknown") => State::Unknown,
        Some(other) => {
            return Err(format!(
                "-n expects ok, warning, critical or unknown, got {other:?}"
            ));
        }
    };
    Ok(Box::new(move |r: &Report| {
        let Some(s) = r.swap.as_ref() else {
            return Outcome::new(
                State::Unknown,
                "SWAP UNKNOWN - the agent sent no swap figures".into(),
            );
        };
        let total = s.total_bytes;
        let free = total.saturating_sub(s.used_bytes);
        let free_pct = percent(free, total);
        let (state, extra) = if total == 0 {
            (
                no_swap,
                " - Swap is either disabled, not present, or of zero size.",
            )
        } else if crit.alerts(free, free_pct) {
            (State::Critical, "")
        } else if warn.alerts(free, free_pct) {
            (State::Warning, "")
        } else {
            (State::Ok, "")
        };
        Outcome::new(
            state,
            format!(
                "SWAP {} - {:.0}% free ({}MB out of {}MB){extra} |swap={free}B;{};{};0;{total}",
                state.label(),
                free_pct,
                free >> 20,
                total >> 20,
                warn.bytes_of(total),
                crit.bytes_of(total),
            ),
        )
    }))
}

fn users(o: &Opts) -> Result<Check, String> {
    let warn: Range = required(&o.warning, "-w")?
        .parse()
        .map_err(|e: crate::threshold::RangeError| e.to_string())?;
    let crit: Range = required(&o.critical, "-c")?
        .parse()
        .map_err(|e: crate::threshold::RangeError| e.to_string())?;
    Ok(Box::new(move |r: &Report| {
        let n = r.users.len();
        let v = n as f64;
        let state = if crit.alerts(v) {
            State::Critical
        } else if warn.alerts(v) {
            State::Warning
        } else {
            State::Ok
        };
        Outcome::new(
            state,
            format!(
                "USERS {} - {n} users currently logged in |users={n};{warn};{crit};0",
                state.label()
            ),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use vigie_proto::{Hello, Load, LoggedInUser, Memory, Swap};

    fn report() -> Report {
        Report {
            load: Some(Load {
                load1: 0.61,
                load5: 0.40,
                load15: 0.33,
                cpus: 2,
            }),
            memory: Some(Memory {
                total_bytes: 4 << 30,
                used_bytes: 1 << 30,
                available_bytes: 3 << 30,
            }),
            swap: Some(Swap {
                total_bytes: 2 << 30,
                used_bytes: 1 << 30,
            }),
            filesystems: vec![
                Filesystem {
                    mount_point: "/".into(),
                    fs_type: "ufs".into(),
                    total_bytes: 270_552_530_944,
                    used_bytes: 16_027_484_160,
                    available_bytes: 81_544_486_912,
                    inodes_total: 100,
                    inodes_used: 3,
                    ..Filesystem::default()
                },
                Filesystem {
                    mount_point: "/var/run".into(),
                    fs_type: "tmpfs".into(),
                    total_bytes: 4 << 20,
                    used_bytes: 4 << 20,
                    available_bytes: 0,
                    inodes_total: 10,
                    inodes_used: 10,
                    ..Filesystem::default()
                },
            ],
            users: vec![LoggedInUser {
                name: "admin".into(),
                ..LoggedInUser::default()
            }],
            ..Report::default()
        }
    }

    fn engine_with(report: Option<Report>) -> Engine {
        let registry = Arc::new(Registry::new());
        let (tx, _rx) = mpsc::channel(1);
        let hello = Hello {
            interval_ms: 10_000,
            ..Hello::default()
        };
        let (id, _killed, _) = registry.connect("auray", None, hello, tx, "01".into());
        if let Some(r) = report {
            registry.report("auray", id, r);
        }
        Engine::new(registry, None)
    }

    fn run(e: &Engine, line: &str) -> Outcome {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        e.run("auray", &argv)
    }

    #[test]
    fn load_like_check_load() {
        let e = engine_with(Some(report()));
        let o = run(&e, "load -w 15,10,5 -c 30,25,20");
        assert_eq!(o.state, State::Ok);
        assert_eq!(
            o.output,
            "LOAD OK - total load average: 0.61, 0.40, 0.33|load1=0.610;15.000;30.000;0; \
             load5=0.400;10.000;25.000;0; load15=0.330;5.000;20.000;0; "
        );
        assert_eq!(run(&e, "load -w 0.5 -c 1").state, State::Warning);
        assert_eq!(run(&e, "load -w 0.1 -c 0.6").state, State::Critical);
        let o = run(&e, "load -r -w 0.3 -c 1");
        assert_eq!(o.state, State::Warning, "0.61/2 > 0.3: {}", o.output);
        assert!(o.output.starts_with(
            "LOAD WARNING - scaled load average: 0.30, 0.20, 0.17 - total load average: 0.61, 0.40, 0.33|load1=0.610;;;0; scaled_load1=0.305;0.300;1.000;0; "
        ), "{}", o.output);
    }

    #[test]
    fn disk_like_check_disk() {
        let e = engine_with(Some(report()));
        let o = run(&e, "disk -w 20% -c 10% -p /");
        assert_eq!(o.state, State::Ok);
        assert_eq!(
            o.output,
            "DISK OK - free space: / 77766MiB (84% inode=97%);| /=16027484160B;216442024755;243497277849;0;270552530944"
        );
        // A path below a mount point is judged on the filesystem that holds it.
        let o = run(&e, "disk -w 20% -c 10% -p /var/run/pid -p /usr");
        assert_eq!(o.state, State::Critical);
        assert!(
            o.output
                .starts_with("DISK CRITICAL - free space: /var/run 0MiB (0% inode=0%); / 77766MiB"),
            "{}",
            o.output
        );
        // Sizes: 100 GiB free required.
        assert_eq!(run(&e, "disk -w 100GB -c 1GB -p /").state, State::Warning);
        assert_eq!(
            run(&e, "disk -w 20% -c 10%").state,
            State::Critical,
            "all filesystems"
        );
        let o = run(&e, "disk -w 20% -c 10% -p /nonexistent");
        assert_eq!(o.state, State::Ok, "/ holds /nonexistent: {}", o.output);
        let o = run(&e, "disk -w 20 percent -c 10%");
        assert_eq!(o.state, State::Unknown);
    }

    #[test]
    fn users_swap_mem() {
        let e = engine_with(Some(report()));
        assert_eq!(
            run(&e, "users -w 5 -c 10").output,
            "USERS OK - 1 users currently logged in |users=1;5;10;0"
        );
        assert_eq!(run(&e, "users -w 0 -c 10").state, State::Warning);
        let o = run(&e, "swap -w 50% -c 20%");
        assert_eq!(
            o.output,
            "SWAP OK - 50% free (1024MB out of 2048MB) |swap=1073741824B;1073741824;429496729;0;2147483648"
        );
        assert_eq!(run(&e, "swap -w 60% -c 20%").state, State::Warning);
        assert_eq!(run(&e, "swap -w 2GB -c 1500MB").state, State::Critical);
        let o = run(&e, "mem -w 80% -c 90%");
        assert_eq!(o.state, State::Ok);
        assert!(o.output.starts_with("MEM OK - 25.0% used (1024MiB of 4096MiB, 3072MiB available)|used=1073741824B;3435973836;3865470566;0;4294967296 total=4294967296B"), "{}", o.output);
        assert_eq!(run(&e, "mem -w 20 -c 90").state, State::Warning);
    }

    #[test]
    fn no_swap_is_critical_unless_told() {
        let mut r = report();
        r.swap = Some(Swap::default());
        let e = engine_with(Some(r));
        assert_eq!(
            run(&e, "swap -w 50% -c 20%").output,
            "SWAP CRITICAL - 0% free (0MB out of 0MB) - Swap is either disabled, not present, or of zero size. |swap=0B;0;0;0;0"
        );
        assert_eq!(run(&e, "swap -w 50% -c 20% -n ok").state, State::Ok);
    }

    #[test]
    fn unknown_agents_and_bad_arguments_are_unknown() {
        let e = engine_with(Some(report()));
        let o = e.run(
            "nobody",
            &[
                "load".into(),
                "-w".into(),
                "1".into(),
                "-c".into(),
                "2".into(),
            ],
        );
        assert_eq!(o.state, State::Unknown);
        assert_eq!(
            o.output,
            "LOAD UNKNOWN - no agent named \"nobody\" has connected to this collector since it started"
        );
        let o = run(&e, "load -w 1,2 -c 3");
        assert_eq!(o.state, State::Unknown);
        assert!(
            o.output.contains("-w expects 1 or 3 numbers") && o.output.contains("Usage: load -w"),
            "{}",
            o.output
        );
        assert!(run(&e, "load -w 1").output.contains("-c is required"));
        assert!(
            run(&e, "users -w 1 -c 2 -x")
                .output
                .contains("unknown option \"-x\"")
        );
        assert!(
            run(&e, "disk -w 1% -c 1% -r")
                .output
                .contains("does not apply")
        );
        assert!(
            run(&e, "frobnicate")
                .output
                .contains("unknown check \"frobnicate\"")
        );
        assert_eq!(e.run("auray", &[]).state, State::Unknown);
    }

    #[test]
    fn no_report_yet_and_disconnected() {
        let e = engine_with(None);
        let o = run(&e, "users -w 5 -c 10");
        assert_eq!(o.state, State::Unknown);
        assert!(o.output.contains("has not reported yet"), "{}", o.output);
        assert_eq!(run(&e, "alive").state, State::Critical);
    }

    #[test]
    fn alive_and_staleness() {
        let e = engine_with(Some(report()));
        let o = run(&e, "alive");
        assert_eq!(o.state, State::Ok);
        assert!(
            o.output.starts_with("ALIVE OK - auray reported 0s ago"),
            "{}",
            o.output
        );
        assert!(o.output.ends_with("|age=0s;;30;0;"), "{}", o.output);
        assert!(
            run(&e, "alive --stale-after=forever")
                .output
                .contains("invalid duration")
        );
        // A zero staleness limit makes any report too old after a millisecond.
        std::thread::sleep(Duration::from_millis(5));
        let stale = Engine::new(e.registry.clone(), Some(Duration::ZERO));
        let o = stale.run(
            "auray",
            &[
                "users".into(),
                "-w".into(),
                "5".into(),
                "-c".into(),
                "9".into(),
            ],
        );
        assert_eq!(o.state, State::Unknown);
        assert!(
            o.output.starts_with(
                "USERS UNKNOWN - last report from auray is 0s old (stale after 0s), received "
            ),
            "{}",
            o.output
        );
        let o = stale.run("auray", &["alive".into()]);
        assert_eq!(o.state, State::Critical);
    }

    #[test]
    fn perfdata_labels_are_quoted() {
        assert_eq!(label("/mnt/my disk"), "'/mnt/my disk'");
        assert_eq!(label("/it's"), "'/it''s'");
        assert_eq!(label("/var"), "/var");
    }
}

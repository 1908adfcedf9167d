//! Sampling the machine: filesystems, memory, swap, load, logged-in users, uptime, identity.
//!
//! Values are raw facts, in bytes and counts, measured the way the usual tools measure them
//! so an administrator can cross-check: filesystems like `df -P`, memory like `free -b`
//! (Linux) or `top` (FreeBSD), users like `who`. Judging them is the collector's job.
//! The platform parts live in `linux.rs` and `freebsd.rs`; the rest is shared POSIX.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use vigie_proto::{Filesystem, Hello, Load, LoggedInUser, Memory, Report, Swap};

#[cfg(target_os = "freebsd")]
#[path = "metrics/freebsd.rs"]
mod platform;
#[cfg(target_os = "linux")]
#[path = "metrics/linux.rs"]
mod platform;

/// Filesystem types that hold no user data: kernel views, device nodes, control groups,
/// read-only images that are always full. `df` shows some of them; checks must not.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fdescfs",
    "fusectl",
    "hugetlbfs",
    "linprocfs",
    "linsysfs",
    "mqueue",
    "mqueuefs",
    "nsfs",
    "nullfs",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Everything a Hello says about the machine.
#[derive(Clone, Debug, Default)]
pub struct SystemInfo {
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub distribution: String,
}

impl SystemInfo {
    pub fn read() -> SystemInfo {
        let (os_name, os_version) = uname();
        SystemInfo {
            hostname: hostname(),
            os_name,
            os_version,
            distribution: platform::distribution().unwrap_or_default(),
        }
    }

    /// A Hello for this machine and agent.
    pub fn hello(&self, interval_ms: u32) -> Hello {
        Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: self.hostname.clone(),
            os_name: self.os_name.clone(),
            os_version: self.os_version.clone(),
            distribution: self.distribution.clone(),
            capabilities: vec!["report".to_owned()],
            interfaces: Vec::new(),
            interval_ms,
        }
    }
}

/// Samples everything. A part that cannot be read is logged and left empty; the rest of the
/// report still goes out.
pub fn sample(seq: u64) -> Report {
    let agent_time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let warn = |what: &str, e: &io::Error| tracing::warn!(error = %e, "cannot read {what}");
    let (memory, swap) = platform::memory().unwrap_or_else(|e| {
        warn("memory", &e);
        (Memory::default(), Swap::default())
    });
    Report {
        seq,
        agent_time_ms,
        filesystems: filesystems().unwrap_or_else(|e| {
            warn("filesystems", &e);
            Vec::new()
        }),
        memory: Some(memory),
        swap: Some(swap),
        load: load().map_err(|e| warn("load averages", &e)).ok(),
        users: users(),
        uptime_s: platform::uptime().unwrap_or_else(|e| {
            warn("uptime", &e);
            0
        }),
    }
}

/// One mounted filesystem as the platform lists it, before `statvfs`.
#[derive(Debug, Clone)]
struct Mount {
    device: String,
    mount_point: String,
    fs_type: String,
}

/// Every real mounted filesystem, with `df -P`'s rules: pseudo filesystems and filesystems of
/// zero size are skipped, and a device mounted several times (bind mounts) is listed once,
/// at its shortest mount point.
pub fn filesystems() -> io::Result<Vec<Filesystem>> {
    let mut out: Vec<Filesystem> = Vec::new();
    let mut by_dev: HashMap<u64, usize> = HashMap::new();
    for m in platform::mounts()? {
        if PSEUDO_FS.contains(&m.fs_type.as_str()) {
            continue;
        }
        let Some((fs, dev)) = statvfs(&m) else {
            continue;
        };
        if fs.total_bytes == 0 {
            continue;
        }
        match by_dev.get(&dev) {
            Some(&i) => {
                if fs.mount_point.len() < out[i].mount_point.len() {
                    out[i] = fs;
                }
            }
            None => {
                by_dev.insert(dev, out.len());
                out.push(fs);
            }
        }
    }
    Ok(out)
}

fn statvfs(m: &Mount) -> Option<(Filesystem, u64)> {
    let path = CString::new(m.mount_point.as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    let mut sb = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated; both buffers are written by the kernel on success
    // and only read after checking the return code.
    let (st, dev) = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0
            || libc::stat(path.as_ptr(), sb.as_mut_ptr()) != 0
        {
            return None;
        }
        (st.assume_init(), sb.assume_init().st_dev)
    };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between platforms
    let (frsize, blocks, bfree, bavail, files, ffree) = (
        st.f_frsize as u64,
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
        st.f_files as u64,
        st.f_ffree as u64,
    );
    #[allow(clippy::unnecessary_cast)]
    let dev = dev as u64;
    Some((
        Filesystem {
            mount_point: m.mount_point.clone(),
            fs_type: m.fs_type.clone(),
            device: m.device.clone(),
            total_bytes: blocks * frsize,
            used_bytes: blocks.saturating_sub(bfree) * frsize,
            available_bytes: bavail * frsize,
            inodes_total: files,
            inodes_used: files.saturating_sub(ffree),
        },
        dev,
    ))
}

/// Load averages from `getloadavg(3)` and the number of online CPUs.
pub fn load() -> io::Result<Load> {
    let mut avg = [0f64; 3];
    // SAFETY: the buffer holds the 3 doubles asked for.
    if unsafe { libc::getloadavg(avg.as_mut_ptr(), 3) } != 3 {
        return Err(io::Error::other("getloadavg failed"));
    }
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    Ok(Load {
        load1: avg[0],
        load5: avg[1],
        load15: avg[2],
        cpus: u32::try_from(cpus).unwrap_or(1).max(1),
    })
}

/// The utmpx functions keep one static cursor per process.
static UTMPX: Mutex<()> = Mutex::new(());

/// A NUL-terminated C string in a fixed-size field (stops at the end if there is no NUL).
fn c_field(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Login sessions from utmpx, as `who` lists them.
pub fn users() -> Vec<LoggedInUser> {
    let _guard = UTMPX.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    // SAFETY: setutxent/getutxent/endutxent are used under the lock above; each entry is
    // copied out before the next call overwrites the static buffer.
    unsafe {
        libc::setutxent();
        loop {
            let e = libc::getutxent();
            if e.is_null() {
                break;
            }
            let e = &*e;
            if e.ut_type != libc::USER_PROCESS || e.ut_user[0] == 0 {
                continue;
            }
            if !platform::session_alive(e.ut_pid) {
                continue;
            }
            out.push(LoggedInUser {
                name: c_field(&e.ut_user),
                line: c_field(&e.ut_line),
                host: c_field(&e.ut_host),
                login_time_s: i64::from(e.ut_tv.tv_sec),
            });
        }
        libc::endutxent();
    }
    out
}

fn hostname() -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the length passed is the buffer's; the result is NUL-terminated by the
    // last byte we reserve.
    if unsafe { libc::gethostname(buf.as_mut_ptr(), buf.len() - 1) } != 0 {
        return String::new();
    }
    c_field(&buf)
}

fn uname() -> (String, String) {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname fills the struct on success; read only then.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return (std::env::consts::OS.to_owned(), String::new());
    }
    // SAFETY: checked above.
    let u = unsafe { u.assume_init() };
    (c_field(&u.sysname), c_field(&u.release))
}

/// Bytes in binary units, one decimal: "1.5 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The report as `vigie-agent sample` prints it.
pub fn render(info: &SystemInfo, r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let distribution = if info.distribution.is_empty() {
        String::new()
    } else {
        format!(", {}", info.distribution)
    };
    let _ = writeln!(
        out,
        "host        {} ({} {}{distribution})",
        info.hostname, info.os_name, info.os_version
    );
    let _ = writeln!(out, "uptime      {}", humantime_secs(r.uptime_s));
    if let Some(l) = &r.load {
        let _ = writeln!(
            out,
            "load        {:.2} {:.2} {:.2} ({} CPUs)",
            l.load1, l.load5, l.load15, l.cpus
        );
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(
            out,
            "memory      {} used of {} ({:.1}%), {} available",
            human(m.used_bytes),
            human(m.total_bytes),
            percent(m.used_bytes, m.total_bytes),
            human(m.available_bytes)
        );
    }
    if let Some(s) = &r.swap {
        let _ = writeln!(
            out,
            "swap        {} used of {}",
            human(s.used_bytes),
            human(s.total_bytes)
        );
    }
    let users: Vec<String> = r
        .users
        .iter()
        .map(|u| {
            if u.host.is_empty() {
                format!("{} ({})", u.name, u.line)
            } else {
                format!("{} ({} from {})", u.name, u.line, u.host)
            }
        })
        .collect();
    let _ = writeln!(out, "users       {} {}", r.users.len(), users.join(", "));
    let _ = writeln!(
        out,
        "\n{:<24} {:<10} {:>10} {:>10} {:>10} {:>5} {:>7}",
        "MOUNT", "TYPE", "SIZE", "USED", "AVAIL", "USE%", "INODE%"
    );
    for f in &r.filesystems {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>10} {:>10} {:>10} {:>4.0}% {:>6.0}%",
            f.mount_point,
            f.fs_type,
            human(f.total_bytes),
            human(f.used_bytes),
            human(f.available_bytes),
            percent(f.used_bytes, f.used_bytes + f.available_bytes),
            percent(f.inodes_used, f.inodes_total)
        );
    }
    out
}

fn humantime_secs(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_filesystem_is_listed_with_sane_values() {
        let fs = filesystems().expect("filesystems");
        let root = fs
            .iter()
            .find(|f| f.mount_point == "/")
            .expect("/ is listed");
        assert!(root.total_bytes > 0);
        assert!(root.used_bytes <= root.total_bytes);
        assert!(root.available_bytes <= root.total_bytes);
        assert!(fs.iter().all(|f| !PSEUDO_FS.contains(&f.fs_type.as_str())));
    }

    #[test]
    fn memory_and_load() {
        let r = sample(7);
        assert_eq!(r.seq, 7);
        let m = r.memory.expect("memory");
        assert!(m.total_bytes > 0 && m.used_bytes <= m.total_bytes);
        assert!(r.load.expect("load").cpus >= 1);
        assert!(r.uptime_s > 0);
    }
}

//! Linux: `/proc/self/mounts`, `/proc/meminfo`, `CLOCK_BOOTTIME`, `/etc/os-release`.

use std::io;

use vigie_proto::{Memory, Swap};

use super::Mount;

/// Undoes the octal escapes of `/proc/self/mounts` (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a /proc file whole. `fs::read_to_string` sizes its buffer from the file's length,
/// which /proc reports as 0, and so reads 32 bytes, 32, 64, … (eight reads for meminfo);
/// one 16 KiB buffer takes most files in one read.
fn read_proc(path: &str) -> io::Result<String> {
    read_all(&mut std::fs::File::open(path)?, path)
}

fn read_all(file: &mut std::fs::File, path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 16 << 10];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| io::Error::other(format!("{path} is not UTF-8")))
}

/// The mount table as last read, and the open file that tells when it changes.
struct MountTable {
    file: std::fs::File,
    mounts: Vec<Mount>,
}

static MOUNTS: std::sync::Mutex<Option<MountTable>> = std::sync::Mutex::new(None);

/// The mount table, re-read only when it changed. Generating /proc/self/mounts was the
/// largest kernel cost of a sample; the kernel flags every change of the table to each open
/// reader of that file with POLLPRI (proc(5)), so one poll tells whether to read again.
pub(super) fn mounts() -> io::Result<Vec<Mount>> {
    use std::os::fd::AsRawFd;
    let mut table = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let unchanged = table.as_ref().is_some_and(|t| {
        let mut p = libc::pollfd {
            fd: t.file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 0 || (n == 1 && p.revents & (libc::POLLPRI | libc::POLLERR) == 0)
    });
    if !unchanged {
        // Opened before reading: a change after the read is flagged on this file.
        let mut file = std::fs::File::open("/proc/self/mounts")?;
        let mounts = parse_mounts(&read_all(&mut file, "/proc/self/mounts")?);
        *table = Some(MountTable { file, mounts });
    }
    Ok(table.as_ref().map(|t| t.mounts.clone()).unwrap_or_default())
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            Some(Mount {
                device: unescape(f.next()?),
                mount_point: unescape(f.next()?),
                fs_type: unescape(f.next()?),
            })
        })
        .collect()
}

/// Memory as `free -b` (procps 4) computes it: used = MemTotal − MemAvailable.
pub(super) fn memory() -> io::Result<(Memory, Swap)> {
    parse_meminfo(&read_proc("/proc/meminfo")?)
}

fn parse_meminfo(text: &str) -> io::Result<(Memory, Swap)> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total =
        field("MemTotal").ok_or_else(|| io::Error::other("no MemTotal in /proc/meminfo"))?;
    // Kernels before 3.14 have no MemAvailable; free(1) then estimates it the same way.
    let available = field("MemAvailable").unwrap_or_else(|| {
        field("MemFree").unwrap_or(0) + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0)
    });
    let swap_total = field("SwapTotal").unwrap_or(0);
    let swap_free = field("SwapFree").unwrap_or(0);
    Ok((
        Memory {
            total_bytes: total,
            used_bytes: total.saturating_sub(available),
            available_bytes: available,
        },
        Swap {
            total_bytes: swap_total,
            used_bytes: swap_total.saturating_sub(swap_free),
        },
    ))
}

pub(super) fn uptime() -> io::Result<u64> {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes the timespec on success; read only then.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, ts.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: checked above.
    Ok(u64::try_from(unsafe { ts.assume_init() }.tv_sec).unwrap_or(0))
}

/// `PRETTY_NAME` of `/etc/os-release`.
pub(super) fn distribution() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

/// `who` on Linux skips utmp entries whose process is gone (stale after a crash).
pub(super) fn session_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_like_free() {
        let text = "MemTotal:       24683664 kB\nMemFree:        24067112 kB\n\
                    MemAvailable:   24387600 kB\nSwapTotal:       1000 kB\nSwapFree:  400 kB\n";
        let (m, s) = parse_meminfo(text).expect("parse");
        assert_eq!(m.total_bytes, 24683664 * 1024);
        assert_eq!(m.used_bytes, (24683664 - 24387600) * 1024);
        assert_eq!(s.used_bytes, 600 * 1024);
        assert!(parse_meminfo("nonsense").is_err());
    }

    /// The mount table is cached between samples; a filesystem mounted or unmounted in
    /// between must still show in (or leave) the very next sample.
    #[test]
    fn a_filesystem_mounted_later_shows_up_in_the_next_sample() {
        use std::os::unix::ffi::OsStrExt;
        let listed = |path: &str| {
            crate::metrics::filesystems()
                .expect("filesystems")
                .iter()
                .any(|f| f.mount_point == path && f.fs_type == "tmpfs")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8").to_owned();
        assert!(!listed(&path), "primes the cache");
        let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: NUL-terminated strings that outlive the calls.
        let r = unsafe {
            libc::mount(
                c"vigie-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1m".as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "mount: {e}");
            eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
            return;
        }
        let during = listed(&path);
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        assert!(during, "a new mount appears in the next sample");
        assert!(
            !listed(&path),
            "an unmounted filesystem leaves the next sample"
        );
    }

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"/a\\b"), r"/a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}

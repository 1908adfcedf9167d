//! FreeBSD (pfSense): `getmntinfo(3)`, the `vm.stats.vm` page counters, `vm.swap_info`,
//! `CLOCK_UPTIME`, and pfSense's `/etc/version`.
//!
//! Memory, in pages of `vm.stats.vm.v_page_size`:
//! - total = `v_page_count` (what the kernel manages, a little less than `hw.physmem`);
//! - available = `v_free_count` + `v_inactive_count`, plus the ZFS ARC when ZFS is loaded
//!   (`kstat.zfs.misc.arcstats.size`, bytes: the ARC is wired but gives memory back under
//!   pressure, like Linux's page cache in `free`'s "available");
//! - used = total − available: active, laundry (dirty, must be swapped out before reuse),
//!   and wired pages other than the ARC (kernel, network buffers, pf states).

use std::ffi::CString;
use std::io;

use vigie_proto::{Memory, Swap};

use super::{Mount, c_field};

fn sysctl_raw(name: &str, buf: *mut libc::c_void, len: &mut libc::size_t) -> io::Result<()> {
    let cname = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `buf` points to `*len` writable bytes (callers pass a value of that size).
    if unsafe { libc::sysctlbyname(cname.as_ptr(), buf, len, std::ptr::null(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a numeric sysctl of 4 or 8 bytes (the kernel's width varies between releases).
fn sysctl_u64(name: &str) -> io::Result<u64> {
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>();
    sysctl_raw(name, (&raw mut v).cast(), &mut len)?;
    match len {
        8 => Ok(v),
        // A 4-byte value landed in the low bytes (little endian on amd64 and arm64).
        4 => Ok(v & 0xffff_ffff),
        _ => Err(io::Error::other(format!(
            "sysctl {name}: unexpected size {len}"
        ))),
    }
}

pub(super) fn mounts() -> io::Result<Vec<Mount>> {
    let mut buf: *mut libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo points `buf` at a libc-owned array of `n` entries, valid until the
    // next call; MNT_NOWAIT avoids blocking on an unresponsive NFS server.
    let n = unsafe { libc::getmntinfo(&mut buf, libc::MNT_NOWAIT) };
    if n <= 0 || buf.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above; the entries are copied out at once.
    let entries = unsafe { std::slice::from_raw_parts(buf, n as usize) };
    Ok(entries
        .iter()
        .filter(|s| s.f_flags & libc::MNT_IGNORE as u64 == 0)
        .map(|s| Mount {
            device: c_field(&s.f_mntfromname),
            mount_point: c_field(&s.f_mntonname),
            fs_type: c_field(&s.f_fstypename),
        })
        .collect())
}

pub(super) fn memory() -> io::Result<(Memory, Swap)> {
    let page = sysctl_u64("vm.stats.vm.v_page_size")?;
    let total = sysctl_u64("vm.stats.vm.v_page_count")? * page;
    let free = sysctl_u64("vm.stats.vm.v_free_count")? * page;
    let inactive = sysctl_u64("vm.stats.vm.v_inactive_count")? * page;
    let arc = sysctl_u64("kstat.zfs.misc.arcstats.size").unwrap_or(0);
    let available = (free + inactive + arc).min(total);
    Ok((
        Memory {
            total_bytes: total,
            used_bytes: total - available,
            available_bytes: available,
        },
        swap(page)?,
    ))
}

/// `struct xswdev` of `<vm/vm_param.h>`, version 2.
#[repr(C)]
#[derive(Default)]
struct XswDev {
    version: u32,
    dev: u64,
    flags: libc::c_int,
    nblks: libc::c_int,
    used: libc::c_int,
}

const XSWDEV_VERSION: u32 = 2;

/// Sums every swap device of `vm.swap_info` (what `swapinfo` shows), in bytes.
fn swap(page: u64) -> io::Result<Swap> {
    let mut mib = [0 as libc::c_int; 16];
    let mut miblen = 2usize;
    let name = CString::new("vm.swap_info").map_err(io::Error::other)?;
    // SAFETY: `mib` has room for `miblen` entries.
    if unsafe { libc::sysctlnametomib(name.as_ptr(), mib.as_mut_ptr(), &mut miblen) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut total, mut used) = (0u64, 0u64);
    for dev in 0..64 {
        mib[miblen] = dev;
        let mut x = XswDev::default();
        let mut len = std::mem::size_of::<XswDev>();
        // SAFETY: `x` is a `len`-byte buffer matching the kernel's struct xswdev.
        let rc = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                (miblen + 1) as libc::c_uint,
                (&raw mut x).cast(),
                &mut len,
                std::ptr::null(),
                0,
            )
        };
        if rc != 0 {
            // ENOENT: no more devices.
            break;
        }
        if x.version != XSWDEV_VERSION {
            return Err(io::Error::other("vm.swap_info: unknown xswdev version"));
        }
        total += u64::try_from(x.nblks).unwrap_or(0) * page;
        used += u64::try_from(x.used).unwrap_or(0) * page;
    }
    Ok(Swap {
        total_bytes: total,
        used_bytes: used,
    })
}

pub(super) fn uptime() -> io::Result<u64> {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes the timespec on success; read only then.
    if unsafe { libc::clock_gettime(libc::CLOCK_UPTIME, ts.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: checked above.
    Ok(u64::try_from(unsafe { ts.assume_init() }.tv_sec).unwrap_or(0))
}

/// "pfSense 2.7.2-RELEASE" on pfSense (`/etc/platform`, `/etc/version`), else nothing:
/// uname already says "FreeBSD 14.0-CURRENT".
pub(super) fn distribution() -> Option<String> {
    let platform = std::fs::read_to_string("/etc/platform").ok()?;
    let version = std::fs::read_to_string("/etc/version").unwrap_or_default();
    Some(
        format!("{} {}", platform.trim(), version.trim())
            .trim()
            .to_owned(),
    )
}

/// FreeBSD's `who` lists every USER_PROCESS entry of utx.active; logout removes them.
pub(super) fn session_alive(_pid: libc::pid_t) -> bool {
    true
}

//! The few raw system calls the local sandbox needs (rlimits, a network namespace and a user
//! switch in the child before `exec`, process-group kills). Each `unsafe` is allowed on one
//! function only, with the reason it is sound.

use std::io;

#[cfg(target_env = "gnu")]
pub(crate) type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub(crate) type Resource = libc::c_int;

pub(crate) const RLIMIT_DATA: Resource = libc::RLIMIT_DATA as Resource;
pub(crate) const RLIMIT_NPROC: Resource = libc::RLIMIT_NPROC as Resource;
pub(crate) const RLIMIT_FSIZE: Resource = libc::RLIMIT_FSIZE as Resource;
pub(crate) const RLIMIT_NOFILE: Resource = libc::RLIMIT_NOFILE as Resource;
pub(crate) const RLIMIT_CPU: Resource = libc::RLIMIT_CPU as Resource;
pub(crate) const RLIMIT_CORE: Resource = libc::RLIMIT_CORE as Resource;

/// Which namespaces the child enters before `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Netns {
    /// Stay in the host's network namespace.
    Host,
    /// A new network namespace (needs CAP_SYS_ADMIN, i.e. root).
    New,
    /// A new user namespace and, owned by it, a new network namespace (unprivileged, where the
    /// kernel allows user namespaces).
    NewWithUserns,
}

/// What the child does between `fork` and `exec`.
#[derive(Debug, Clone)]
pub(crate) struct ChildSetup {
    pub netns: Netns,
    pub rlimits: Vec<(Resource, u64)>,
    /// Switch to this uid and gid (with no supplementary groups); only when running as root.
    pub user: Option<(u32, u32)>,
}

/// Installs `setup` to run in the child after `fork`, before `exec`.
#[allow(unsafe_code)]
pub(crate) fn install(cmd: &mut std::process::Command, setup: ChildSetup) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child, where only async-signal-safe calls are
    // allowed. It calls unshare, socket/ioctl/close (`loopback_up`), setrlimit, setgroups, setgid and setuid (all plain system
    // calls) on data moved in before the fork, allocates nothing, takes no locks, and reports
    // failures with `from_raw_os_error`, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            let flags = match setup.netns {
                Netns::Host => 0,
                Netns::New => libc::CLONE_NEWNET,
                Netns::NewWithUserns => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
            };
            if flags != 0 && libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            if flags != 0 {
                // A new namespace's loopback starts down: tests that serve on localhost need
                // it up. Where that fails, the run goes on without it.
                loopback_up();
            }
            for &(res, v) in &setup.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                if libc::setrlimit(res, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = setup.user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid as libc::gid_t) != 0
                    || libc::setuid(uid as libc::uid_t) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets the current network namespace's `lo` up (socket, two ioctls, close: plain system
/// calls, safe between fork and exec). Errors are ignored: without it only loopback fails.
#[allow(unsafe_code)]
fn loopback_up() {
    // SAFETY: `ifreq` is plain data zeroed before use; the name fits its 16 bytes with the
    // terminating NUL; the descriptor is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(fd);
    }
}

/// The effective user id of this process.
#[allow(unsafe_code)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id of this process.
#[allow(unsafe_code)]
pub(crate) fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Waits for an exclusive `flock` on `f` (released when the file is closed).
#[allow(unsafe_code)]
pub(crate) fn flock_exclusive(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock takes an open descriptor, which `f` keeps open for the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// SIGKILL to every process of group `pgid`.
#[allow(unsafe_code)]
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never signal "all processes" or init by accident
    }
    // SAFETY: killpg takes plain integers; a stale group id only yields ESRCH.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// SIGKILL to one process.
#[allow(unsafe_code)]
fn kill_pid(pid: libc::pid_t) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill takes plain integers; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Kills every live process whose real uid is `uid`; returns how many were signalled
/// (zombies are not counted). Used with a uid that belongs to one run only.
pub(crate) fn kill_user(uid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let mut real_uid = None;
        let mut zombie = false;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                real_uid = rest.split_whitespace().next().and_then(|u| u.parse().ok());
            } else if let Some(rest) = line.strip_prefix("State:") {
                zombie = rest.trim_start().starts_with('Z');
            }
        }
        if real_uid == Some(uid) && !zombie {
            kill_pid(pid);
            n += 1;
        }
    }
    n
}

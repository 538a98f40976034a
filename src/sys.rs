//! The only file with `unsafe`: thin, checked wrappers over the few libc calls std does not offer.
//!
//! `poll(2)` for the socket owners, a self-pipe for SIGINT/SIGTERM, `getrandom(2)` for ids and
//! tokens, signals to whole process groups, `waitid(2)` to see a child's exit without
//! reaping it, an `eventfd(2)` to wake a polling owner, malloc tuning, and giving a resting
//! thread's dead stack pages back. Each wrapper turns the C convention into an `io::Result` and says in one line why
//! its `unsafe` block is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// What `poll` saw on one descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ready {
    pub readable: bool,
    /// Writable (only reported when asked for).
    pub writable: bool,
    /// Hang-up or error: reading will tell the details.
    pub hangup: bool,
}

/// Waits until one of `fds` (descriptor, want-writable) is ready or `timeout` passes.
/// Returns one `Ready` per descriptor; all false on timeout. `EINTR` counts as a timeout.
pub(crate) fn poll(fds: &[(RawFd, bool)], timeout: Option<Duration>) -> io::Result<Vec<Ready>> {
    let pollfd = |&(fd, want_write): &(RawFd, bool)| libc::pollfd {
        fd,
        events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // A few descriptors (every owner loop) go on the stack: nothing is allocated before the
    // wait, so a resting thread's wait touches no deeper page than its own frames.
    let mut few = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 8];
    let mut many = Vec::new();
    let pfds: &mut [libc::pollfd] = if fds.len() <= few.len() {
        for (slot, fd) in few.iter_mut().zip(fds) {
            *slot = pollfd(fd);
        }
        &mut few[..fds.len()]
    } else {
        many.extend(fds.iter().map(pollfd));
        &mut many
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(0, i32::MAX as u128) as i32);
    // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()` pollfd structs.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(pfds
        .iter()
        .map(|p| Ready {
            readable: p.revents & libc::POLLIN != 0,
            writable: p.revents & libc::POLLOUT != 0,
            hangup: p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
        })
        .collect())
}

/// Sets `O_NONBLOCK` on `fd` (our end of a pipe; std offers it for sockets only).
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets flags of a descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` for `fd` to be readable (or hung up); a signal does not cut the wait
/// short. Not `poll` above: one `pollfd` on the stack and nothing else keeps this frame, the
/// one an idle connection waits in, small enough for its thread to keep two stack pages
/// (`operator::idle_connections_keep_two_stack_pages` fails through `poll`).
pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().clamp(0, i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid, exclusively borrowed pollfd struct.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        if left.is_zero() {
            return Ok(false);
        }
    }
}

/// Bytes received on socket `fd` and not read yet (`FIONREAD`); 0 if the kernel cannot say.
pub(crate) fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Fills `buf` with random bytes from the kernel's CSPRNG: `getrandom(2)`, or `/dev/urandom` on
/// kernels older than 3.17 (old router kernels) that lack the call, or where a seccomp policy
/// refuses it. Panics only when neither can be read: ids and keys cannot be made without it.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    fill_random(buf, |rest| {
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    });
}

/// `random_bytes` with the system call given (a seam for the test of the fallback).
fn fill_random(buf: &mut [u8], mut getrandom: impl FnMut(&mut [u8]) -> io::Result<usize>) {
    let mut filled = 0;
    while filled < buf.len() {
        match getrandom(&mut buf[filled..]) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                let read = std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf[filled..]));
                if let Err(urandom) = read {
                    panic!("no randomness: getrandom(2) failed ({e}) and /dev/urandom cannot be read ({urandom})");
                }
                return;
            }
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
}

/// `len` random bytes as lowercase hex.
pub(crate) fn random_hex(len: usize) -> String {
    let mut buf = vec![0u8; len];
    random_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random (version 4) UUID in its usual text form.
pub(crate) fn random_uuid() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Sends `signal` to every process in the group `pgid`. A group already gone is not an error.
pub(crate) fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers; a negative pid addresses the process group.
    let rc = unsafe { libc::kill(-(pgid as libc::pid_t), signal) };
    if rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) use libc::{SIGKILL, SIGTERM};

/// Whether our child `pid` has exited, WITHOUT reaping it (`waitid` with `WNOWAIT`): until it is
/// reaped, the zombie keeps its pid, and so its process group id, from being reused, so the
/// group can still be signalled safely. Errors with `ECHILD` when `pid` is not an unreaped child.
pub(crate) fn exited_unreaped(pid: u32) -> io::Result<bool> {
    loop {
        // SAFETY: siginfo_t is plain old data; all zeroes is a valid value (and si_pid 0 is how
        // waitid with WNOHANG says that nothing changed).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid, exclusively borrowed siginfo_t; the other arguments are integers.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 {
            // SAFETY: waitid filled `info` (or left it zeroed); si_pid is valid for SIGCHLD info.
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes a command's child ask for SIGKILL when the thread that spawned it dies, so a register
/// killed with SIGKILL does not leave its direct child behind (SIGTERM and SIGINT stop the whole
/// process group more gently; a grandchild of a SIGKILLed register may survive, as `sh -c` with
/// one command usually execs it and then it is the direct child).
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// This machine's host name (the kernel's), or `edge` when it cannot be read.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    if name.is_empty() {
        "edge".into()
    } else {
        name
    }
}

/// What the signal pipe held: a signal to stop (SIGINT, SIGTERM), to reload (SIGHUP), or both.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Signals {
    pub stop: bool,
    pub reload: bool,
}

/// Empties the signal pipe and says which signals had arrived.
pub(crate) fn take_signals() -> Signals {
    let mut got = Signals::default();
    let Some(mut pipe) = SIGNAL_PIPE_READ.get() else { return got };
    let mut buf = [0u8; 64];
    while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if i32::from(b) == libc::SIGHUP {
                got.reload = true;
            } else {
                got.stop = true;
            }
        }
    }
    got
}

/// Also routes SIGHUP to the signal pipe (the gateway reloads its policy on it), after
/// `signal_pipe`.
pub(crate) fn reload_on_sighup() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only performs an async-signal-safe write(2).
    unsafe { libc::signal(libc::SIGHUP, handler) };
}

static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_PIPE_READ: OnceLock<UnixStream> = OnceLock::new();

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // The signal's number, so that a reload is told from a stop.
        let byte = u8::try_from(signal).unwrap_or(u8::MAX);
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte. A full pipe is fine.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Routes SIGINT and SIGTERM to a self-pipe and returns its read end's descriptor, to be polled
/// next to sockets. Idempotent. (SIGPIPE needs nothing: Rust's runtime already ignores it.)
pub(crate) fn signal_pipe() -> io::Result<RawFd> {
    if let Some(r) = SIGNAL_PIPE_READ.get() {
        return Ok(r.as_raw_fd());
    }
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    SIGNAL_PIPE_WRITE.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::Relaxed);
    let fd = read.as_raw_fd();
    let _ = SIGNAL_PIPE_READ.set(read);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only performs an async-signal-safe write(2).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    Ok(fd)
}

/// Takes an exclusive `flock` on `file`, waiting for it; released when the file is closed.
#[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
pub(crate) fn lock_exclusively(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: flock on a descriptor the caller's open file owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Limits glibc's malloc to `arenas` arenas (its default is eight per CPU). Every thread that
/// allocates gets an arena of its own up to that limit, and memory freed in one arena serves
/// only that arena: with a thread per connection, a thousand links spread their heap over
/// sixteen arenas and keep roughly twice what they use (BENCHMARKS.md). A no-op elsewhere
/// (musl has one heap). Call it before the first thread starts; `MALLOC_ARENA_MAX` in the
/// environment still wins, since glibc reads it at start-up and we only lower the default.
pub(crate) fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes two integers and only changes malloc's tuning; no thread of
        // ours has started yet, and glibc serializes it with allocation anyway.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// The glibc tunable that sizes malloc's per-thread cache (tcache).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count";

/// glibc only: turns off malloc's per-thread caches by re-executing this process once with
/// `GLIBC_TUNABLES=glibc.malloc.tcache_count=0` (a tunable glibc reads only from the environment,
/// at start-up; `mallopt` cannot set it). Each thread's cache keeps up to seven freed chunks of
/// every small size, and in a message-passing design most chunks are freed by a thread other
/// than the one that allocated them: with a thread per connection, 3,000 threads held about
/// 11 KiB each, half the gateway's heap (BENCHMARKS.md). Without the caches, small frees go to
/// the arena's fast bins, at no cost measurable against the syscalls of a call.
///
/// Returns (doing nothing) when the user's `GLIBC_TUNABLES` already names the tunable or is not
/// UTF-8, when the process runs in secure mode (setuid, or file capabilities such as
/// `cap_net_bind_service`: glibc then erases the tunable from the environment, so every run
/// would re-execute again, forever), when started through the dynamic loader (`ld.so mcpport`:
/// /proc/self/exe is then the loader), when re-executing fails (no `/proc`), and everywhere but
/// glibc. The PID stays the same.
pub(crate) fn drop_malloc_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: getauxval reads values the kernel gave the process at exec.
        let (secure, interpreter) =
            unsafe { (libc::getauxval(libc::AT_SECURE), libc::getauxval(libc::AT_BASE)) };
        // Started as `ld.so mcpport …`, no interpreter was loaded for us (AT_BASE is 0) and
        // /proc/self/exe is the loader itself, which would take `gateway` for a program to run.
        // (A static build has no interpreter either, and is always its own /proc/self/exe.)
        if interpreter == 0 && !cfg!(target_feature = "crt-static") {
            return;
        }
        let Some(tunables) = tunables_without_caches(std::env::var_os("GLIBC_TUNABLES"), secure != 0) else {
            return;
        };
        reexec_with(&tunables);
    }
}

/// Re-executes this process with `GLIBC_TUNABLES=tunables`; returns only if that failed, and then
/// the process carries on as it was. `execv`, not `Command::exec`: glibc's `execvp` (what
/// `Command` uses) answers a binary the kernel cannot run (ENOEXEC: an ARM binary under
/// qemu-user without binfmt_misc) by running it as a shell script, and the gateway would become
/// a shell choking on its own bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec_with(tunables: &str) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStringExt;
    let args: Result<Vec<CString>, _> = std::env::args_os().map(|a| CString::new(a.into_vec())).collect();
    let Ok(args) = args else { return };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let before = std::env::var_os("GLIBC_TUNABLES");
    // Called first thing in `main`, before any thread exists: the environment is ours alone.
    std::env::set_var("GLIBC_TUNABLES", tunables);
    // SAFETY: both arrays are NUL-terminated and outlive the call; execv returns only on failure.
    unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
    match before {
        Some(v) => std::env::set_var("GLIBC_TUNABLES", v),
        None => std::env::remove_var("GLIBC_TUNABLES"),
    }
}

/// The `GLIBC_TUNABLES` to re-execute with (the user's settings, then the caches' off), or
/// `None` when there is nothing to do or it would not stick (see `drop_malloc_thread_caches`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables_without_caches(current: Option<std::ffi::OsString>, secure: bool) -> Option<String> {
    let current = match current {
        None => String::new(),
        Some(v) => v.into_string().ok()?,
    };
    if secure || current.contains(TCACHE_TUNABLE) {
        return None;
    }
    Some(if current.is_empty() {
        format!("{TCACHE_TUNABLE}=0")
    } else {
        format!("{current}:{TCACHE_TUNABLE}=0")
    })
}

/// The calling thread's stack: its lowest usable address and its size, as the C library knows
/// them (the guard page excluded). `None` if the library cannot say.
pub(crate) fn stack_bounds() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initializes `attr` for the calling thread (checked by its
    // return value before use); pthread_attr_getstack only reads it and writes the two out
    // parameters; the attr is destroyed exactly once, after its last use.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (rc == 0 && !addr.is_null()).then_some((addr as usize, size))
    }
}

/// The size of a memory page.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n.is_power_of_two()).unwrap_or(4096)
}

/// Discards the whole pages of the calling thread's stack (`low..high`) that lie below its
/// stack pointer: the kernel unmaps them and reads them back as zeros when next touched. Memory
/// below the stack pointer is dead by the ABI, so this holds by construction, not by a margin
/// measured once: on x86_64 and aarch64 the stack pointer is read and `madvise(2)` is issued in
/// one `asm!` block, with nothing of this function's below it but x86_64's 128-byte red zone,
/// which is kept (so no compiler, optimization level or C library can put a live byte in the
/// range); elsewhere (32-bit ARM) the range ends a whole page below this function's frame, at
/// the cost of a page. Never inlined, so its frame is below every frame of the caller; nothing
/// happens unless that frame is on the given stack (a sanitizer's fake stack puts locals on the
/// heap). A signal that comes meanwhile is delivered after the system call.
#[inline(never)]
pub(crate) fn discard_stack_below(low: usize, high: usize) {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    if !(low < here && here < high) {
        return;
    }
    let page = page_size();
    let start = low.next_multiple_of(page);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: `start` is page-aligned and inside this thread's stack, and the range ends below
    // the stack pointer as `madvise_below_sp` reads it in the same block as the system call:
    // dead memory no reference points into. MADV_DONTNEED on private anonymous memory only
    // drops the pages' contents; a failure changes nothing.
    unsafe {
        madvise_below_sp(start, page);
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let end = here.saturating_sub(page) / page * page;
        if end > start {
            // SAFETY: the range ends a whole page below this function's own frame, the deepest
            // live one; `madvise` is a system-call stub whose frame, if any, is far smaller.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// `madvise(start, end - start, MADV_DONTNEED)` where `end` is the stack pointer, less the
/// 128-byte red zone, rounded down to a page; nothing when `end <= start`.
///
/// # Safety
/// `start` must be page-aligned, and `[start, end)` must be the calling thread's own stack.
#[cfg(target_arch = "x86_64")]
unsafe fn madvise_below_sp(start: usize, page: usize) {
    // SAFETY: no stack is used (nostack); rax, rcx, r11 and rsi, which the syscall or the block
    // write, are declared clobbered.
    unsafe {
        std::arch::asm!(
            "mov {end}, rsp",
            "sub {end}, 128",
            "and {end}, {mask}",
            "mov rsi, {end}",
            "sub rsi, rdi",
            "jbe 2f",
            "syscall",
            "2:",
            end = out(reg) _,
            mask = in(reg) !(page - 1),
            in("rdi") start,
            inout("rax") libc::SYS_madvise => _,
            in("rdx") libc::MADV_DONTNEED as usize,
            out("rsi") _,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
}

/// As the x86_64 one; AAPCS64 has no red zone.
///
/// # Safety
/// `start` must be page-aligned, and `[start, end)` must be the calling thread's own stack.
#[cfg(target_arch = "aarch64")]
unsafe fn madvise_below_sp(start: usize, page: usize) {
    // SAFETY: no stack is used (nostack); x0 and x1, which the syscall or the block write, are
    // declared clobbered.
    unsafe {
        std::arch::asm!(
            "mov {end}, sp",
            "and {end}, {end}, {mask}",
            "subs x1, {end}, x0",
            "b.ls 2f",
            "svc #0",
            "2:",
            end = out(reg) _,
            mask = in(reg) !(page - 1),
            inout("x0") start => _,
            out("x1") _,
            in("x2") libc::MADV_DONTNEED as usize,
            in("x8") libc::SYS_madvise,
            options(nostack),
        );
    }
}

/// How many of the pages in `[start, end)` are resident (`mincore(2)`); for tests.
#[cfg(test)]
pub(crate) fn resident_pages(start: usize, end: usize) -> usize {
    let page = page_size();
    let start = start / page * page;
    let n = (end.saturating_sub(start)).div_ceil(page);
    let mut v = vec![0u8; n];
    // SAFETY: `v` has one byte per page of the range, as mincore requires; the range is mapped
    // (the caller's own stack), and a failure leaves `v` zeroed.
    unsafe { libc::mincore(start as *mut libc::c_void, n * page, v.as_mut_ptr()) };
    v.iter().filter(|&&b| b & 1 != 0).count()
}

/// A wake-up for a thread waiting in `poll`: one `eventfd(2)` descriptor, shared by the thread
/// that waits and those that wake it (one descriptor per link, where a pipe took two). Waking
/// twice before the waiter drains is one wake-up; nothing is ever lost or blocks.
pub(crate) struct Wake {
    fd: std::os::fd::OwnedFd,
}

impl Wake {
    pub(crate) fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
        Ok(Wake { fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) } })
    }

    /// Makes the descriptor readable until the next `drain`.
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one` to our own descriptor. EAGAIN (the counter is
        // near its maximum) means a wake-up is already pending, so it is ignored.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes every pending wake-up: the descriptor is not readable until the next `wake`.
    pub(crate) fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tunables_tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn the_caches_go_once_after_the_users_tunables() {
        let off = Some("glibc.malloc.tcache_count=0".to_string());
        assert_eq!(tunables_without_caches(None, false), off);
        assert_eq!(tunables_without_caches(Some("".into()), false), off);
        assert_eq!(
            tunables_without_caches(Some("glibc.malloc.check=3".into()), false),
            Some("glibc.malloc.check=3:glibc.malloc.tcache_count=0".into())
        );
        assert_eq!(tunables_without_caches(Some("glibc.malloc.tcache_count=7".into()), false), None);
    }

    #[test]
    fn no_re_exec_where_glibc_would_erase_the_tunable_or_the_users_are_not_text() {
        // Secure mode (setcap, setuid): glibc erases the tunable, so the next run would not see
        // it and would re-execute again, forever.
        assert_eq!(tunables_without_caches(None, true), None);
        assert_eq!(tunables_without_caches(Some("glibc.malloc.check=3".into()), true), None);
        let not_text = OsString::from_vec(b"glibc.malloc.check=\xff".to_vec());
        assert_eq!(tunables_without_caches(Some(not_text), false), None, "the user's are kept");
    }
}

#[cfg(test)]
mod wake_tests {
    use super::*;

    #[test]
    fn two_wakes_are_one_readiness_and_a_drain_takes_it() {
        let w = Wake::new().unwrap();
        let ready = |w: &Wake| poll(&[(w.as_raw_fd(), false)], Some(Duration::ZERO)).unwrap()[0].readable;
        assert!(!ready(&w), "a new wake-up is not pending");
        w.wake();
        w.wake();
        assert!(ready(&w));
        w.drain();
        assert!(!ready(&w), "one drain takes both wakes");
        w.drain(); // nothing pending: does not block
        w.wake();
        assert!(ready(&w));
    }
}

#[cfg(test)]
mod random_tests {
    use super::*;

    /// A kernel without getrandom(2) (older than 3.17) gets its bytes from /dev/urandom.
    #[test]
    fn random_bytes_come_from_dev_urandom_without_getrandom() {
        let mut buf = [0u8; 64];
        let mut calls = 0;
        fill_random(&mut buf, |_| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        });
        assert_eq!(calls, 1);
        assert!(buf.iter().any(|b| *b != 0), "filled from /dev/urandom");
        let mut partly = [0u8; 64];
        fill_random(&mut partly, |rest| {
            if rest.len() == 64 {
                rest[..10].fill(1);
                Ok(10)
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOSYS))
            }
        });
        assert_eq!(partly[..10], [1; 10], "what getrandom gave is kept");
        assert!(partly[10..].iter().any(|b| *b != 0), "the rest from /dev/urandom");
    }
}

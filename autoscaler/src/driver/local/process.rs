//! The local driver's dealings with processes: starting a boot script as the leader of a
//! new session and process group, telling whether that group is alive and still ours,
//! signalling it (never anything else, never by name), and reading the tail of its console.
//!
//! Why `setsid(1)` rather than `pre_exec(setsid)`: it needs no `unsafe`. util-linux's
//! `setsid` calls `setsid(2)` and execs the program in place when it is not a process group
//! leader, which a freshly forked child never is; so the boot script keeps the child's pid,
//! and that pid is its session id and process group id. [`spawn_boot`] returns only once the
//! new session exists, so that a delete right after a boot finds the group.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, OnceLock},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::signal::{killpg, Signal},
    unistd::{getpgrp, getpid, getsid, Pid},
};
use tokio::{process::Command, time::Instant};

use crate::driver::DriverError;

/// How often a group's liveness is polled while waiting for it to exit.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// How long a group may outlive SIGKILL before a delete gives up (processes stuck in
/// uninterruptible I/O die only when the I/O returns).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long `setsid` may take to make the boot script a session leader; it is one exec.
const SESSION_WAIT: Duration = Duration::from_secs(2);

/// The file in the VM directory where the VM's first process writes its pid (its process
/// group id) before it becomes the boot script: if the conductor dies between starting the
/// VM and recording the group, the restarted driver still finds the group (no orphan).
pub(super) const PGID_FILE: &str = "pgid";

/// How the boot process ended, as the task that reaped it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BootOutcome {
    /// `exit status: 1`, `signal: 9 (SIGKILL)`, as the standard library words it.
    pub status: String,
    /// `boot-finished` did not exist when the boot process had exited.
    pub before_boot_finished: bool,
}

/// Set once, by the task that waits on the boot process.
pub(super) type BootWatch = Arc<OnceLock<BootOutcome>>;

/// A started boot script.
pub(super) struct Spawned {
    /// The boot process's pid: the id of its session and process group.
    pub pgid: i32,
    pub leader_start: Option<u64>,
    pub watch: BootWatch,
}

/// What a boot script is started with.
pub(super) struct BootCommand<'a> {
    pub boot_script: &'a Path,
    pub vm_dir: &'a Path,
    pub console_log: &'a Path,
    pub boot_finished: PathBuf,
    pub env: Vec<(&'static str, String)>,
    /// The uid and gid the boot script runs as (`[local] vm_user`), or the conductor's.
    pub run_as: Option<(u32, u32)>,
}

/// Starts the boot script in a new session (see the module doc), with its output appended
/// to the console log, and a task that reaps it and records how it ended.
pub(super) async fn spawn_boot(cmd: BootCommand<'_>) -> Result<Spawned, DriverError> {
    let command_text = format!("setsid sh -c ... {}", cmd.boot_script.display());
    let spawn_error = |source| DriverError::Spawn {
        command: command_text.clone(),
        source,
    };
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cmd.console_log)
        .map_err(|e| DriverError::io(cmd.console_log, e))?;
    let console_err = console
        .try_clone()
        .map_err(|e| DriverError::io(cmd.console_log, e))?;
    // `sh` runs as the session leader (same pid), writes that pid, and becomes the boot
    // script with `exec`.
    let mut command = Command::new("setsid");
    if let Some((uid, gid)) = cmd.run_as {
        // The standard library drops the supplementary groups too (setgroups(0)), and
        // sets the ids in the child before it execs setsid.
        command.uid(uid).gid(gid).env("HOME", cmd.vm_dir);
    }
    let mut child = command
        .args(["sh", "-c", &format!("echo $$ > {PGID_FILE}; exec \"$0\"")])
        .arg(cmd.boot_script)
        .current_dir(cmd.vm_dir)
        .envs(cmd.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(console_err))
        // A VM outlives the driver value and the conductor process: never kill on drop.
        .kill_on_drop(false)
        .spawn()
        .map_err(spawn_error)?;
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return Err(spawn_error(io::Error::other("the child has no pid")));
    };
    let watch: BootWatch = Arc::new(OnceLock::new());

    // Wait for `setsid` to have made the child a session leader, or for it to exit.
    let deadline = Instant::now() + SESSION_WAIT;
    let mut exited = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        if getsid(Some(Pid::from_raw(pid))) == Ok(Pid::from_raw(pid)) {
            break;
        }
        if Instant::now() >= deadline {
            // Still our direct child in our own group: kill it by its handle.
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(spawn_error(io::Error::other(format!(
                "setsid did not start a new session within {} s",
                SESSION_WAIT.as_secs()
            ))));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let leader_start = leader_start_time(pid);
    let boot_finished = cmd.boot_finished;
    match exited {
        Some(status) => {
            let _ = watch.set(outcome(status.to_string(), &boot_finished));
        }
        None => {
            let watch = Arc::clone(&watch);
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("unknown status (waiting failed: {e})"),
                };
                let _ = watch.set(outcome(status, &boot_finished));
            });
        }
    }
    Ok(Spawned {
        pgid: pid,
        leader_start,
        watch,
    })
}

fn outcome(status: String, boot_finished: &Path) -> BootOutcome {
    BootOutcome {
        status,
        before_boot_finished: !boot_finished.exists(),
    }
}

/// Whether `pgid` may be signalled at all: never 0 or 1 (`kill(0)` is our own group,
/// `kill(-1)` every process), never our own group or pid. Records come from disk and are
/// outside input.
pub(super) fn is_signallable(pgid: i32) -> bool {
    pgid > 1 && pgid != getpgrp().as_raw() && pgid != getpid().as_raw()
}

/// Whether the process group exists, is the one recorded, and has a member that is not a
/// zombie. `hint` is a member found alive before: checked first, it spares a scan of `/proc`
/// when the leader has exited (as a boot script that starts daemons and returns does).
///
/// Identity: a live group's id cannot be taken by a new process, but once the group is
/// gone a new session may reuse it; when the process with that pid exists and started at
/// another time than the recorded leader, the group is not ours.
///
/// Zombies: `kill(-pgid, 0)` counts them, and an orphaned one stays in the group until
/// init reaps it, which some inits do only now and then (and a container without one
/// never does); a group of zombies is dead.
pub(super) fn group_alive(pgid: i32, leader_start: Option<u64>, hint: &mut Option<i32>) -> bool {
    if !is_signallable(pgid) {
        return false;
    }
    match killpg(Pid::from_raw(pgid), None) {
        Ok(()) => {}
        // EPERM: the group exists but belongs to someone else, so it is not our VM.
        Err(Errno::ESRCH | Errno::EPERM) => return false,
        Err(_) => return true,
    }
    let leader = ProcStat::read(pgid);
    if let (Some(recorded), Some(leader)) = (leader_start, &leader) {
        if leader.start_time != recorded {
            return false;
        }
    }
    let is_live_member = |stat: &ProcStat| stat.pgrp == pgid && stat.is_live();
    if leader.as_ref().is_some_and(is_live_member) {
        return true;
    }
    if hint
        .and_then(ProcStat::read)
        .as_ref()
        .is_some_and(is_live_member)
    {
        return true;
    }
    match live_member(pgid) {
        Ok(found) => {
            *hint = found;
            found.is_some()
        }
        // No /proc to look into: trust kill.
        Err(_) => true,
    }
}

/// The process group a VM's first process wrote into its directory, when that group is
/// alive.
pub(super) fn recorded_by_the_vm(vm_dir: &Path) -> Option<i32> {
    let pgid: i32 = fs::read_to_string(vm_dir.join(PGID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    group_alive(pgid, None, &mut None).then_some(pgid)
}

/// A process of group `pgid` that is not a zombie, from a scan of `/proc`.
fn live_member(pgid: i32) -> io::Result<Option<i32>> {
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if ProcStat::read(pid).is_some_and(|s| s.pgrp == pgid && s.is_live()) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// Sends `signal` to the whole group if it is alive and ours, and runs as `owner` when
/// given (`[local] vm_user`: a VM may rewrite its own record, never make the driver
/// signal another user's processes); whether it was sent.
fn signal_group(pgid: i32, leader_start: Option<u64>, owner: Option<u32>, signal: Signal) -> bool {
    group_alive(pgid, leader_start, &mut None)
        && owner.is_none_or(|uid| group_owner(pgid) == Some(uid))
        && killpg(Pid::from_raw(pgid), signal).is_ok()
}

/// The uid of group `pgid`'s leader, or of a live member when the leader is gone.
fn group_owner(pgid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = |pid: i32| fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid());
    uid(pgid).or_else(|| uid(live_member(pgid).ok()??))
}

/// SIGTERM to the group, up to `grace` for it to vanish, then SIGKILL and up to
/// [`KILL_WAIT`] more. `Err(())` when it still lives after that.
pub(super) async fn terminate_group(
    pgid: i32,
    leader_start: Option<u64>,
    owner: Option<u32>,
    grace: Duration,
) -> Result<(), ()> {
    if !signal_group(pgid, leader_start, owner, Signal::SIGTERM) {
        return Ok(());
    }
    if wait_gone(pgid, leader_start, grace).await {
        return Ok(());
    }
    signal_group(pgid, leader_start, owner, Signal::SIGKILL);
    match wait_gone(pgid, leader_start, KILL_WAIT).await {
        true => Ok(()),
        false => Err(()),
    }
}

/// Polls every [`POLL`] until the group is gone (true) or `limit` has passed (false).
async fn wait_gone(pgid: i32, leader_start: Option<u64>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut hint = None;
    loop {
        if !group_alive(pgid, leader_start, &mut hint) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// The start time of process `pid`, in clock ticks since the machine booted; `None` when
/// it is not readable.
pub(super) fn leader_start_time(pid: i32) -> Option<u64> {
    ProcStat::read(pid).map(|s| s.start_time)
}

/// What the driver reads of `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    state: char,
    /// Field 5.
    pgrp: i32,
    /// Field 22, in clock ticks since the machine booted.
    start_time: u64,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        Self::parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The command name (field 2) is in parentheses and may hold spaces and parentheses
    /// itself, so fields are counted after the last `)`.
    fn parse(stat: &str) -> Option<ProcStat> {
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.chars().next()?;
        let pgrp = fields.nth(1)?.parse().ok()?;
        // Fields 6 to 21 lie between the group and the start time.
        let start_time = fields.nth(16)?.parse().ok()?;
        Some(ProcStat {
            state,
            pgrp,
            start_time,
        })
    }

    fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The last `lines` lines of the console log (at most its last 64 KiB), lossily decoded;
/// empty when it cannot be read.
pub(super) fn console_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> io::Result<Vec<u8>> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let rest: String = (6..=25).map(|n| format!(" {n}")).collect();
        let want = |state| {
            Some(ProcStat {
                state,
                pgrp: 5,
                start_time: 22,
            })
        };
        assert_eq!(
            ProcStat::parse(&format!("42 (boot) S 4 5{rest}")),
            want('S')
        );
        assert_eq!(
            ProcStat::parse(&format!("42 (a) (b c) Z 4 5{rest}")),
            want('Z')
        );
        assert_eq!(ProcStat::parse("42 (short) S 1"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
        assert!(!want('Z').unwrap().is_live() && want('D').unwrap().is_live());
    }

    #[test]
    fn our_own_process_has_a_start_time() {
        assert!(leader_start_time(getpid().as_raw()).is_some());
    }

    #[test]
    fn never_signals_init_everyone_or_ourselves() {
        for pgid in [-5, -1, 0, 1, getpgrp().as_raw(), getpid().as_raw()] {
            assert!(!is_signallable(pgid), "{pgid}");
            assert!(!group_alive(pgid, None, &mut None), "{pgid}");
        }
    }

    #[test]
    fn console_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let text: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        fs::write(&path, text).unwrap();
        assert_eq!(console_tail(&path, 3), "line 28\nline 29\nline 30");
        assert_eq!(console_tail(&dir.path().join("missing"), 3), "");
    }
}

//! A local VM's status as a pure function of what can be observed of it ([`derive`]): no
//! process, file or clock is touched here, so the rules are table-tested.
//!
//! The rules, first match wins:
//! 1. `ERROR` and `SHUTOFF` are final: a VM once seen so stays so until it is deleted (as in
//!    Nova, and so that a process group id reused by someone else later is never taken
//!    for the VM coming back).
//! 2. The boot process exited while `boot-finished` did not exist: `ERROR`, with its exit
//!    status (the boot script must create `boot-finished` before it exits, or keep running).
//! 3. `boot-finished` exists: `ACTIVE` while the process group is alive, else `SHUTOFF`
//!    (it booted and then died: a crash, or `kill -9` of the group).
//! 4. No `boot-finished`, the group gone and no boot process the driver waits on (the driver
//!    was restarted meanwhile): `ERROR`, exit status unknown.
//! 5. No `boot-finished` after `boot_timeout`: `ERROR`, "boot did not finish within N s".
//! 6. Otherwise `BUILD`.

use std::time::Duration;

use crate::driver::VmStatus;

/// What the driver knows of the boot process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BootProcess {
    /// Started by this driver and not exited yet.
    Running,
    /// Started by this driver and reaped.
    Exited {
        status: String,
        before_boot_finished: bool,
    },
    /// Started by an earlier driver (the conductor restarted): only the group's liveness
    /// can be checked.
    Unknown,
}

/// One look at a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observation {
    /// The status recorded at the previous look.
    pub last: VmStatus,
    /// `<vm dir>/boot-finished` exists.
    pub boot_finished: bool,
    pub boot: BootProcess,
    /// The recorded process group exists and is the VM's.
    pub group_alive: bool,
    /// Since the boot call.
    pub elapsed: Duration,
    pub boot_timeout: Duration,
}

/// Why a VM went to `ERROR`, to be worded with its console's last lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    BootExited { status: String },
    BootTimeout { timeout: Duration },
    GroupEnded,
}

impl Fault {
    /// The fault text, the console's last lines appended when there are any.
    pub(super) fn describe(&self, console_tail: &str) -> String {
        let head = match self {
            Fault::BootExited { status } => {
                format!("the boot script exited before boot finished ({status})")
            }
            Fault::BootTimeout { timeout } => {
                format!("boot did not finish within {} s", timeout.as_secs_f64())
            }
            Fault::GroupEnded => "the VM's processes ended before boot finished (exit status \
                                  unknown: the driver was restarted meanwhile)"
                .to_owned(),
        };
        match console_tail.trim().is_empty() {
            true => format!("{head}; the console is empty"),
            false => format!("{head}; the console ends with:\n{console_tail}"),
        }
    }
}

/// The VM's status, and the fault when it has just gone to `ERROR`; see the module doc.
pub(super) fn derive(obs: &Observation) -> (VmStatus, Option<Fault>) {
    if matches!(obs.last, VmStatus::Error | VmStatus::Shutoff) {
        return (obs.last, None);
    }
    if let BootProcess::Exited {
        status,
        before_boot_finished: true,
    } = &obs.boot
    {
        let status = status.clone();
        return (VmStatus::Error, Some(Fault::BootExited { status }));
    }
    if obs.boot_finished {
        return match obs.group_alive {
            true => (VmStatus::Active, None),
            false => (VmStatus::Shutoff, None),
        };
    }
    if !obs.group_alive && obs.boot == BootProcess::Unknown {
        return (VmStatus::Error, Some(Fault::GroupEnded));
    }
    if obs.elapsed >= obs.boot_timeout {
        let timeout = obs.boot_timeout;
        return (VmStatus::Error, Some(Fault::BootTimeout { timeout }));
    }
    (VmStatus::Build, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmStatus::*;

    const TIMEOUT: Duration = Duration::from_secs(120);

    fn exited(before_boot_finished: bool) -> BootProcess {
        BootProcess::Exited {
            status: "exit status: 1".into(),
            before_boot_finished,
        }
    }

    #[test]
    fn status_table() {
        use BootProcess::{Running, Unknown};
        let early = Duration::from_secs(1);
        let late = TIMEOUT;
        let boot_exited = Some(Fault::BootExited {
            status: "exit status: 1".into(),
        });
        let timed_out = Some(Fault::BootTimeout { timeout: TIMEOUT });
        // (last, boot_finished, boot process, group alive, elapsed) -> (status, fault)
        let table = [
            // Booting.
            (Build, false, Running, true, early, Build, None),
            (Build, false, Unknown, true, early, Build, None),
            // The group gone while the reaper has not reported yet: wait for it.
            (Build, false, Running, false, early, Build, None),
            // Booted.
            (Build, true, Running, true, early, Active, None),
            (Build, true, exited(false), true, early, Active, None),
            (Build, true, Unknown, true, late, Active, None),
            (Active, true, exited(false), true, late, Active, None),
            // Died after booting: a crash.
            (Active, true, Running, false, late, Shutoff, None),
            (Active, true, Unknown, false, early, Shutoff, None),
            (Build, true, exited(false), false, early, Shutoff, None),
            // Boot script failed.
            (
                Build,
                false,
                exited(true),
                false,
                early,
                Error,
                boot_exited.clone(),
            ),
            (
                Build,
                false,
                exited(true),
                true,
                early,
                Error,
                boot_exited.clone(),
            ),
            // ... even if something created boot-finished after it exited.
            (Build, true, exited(true), true, early, Error, boot_exited),
            // Gone without booting while the driver was down.
            (
                Build,
                false,
                Unknown,
                false,
                early,
                Error,
                Some(Fault::GroupEnded),
            ),
            // Too slow.
            (Build, false, Running, true, late, Error, timed_out.clone()),
            (Build, false, Unknown, true, late, Error, timed_out),
            // Final states stay, whatever is seen afterwards.
            (Error, true, Running, true, early, Error, None),
            (Shutoff, true, Unknown, true, early, Shutoff, None),
            (Shutoff, false, Unknown, false, late, Shutoff, None),
        ];
        for (i, (last, boot_finished, boot, group_alive, elapsed, status, fault)) in
            table.into_iter().enumerate()
        {
            let obs = Observation {
                last,
                boot_finished,
                boot,
                group_alive,
                elapsed,
                boot_timeout: TIMEOUT,
            };
            assert_eq!(derive(&obs), (status, fault), "row {i}: {obs:?}");
        }
    }

    #[test]
    fn faults_read_well() {
        let timeout = Fault::BootTimeout {
            timeout: Duration::from_secs(120),
        };
        assert_eq!(
            timeout.describe(""),
            "boot did not finish within 120 s; the console is empty"
        );
        let exited = Fault::BootExited {
            status: "exit status: 1".into(),
        };
        assert_eq!(
            exited.describe("starting\nno tomcat"),
            "the boot script exited before boot finished (exit status: 1); the console \
             ends with:\nstarting\nno tomcat"
        );
        let half = Fault::BootTimeout {
            timeout: Duration::from_millis(1500),
        };
        assert!(half
            .describe("")
            .starts_with("boot did not finish within 1.5 s"));
    }
}

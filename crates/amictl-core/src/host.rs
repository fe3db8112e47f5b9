//! This machine and its processes: who holds a journaled run.

use std::sync::OnceLock;

/// This machine's host name (`unknown` where it cannot be read).
pub fn name() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown".into())
    })
    .clone()
}

/// Whether process `pid` exists on this machine. Where that cannot be told, it is assumed
/// alive: a run is never called interrupted (and taken over) on a guess.
pub fn process_alive(pid: i64) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        if pid <= 0 {
            return false;
        }
        // Signal 0 checks existence and permission without sending anything.
        // SAFETY: kill(2) with signal 0 has no effect on the target process.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(super::process_alive(std::process::id() as i64));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i64;
        child.wait().unwrap();
        assert!(!super::process_alive(pid));
        assert!(!super::process_alive(-1));
    }
}

//! What Linux tells of a process in /proc: its resident memory, the CPU time it has used, its
//! process group. Each reader answers None for a process that is gone or cannot be read.

use std::time::Duration;

fn sysconf(var: nix::unistd::SysconfVar, default: u64) -> u64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// The resident set size, from /proc/<pid>/statm (in pages).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096))
}

/// The fields of /proc/<pid>/stat after the command name, from the state on (field 3 of
/// proc(5) is index 0 here). The name may hold spaces and parentheses: it ends at the last `)`.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split(' ').map(str::to_owned).collect())
}

/// The CPU time the process has used, user and system (fields 14 and 15 of proc(5)).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = sysconf(nix::unistd::SysconfVar::CLK_TCK, 100);
    Some(Duration::from_nanos(
        (user + system).saturating_mul(1_000_000_000) / ticks_per_second,
    ))
}

/// The process group (field 5 of proc(5)).
pub fn process_group(pid: u32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(resident_bytes(me).unwrap_or(0) > 1 << 20);
        assert_eq!(process_group(me), Some(nix::unistd::getpgrp().as_raw()));
        let before = cpu_time(me).unwrap_or_default();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        assert!(cpu_time(me).unwrap_or_default() > before);
    }

    #[test]
    fn a_missing_process_reads_as_none() {
        assert_eq!(resident_bytes(u32::MAX), None);
        assert_eq!(cpu_time(u32::MAX), None);
    }
}

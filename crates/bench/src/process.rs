//! Resource use of processes, read from `/proc`: resident memory and CPU time,
//! and the open-file limit that thousands of sockets need.

use std::io;

use serde::Serialize;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time of every thread since the process started, in seconds.
    pub cpu_seconds: f64,
}

impl Usage {
    /// Adds the readings of two processes, for a system made of several.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            rss_bytes: self.rss_bytes + other.rss_bytes,
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
        }
    }
}

/// Reads the resource use of process `pid`.
pub fn usage(pid: u32) -> io::Result<Usage> {
    read_usage(&format!("/proc/{pid}"))
}

/// Reads the resource use of this process.
pub fn own_usage() -> io::Result<Usage> {
    read_usage("/proc/self")
}

fn read_usage(dir: &str) -> io::Result<Usage> {
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    Ok(Usage {
        rss_bytes: rss_from_status(&status).ok_or_else(|| malformed(dir, "status"))?,
        cpu_seconds: cpu_from_stat(&stat).ok_or_else(|| malformed(dir, "stat"))?,
    })
}

fn malformed(dir: &str, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{dir}/{file} has an unexpected format"),
    )
}

/// Reads `VmRSS:   1234 kB` from the text of `/proc/<pid>/status`.
fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Reads utime + stime (fields 14 and 15, in clock ticks) from `/proc/<pid>/stat`.
///
/// The command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last `)`, after which field 3 comes first.
fn cpu_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(14 - 3)?.parse().ok()?;
    let system: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((user + system) as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Raises this process's soft limit on open files to `wanted`, or as far as the
/// hard limit allows, and returns the soft limit in force afterwards.
///
/// Child processes (the servers the bench starts) inherit the raised limit.
pub fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }

    // Root may raise the hard limit too; anyone may raise the soft one up to the hard one.
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: setrlimit reads the struct passed by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(wanted);
    }
    let capped = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "42 (tokio worker (1)) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0";
        let seconds = cpu_from_stat(stat).expect("parsed");
        assert!((seconds - 300.0 / clock_ticks_per_second()).abs() < 1e-9);
    }

    #[test]
    fn status_rss_in_bytes() {
        let status = "Name:\tnightjar\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(rss_from_status(status), Some(2048 * 1024));
    }

    #[test]
    fn own_usage_is_readable() {
        let usage = own_usage().expect("read /proc/self");
        assert!(usage.rss_bytes > 0);
    }
}

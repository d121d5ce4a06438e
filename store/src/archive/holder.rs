//! Who has an archive open: the `holder.json` file next to sled's files.
//!
//! sled's exclusive file lock on `db` is the truth about whether an archive is in use; this
//! file only describes the process that holds the lock, so that a refused second process can
//! say whom it is waiting for. A holder file left behind by a process that died is stale
//! and harmless: the next process to get the lock overwrites it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub(super) const HOLDER_FILE: &str = "holder.json";

/// Longest command line kept in a holder file, in characters; the error naming the holder
/// stays one readable line.
const MAX_COMMAND_CHARS: usize = 200;

/// The process that has an archive open, as it described itself when it opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name, where the system tells it cheaply.
    pub host: Option<String>,
    /// Program name (without its directory) and arguments, e.g. `genas search quick.toml`.
    pub command: String,
    /// When the archive was opened, in seconds since the Unix epoch.
    pub since_unix_s: u64,
}

impl Holder {
    /// This process, now.
    pub(super) fn current() -> Holder {
        let since_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Holder {
            pid: std::process::id(),
            host: local_host(),
            command: current_command(),
            since_unix_s,
        }
    }

    /// The opening time as `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn since_utc(&self) -> String {
        format_utc(self.since_unix_s)
    }

    /// The holder recorded in `dir`, if there is a readable one.
    pub(super) fn read(dir: &Path) -> Option<Holder> {
        let text = fs::read(dir.join(HOLDER_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// False only when the holder ran on this host and its process is gone, i.e. the file
    /// is stale. Where that cannot be told, it is taken as alive.
    pub(super) fn may_be_alive(&self) -> bool {
        let proc_dir = Path::new("/proc");
        if self.host != local_host() || !proc_dir.join("self").exists() {
            return true;
        }
        proc_dir.join(self.pid.to_string()).exists()
    }

    /// Records this holder in `dir`, replacing any earlier (stale) record.
    pub(super) fn write(&self, dir: &Path) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomically(dir, HOLDER_FILE, &text)
    }

    /// Removes the record in `dir` if it is still this holder's, so a process that got the
    /// lock after us keeps its own.
    pub(super) fn remove_if_mine(&self, dir: &Path) {
        if Holder::read(dir).as_ref() == Some(self) {
            // Nothing to do about a failure here: a stale record is harmless.
            let _ = fs::remove_file(dir.join(HOLDER_FILE));
        }
    }
}

impl fmt::Display for Holder {
    /// `pid 1234 (genas search quick.toml, since 2026-11-24 10:02:11 UTC)`; the host is named
    /// when it is not this one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(host) = &self.host {
            if Some(host) != local_host().as_ref() {
                write!(f, " on {}", one_line(host))?;
            }
        }
        write!(
            f,
            " ({}, since {})",
            one_line(&self.command),
            self.since_utc()
        )
    }
}

/// Writes `name` in `dir` through a temporary file and a rename, so a reader sees the old
/// content or the new, never a torn one.
pub(super) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, dir.join(name))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// `text` with every control character (newlines included) replaced by a space.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn local_host() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

fn current_command() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|p| {
            let p = Path::new(&p);
            p.file_name()
                .unwrap_or(p.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "?".to_string());
    let mut command = program;
    for arg in args {
        command.push(' ');
        command.push_str(&arg.to_string_lossy());
    }
    let command = one_line(&command);
    if command.chars().count() > MAX_COMMAND_CHARS {
        let mut cut: String = command.chars().take(MAX_COMMAND_CHARS).collect();
        cut.push('…');
        cut
    } else {
        command
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn format_utc(unix_s: u64) -> String {
    let days = unix_s / 86_400;
    let second_of_day = unix_s % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`), shifted so
    // eras start on 0000-03-01 and every quantity stays non-negative.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_514_531), "2026-11-24 10:02:11 UTC");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn holder_text_is_one_line() {
        let holder = Holder {
            pid: 1234,
            host: local_host(),
            command: "genas search\nexperiments/quick.toml".into(),
            since_unix_s: 1_795_514_531,
        };
        assert_eq!(
            holder.to_string(),
            "pid 1234 (genas search experiments/quick.toml, since 2026-11-24 10:02:11 UTC)"
        );
    }
}

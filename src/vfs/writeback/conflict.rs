//! Names for conflict copies. When the server's copy changed since we read it, our version is kept
//! next to it under a name that says what happened and when, so both survive.

use std::time::{SystemTime, UNIX_EPOCH};

use super::journal::UploadRecord;
use super::journal::Written;
use super::queue::UploadQueue;
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{Entry, ItemId, Precondition, ResumeSlot, TransferProgress, UploadCtx, UploadSource, UploadTarget};

/// `report.txt` → `report (conflict 2026-11-23 101502).txt`; names without an extension, or
/// starting with a dot, get the suffix at the end.
pub fn conflict_name(name: &str, at: SystemTime) -> String {
    let stamp = timestamp(at);
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} (conflict {stamp}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} (conflict {stamp})"),
    }
}

/// `YYYY-MM-DD HHMMSS` in UTC.
fn timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `a (conflict …).txt` → `a (conflict … 2).txt`.
pub(super) fn numbered(conflict: &str, n: u32) -> String {
    match conflict.rfind(')') {
        Some(i) => format!("{} {n}{}", &conflict[..i], &conflict[i..]),
        None => format!("{conflict} {n}"),
    }
}

impl UploadQueue {
    /// The server's copy changed since we read it: ours goes up under a conflict name beside it.
    /// The name is journaled before the copy is sent, so a restart sends it there again rather
    /// than making a second copy.
    pub(super) async fn keep_both(
        &self,
        record: &UploadRecord,
        generation: u64,
        sent: &TransferProgress,
        resume: &ResumeSlot,
    ) -> RemoteResult<(Entry, bool)> {
        let parent = ItemId::new(record.parent.as_str());
        let mtime = record.mtime();
        if let Some(copy) = &record.conflict_copy {
            tracing::warn!(file = %record.name, conflict_copy = %copy, "sending the conflict copy chosen before");
            let entry = self
                .remote
                .upload(
                    UploadTarget::new(&parent, copy, Precondition::Any),
                    UploadSource::file(&record.staged, mtime),
                    &UploadCtx::new(sent.clone(), resume.clone()),
                )
                .await?;
            return Ok((entry, true));
        }
        let base = conflict_name(&record.name, SystemTime::now());
        // Two conflicts within one second would want one name: number the later ones.
        for n in 1..=100u32 {
            let copy = if n == 1 { base.clone() } else { numbered(&base, n) };
            tracing::warn!(file = %record.name, conflict_copy = %copy,
                "the server's copy changed since it was read; keeping both");
            if let Some(written) = self.remember_conflict_copy(&record.key, generation, &copy) {
                written
                    .done()
                    .await
                    .map_err(|e| RemoteError::LocalFile(format!("journal: {e}")))?;
            }
            match self
                .remote
                .upload(
                    UploadTarget::new(&parent, &copy, Precondition::Absent),
                    UploadSource::file(&record.staged, mtime),
                    &UploadCtx::new(sent.clone(), resume.clone()),
                )
                .await
            {
                Ok(entry) => return Ok((entry, true)),
                Err(RemoteError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::AlreadyExists)
    }

    /// Journal `copy` as the conflict-copy name of generation `generation` of `key`.
    fn remember_conflict_copy(&self, key: &str, generation: u64, copy: &str) -> Option<Written> {
        let mut state = self.lock();
        let item = state.items.get_mut(key).filter(|i| i.generation == generation)?;
        item.record.conflict_copy = Some(copy.to_string());
        item.journaled.then(|| self.journal.put(&item.record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_keep_their_extension_and_say_when() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_428_902); // 2026-11-23 10:15:02 UTC
        assert_eq!(
            conflict_name("report.txt", at),
            "report (conflict 2026-11-23 101502).txt"
        );
        assert_eq!(conflict_name("Makefile", at), "Makefile (conflict 2026-11-23 101502)");
        assert_eq!(conflict_name(".bashrc", at), ".bashrc (conflict 2026-11-23 101502)");
        assert_eq!(conflict_name("a.tar.gz", at), "a.tar (conflict 2026-11-23 101502).gz");
    }

    #[test]
    fn calendar_conversion_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }
}

//! The documents the bench writes, and how a subscriber reads the bench's marks
//! back out of an event without parsing the whole JSON text.
//!
//! Every document written while subscribers listen carries two marks: `benchSeq`,
//! its sequence number within the run, and `benchSentNs`, the bench clock when the
//! write was sent. The latency of a delivery is the bench clock on receipt minus
//! `benchSentNs`; sender and receivers share one process and one monotonic clock.

use std::sync::OnceLock;
use std::time::Instant;

/// Field holding the sequence number of a write.
const SEQ_MARK: &str = "\"benchSeq\":";

/// Field holding the bench clock when the write was sent.
const SENT_MARK: &str = "\"benchSentNs\":";

/// `app` of every bench document.
pub const APP: &str = "nightjar-bench";

/// 2016-01-01T00:00:00Z in epoch milliseconds: the first `date` of a loaded store.
pub const LOAD_BASE_DATE: i64 = 1_451_606_400_000;

/// Five minutes in milliseconds: the spacing of loaded entries, as a CGM sends them.
pub const ENTRY_SPACING_MS: i64 = 300_000;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Returns the bench clock: nanoseconds since the first call in this process.
pub fn clock_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Returns the wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Returns the JSON text of a glucose entry that carries the marks of write `seq`.
///
/// `device` keeps runs apart: the server derives the identifier from device and
/// date, so the same `date` from another run does not deduplicate.
pub fn marked_entry(device: &str, date: i64, seq: u64, sent_ns: u64) -> String {
    let sgv = 40 + seq % 300;
    format!(
        r#"{{"type":"sgv","sgv":{sgv},"direction":"Flat","device":"{device}","app":"{APP}","date":{date},"utcOffset":0,"benchSeq":{seq},"benchSentNs":{sent_ns}}}"#
    )
}

/// Returns the JSON text of loaded entry number `index`, `ENTRY_SPACING_MS` after the previous one.
pub fn loaded_entry(device: &str, index: u64) -> String {
    let date = entry_date(index);
    let sgv = 40 + index % 300;
    format!(
        r#"{{"type":"sgv","sgv":{sgv},"direction":"Flat","device":"{device}","app":"{APP}","date":{date},"utcOffset":0,"noise":1,"filtered":{filtered},"unfiltered":{unfiltered},"rssi":100}}"#,
        filtered = sgv * 1000 + 17,
        unfiltered = sgv * 1000 + 211,
    )
}

/// Returns the `date` of loaded entry number `index`.
pub fn entry_date(index: u64) -> i64 {
    LOAD_BASE_DATE + index as i64 * ENTRY_SPACING_MS
}

/// Returns the JSON text of loaded treatment number `index`: a correction bolus
/// every five minutes from `LOAD_BASE_DATE`.
pub fn loaded_treatment(device: &str, index: u64) -> String {
    let date = entry_date(index);
    let created_at = chrono::DateTime::from_timestamp_millis(date)
        .expect("loaded dates are in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let insulin = 0.05 * (1 + index % 40) as f64;
    format!(
        r#"{{"eventType":"Correction Bolus","insulin":{insulin:.2},"created_at":"{created_at}","date":{date},"utcOffset":60,"device":"{device}","app":"{APP}","enteredBy":"nightjar-bench","notes":"loaded by nightjar-bench","isSMB":false,"pumpId":{index},"pumpType":"bench","pumpSerial":"0000"}}"#
    )
}

/// Marks read back out of a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// `benchSeq` of the write.
    pub seq: u64,
    /// `benchSentNs` of the write.
    pub sent_ns: u64,
}

/// Finds the marks in the text of an event, or `None` when either is missing.
pub fn read_marks(text: &str) -> Option<Marks> {
    Some(Marks {
        seq: number_after(text, SEQ_MARK)?,
        sent_ns: number_after(text, SENT_MARK)?,
    })
}

/// Parses the unsigned integer that follows `mark` (JSON may put spaces between).
fn number_after(text: &str, mark: &str) -> Option<u64> {
    let start = text.find(mark)? + mark.len();
    let digits = text[start..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_round_trip() {
        let text = marked_entry("bench-1", 1_733_300_000_000, 17, 123_456_789);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["benchSeq"], 17);
        let event = format!(r#"42/storage,["create",{{"colName":"entries","doc":{text}}}]"#);
        assert_eq!(
            read_marks(&event),
            Some(Marks {
                seq: 17,
                sent_ns: 123_456_789
            })
        );
    }

    #[test]
    fn marks_with_spaces() {
        let event = r#"{"benchSeq": 5, "benchSentNs": 9}"#;
        assert_eq!(read_marks(event), Some(Marks { seq: 5, sent_ns: 9 }));
    }

    #[test]
    fn event_without_marks() {
        assert_eq!(read_marks(r#"42/storage,["create",{"doc":{}}]"#), None);
    }

    #[test]
    fn loaded_documents_are_json() {
        for text in [loaded_entry("d", 3), loaded_treatment("d", 3)] {
            let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(value["date"], entry_date(3));
        }
    }
}

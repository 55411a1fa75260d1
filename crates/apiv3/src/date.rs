//! Date parsing in every form APIv3 accepts, and the date normalisation of create and PUT.
//!
//! The accepted forms follow the reference server (Nightscout 15.0.7, which uses moment.js):
//! epoch milliseconds, epoch seconds (any number below [`MIN_VALID_DATE_MS`]), numeric text,
//! ISO 8601 in its extended and basic forms, and RFC 2822.

use std::sync::LazyLock;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use regex::{Captures, Regex};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::js::{is_blank, is_js_whitespace, is_truthy, parse_js_number_text};

/// Earliest valid date, 2000-01-01T00:00:00Z, in epoch milliseconds. A number below it is
/// read as epoch seconds.
pub const MIN_VALID_DATE_MS: i64 = 946_684_800_000;

/// An instant parsed from a client value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedDate {
    /// Instant in milliseconds since the Unix epoch.
    pub epoch_ms: i64,
    /// UTC offset in minutes written in the value (`Z` is 0), or `None` when the value
    /// carries no offset: numbers and ISO text without a zone, both read as UTC.
    pub offset_minutes: Option<i32>,
}

/// ISO 8601 extended form: a date `2018-05-03`, `2018-05`, `2018-W18-4` or `2018-123`.
/// It may be followed by `T` or a space and a time `21:40:10.088`, `21:40` or `21`, in which
/// `,` may separate the fraction. A zone `Z`, `+02`, `+0200` or `+02:00` may follow the time.
static ISO_EXTENDED: LazyLock<Regex> = LazyLock::new(|| {
    iso_regex(
        r"(?P<year>\d{4})-(?:(?P<month>\d\d)(?:-(?P<day>\d\d))?|W(?P<week>\d\d)(?:-(?P<weekday>\d))?|(?P<ordinal>\d{3}))",
        r"(?P<hour>\d\d)(?::(?P<minute>\d\d)(?::(?P<second>\d\d)(?:[.,](?P<fraction>\d+))?)?)?",
    )
});

/// ISO 8601 basic form: `20180503T214010.088+0200` and the like. A basic date without a
/// time never reaches this pattern, because it is all digits and numeric text is read as a
/// number.
static ISO_BASIC: LazyLock<Regex> = LazyLock::new(|| {
    iso_regex(
        r"(?P<year>\d{4})(?:(?P<month>\d\d)(?P<day>\d\d)|W(?P<week>\d\d)(?P<weekday>\d)?|(?P<ordinal>\d{3}))",
        r"(?P<hour>\d\d)(?:(?P<minute>\d\d)(?:(?P<second>\d\d)(?:[.,](?P<fraction>\d+))?)?)?",
    )
});

fn iso_regex(date: &str, time: &str) -> Regex {
    let zone = r"\s*(?P<zulu>Z)|(?P<sign>[+-])(?P<zone_hours>\d\d)(?::?(?P<zone_minutes>\d\d))?";
    let pattern = format!("^{date}(?:[T ]{time}(?:{zone})?)?$");
    Regex::new(&pattern).expect("ISO 8601 pattern is valid")
}

/// Parses a client date value: a number of epoch milliseconds or seconds, numeric text,
/// ISO 8601 or RFC 2822 text, or an array whose first parsable item is taken.
///
/// Returns `None` for anything else, and for instants before 2000-01-01 or beyond the range
/// that chrono represents. A fraction of a millisecond is cut off, and a number of seconds
/// loses its fraction before it is scaled, as in the reference.
pub fn parse_date(value: &Value) -> Option<ParsedDate> {
    match value {
        Value::Number(number) => parse_epoch(number.as_f64()?),
        Value::String(text) => parse_date_string(text),
        Value::Array(items) => items.iter().find_map(parse_date),
        _ => None,
    }
}

/// Parses a timestamp given in a URL (`/history/{lastModified}`, search values) in any form
/// that [`parse_date`] accepts for text, returning epoch milliseconds.
pub fn parse_timestamp_text(text: &str) -> Option<i64> {
    parse_date_string(text).map(|parsed| parsed.epoch_ms)
}

/// Formats epoch milliseconds as ISO 8601 in UTC with milliseconds: `2018-05-03T21:40:10.088Z`.
/// Instants outside chrono's range (about ±262,000 years) are clamped to that range.
pub fn iso_utc(epoch_ms: i64) -> String {
    let instant = DateTime::from_timestamp_millis(epoch_ms).unwrap_or(if epoch_ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    instant.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Normalises the dates of a document before create or PUT (never PATCH).
///
/// The instant comes from `date`, or from `created_at` when `date` is missing or unparsable
/// and `created_at_fallback` is on. Then `date` becomes epoch milliseconds, `utcOffset` is
/// set to the parsed offset when the document has none (0 when the value carried no
/// offset), and `created_at` becomes the same instant as ISO text in UTC. With the fallback
/// off, `created_at` is removed instead, as in the reference.
///
/// Returns 400 `Bad or missing date field` and leaves the document unchanged when no usable
/// date is found. The reference reports a bad `identifier` before a bad date, so a caller
/// that wants that order calls [`resolve_identifier`](crate::identifier::resolve_identifier)
/// when this fails and returns its error first.
pub fn normalize_dates(
    doc: &mut Map<String, Value>,
    created_at_fallback: bool,
) -> Result<(), ApiError> {
    let from_date = doc.get("date").and_then(parse_date);
    let parsed = match from_date {
        Some(parsed) => parsed,
        None if created_at_fallback => doc
            .get("created_at")
            .and_then(parse_date)
            .ok_or_else(|| ApiError::bad_field("date"))?,
        None => return Err(ApiError::bad_field("date")),
    };

    doc.insert("date".to_string(), Value::from(parsed.epoch_ms));
    if !doc.contains_key("utcOffset") {
        let offset = parsed.offset_minutes.unwrap_or(0);
        doc.insert("utcOffset".to_string(), Value::from(offset));
    }
    if created_at_fallback {
        doc.insert(
            "created_at".to_string(),
            Value::from(iso_utc(parsed.epoch_ms)),
        );
    } else if is_truthy(doc.get("created_at")) {
        doc.remove("created_at");
    }
    Ok(())
}

/// Parses date text: numeric text as a number, otherwise ISO 8601 or RFC 2822.
fn parse_date_string(text: &str) -> Option<ParsedDate> {
    if text.is_empty() {
        return None;
    }
    if !is_blank(text) {
        let number = parse_js_number_text(text);
        if number.is_finite() {
            return parse_epoch(number);
        }
    }
    parse_date_text(text).filter(|parsed| parsed.epoch_ms >= MIN_VALID_DATE_MS)
}

/// Reads a number as epoch milliseconds, or as epoch seconds when it is below
/// [`MIN_VALID_DATE_MS`].
fn parse_epoch(number: f64) -> Option<ParsedDate> {
    if !number.is_finite() {
        return None;
    }

    // The reference builds a JavaScript Date first, which drops the fraction, and scales
    // that whole number when it reads seconds.
    let mut epoch_ms = number.trunc();
    if epoch_ms < MIN_VALID_DATE_MS as f64 {
        epoch_ms *= 1000.0;
    }
    if epoch_ms < MIN_VALID_DATE_MS as f64 || epoch_ms > max_epoch_ms() as f64 {
        return None;
    }
    Some(ParsedDate {
        epoch_ms: epoch_ms as i64,
        offset_minutes: None,
    })
}

fn max_epoch_ms() -> i64 {
    DateTime::<Utc>::MAX_UTC.timestamp_millis()
}

/// Parses ISO 8601 or RFC 2822 text without the year-2000 limit of [`parse_date`].
pub(crate) fn parse_date_text(text: &str) -> Option<ParsedDate> {
    let trimmed = text.trim_matches(is_js_whitespace);
    parse_iso(trimmed).or_else(|| parse_rfc2822(trimmed))
}

fn parse_iso(text: &str) -> Option<ParsedDate> {
    let captures = ISO_EXTENDED
        .captures(text)
        .or_else(|| ISO_BASIC.captures(text))?;
    let local = NaiveDateTime::new(iso_date(&captures)?, iso_time(&captures)?);

    let Some(offset_minutes) = iso_offset_minutes(&captures) else {
        return Some(ParsedDate {
            epoch_ms: local.and_utc().timestamp_millis(),
            offset_minutes: None,
        });
    };
    let zone = FixedOffset::east_opt(offset_minutes * 60)?;
    let instant = zone.from_local_datetime(&local).single()?;
    Some(ParsedDate {
        epoch_ms: instant.timestamp_millis(),
        offset_minutes: Some(offset_minutes),
    })
}

/// Builds the calendar date from the captured parts. A missing day or weekday is the first.
fn iso_date(captures: &Captures) -> Option<NaiveDate> {
    let year: i32 = number_group(captures, "year")?;
    if let Some(month) = number_group(captures, "month") {
        let day = number_group(captures, "day").unwrap_or(1);
        return NaiveDate::from_ymd_opt(year, month, day);
    }
    if let Some(week) = number_group(captures, "week") {
        let weekday = number_group(captures, "weekday").unwrap_or(1);
        let weekday =
            chrono::Weekday::try_from(u8::try_from(weekday).ok()?.checked_sub(1)?).ok()?;
        return NaiveDate::from_isoywd_opt(year, week, weekday);
    }
    NaiveDate::from_yo_opt(year, number_group(captures, "ordinal")?)
}

/// Builds the time of day. Missing parts are zero, and the fraction is cut to milliseconds.
fn iso_time(captures: &Captures) -> Option<NaiveTime> {
    let hour = number_group(captures, "hour").unwrap_or(0);
    let minute = number_group(captures, "minute").unwrap_or(0);
    let second = number_group(captures, "second").unwrap_or(0);
    let milli = captures.name("fraction").map_or(0, |fraction| {
        let digits: String = fraction
            .as_str()
            .chars()
            .chain("00".chars())
            .take(3)
            .collect();
        digits.parse().unwrap_or(0)
    });
    NaiveTime::from_hms_milli_opt(hour, minute, second, milli)
}

/// Returns the zone written in the text in minutes east of UTC, or `None` when there is none.
fn iso_offset_minutes(captures: &Captures) -> Option<i32> {
    if captures.name("zulu").is_some() {
        return Some(0);
    }
    let sign = if captures.name("sign")?.as_str() == "-" {
        -1
    } else {
        1
    };
    let hours: i32 = number_group(captures, "zone_hours")?;
    let minutes: i32 = number_group(captures, "zone_minutes").unwrap_or(0);
    Some(sign * (hours * 60 + minutes))
}

fn number_group<T: std::str::FromStr>(captures: &Captures, name: &str) -> Option<T> {
    captures.name(name)?.as_str().parse().ok()
}

fn parse_rfc2822(text: &str) -> Option<ParsedDate> {
    let instant = DateTime::parse_from_rfc2822(text).ok()?;
    Some(ParsedDate {
        epoch_ms: instant.timestamp_millis(),
        offset_minutes: Some(instant.offset().local_minus_utc() / 60),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Epoch values were computed with Python's datetime.fromisoformat(...).timestamp().
    const MAY_3_2018_21_40_10_088_UTC: i64 = 1_525_383_610_088;

    fn parsed(value: Value) -> Option<ParsedDate> {
        parse_date(&value)
    }

    fn ms(value: Value) -> Option<i64> {
        parse_date(&value).map(|parsed| parsed.epoch_ms)
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn epoch_milliseconds_number() {
        assert_eq!(
            parsed(json!(MAY_3_2018_21_40_10_088_UTC)),
            Some(ParsedDate {
                epoch_ms: MAY_3_2018_21_40_10_088_UTC,
                offset_minutes: None
            })
        );
    }

    #[test]
    fn epoch_seconds_number() {
        assert_eq!(ms(json!(1_525_383_610)), Some(1_525_383_610_000));
        // The fraction of a second is dropped before scaling.
        assert_eq!(ms(json!(1_525_383_610.088)), Some(1_525_383_610_000));
    }

    #[test]
    fn fraction_of_millisecond_is_cut() {
        assert_eq!(
            ms(json!(1_525_383_610_088.9)),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
    }

    #[test]
    fn numeric_text() {
        assert_eq!(
            ms(json!("1525383610088")),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
        assert_eq!(ms(json!(" 1525383610 ")), Some(1_525_383_610_000));
    }

    #[test]
    fn dates_before_2000_are_rejected() {
        assert_eq!(ms(json!(MIN_VALID_DATE_MS)), Some(MIN_VALID_DATE_MS));
        // Just below the limit is read as seconds, which lands in the year 31970.
        assert_eq!(ms(json!(MIN_VALID_DATE_MS - 1)), Some(946_684_799_999_000));
        assert_eq!(ms(json!(946_684_799)), None);
        assert_eq!(ms(json!(0)), None);
        assert_eq!(ms(json!(-5)), None);
        assert_eq!(ms(json!("1999-12-31T23:59:59Z")), None);
        assert_eq!(ms(json!("2000-01-01T00:00:00Z")), Some(946_684_800_000));
    }

    #[test]
    fn dates_beyond_chrono_range_are_rejected() {
        assert_eq!(ms(json!(1e300)), None);
    }

    #[test]
    fn iso_with_zulu() {
        assert_eq!(
            parsed(json!("2018-05-03T21:40:10.088Z")),
            Some(ParsedDate {
                epoch_ms: MAY_3_2018_21_40_10_088_UTC,
                offset_minutes: Some(0)
            })
        );
    }

    #[test]
    fn iso_offset_forms() {
        for text in [
            "2018-05-03T21:40:10.088+0200",
            "2018-05-03T21:40:10.088+02:00",
            "2018-05-03T21:40:10.088+02",
        ] {
            assert_eq!(
                parsed(json!(text)),
                Some(ParsedDate {
                    epoch_ms: 1_525_376_410_088,
                    offset_minutes: Some(120)
                }),
                "{text}"
            );
        }
        assert_eq!(
            parsed(json!("2018-05-03T21:40:10-05:30")),
            Some(ParsedDate {
                epoch_ms: 1_525_403_410_000,
                offset_minutes: Some(-330)
            })
        );
    }

    #[test]
    fn iso_comma_fraction() {
        assert_eq!(
            parsed(json!("2019-06-10T08:07:08,576+02:00")),
            Some(ParsedDate {
                epoch_ms: 1_560_146_828_576,
                offset_minutes: Some(120)
            })
        );
    }

    #[test]
    fn iso_without_offset_is_utc() {
        assert_eq!(
            parsed(json!("2018-05-03 21:40:10")),
            Some(ParsedDate {
                epoch_ms: 1_525_383_610_000,
                offset_minutes: None
            })
        );
        assert_eq!(ms(json!("2018-05-03T21:40:10")), Some(1_525_383_610_000));
    }

    #[test]
    fn iso_partial_forms() {
        assert_eq!(ms(json!("2018-05-03")), Some(1_525_305_600_000));
        assert_eq!(ms(json!("2018-05")), Some(1_525_132_800_000));
        assert_eq!(ms(json!("2018-05-03T21:40")), Some(1_525_383_600_000));
        assert_eq!(ms(json!("2018-05-03T21")), Some(1_525_381_200_000));
        assert_eq!(ms(json!("2018-W18-4")), Some(1_525_305_600_000));
        assert_eq!(ms(json!("2018-W18")), Some(1_525_046_400_000));
        assert_eq!(ms(json!("2018-123")), Some(1_525_305_600_000));
    }

    #[test]
    fn iso_basic_form() {
        assert_eq!(
            ms(json!("20180503T214010.088Z")),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
        assert_eq!(ms(json!("20180503T2140")), Some(1_525_383_600_000));
    }

    #[test]
    fn iso_long_fraction_is_cut() {
        assert_eq!(
            ms(json!("2018-05-03T21:40:10.0889999Z")),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
        assert_eq!(ms(json!("2018-05-03T21:40:10.5Z")), Some(1_525_383_610_500));
    }

    #[test]
    fn invalid_calendar_values_are_rejected() {
        assert_eq!(ms(json!("2018-02-30T10:00:00Z")), None);
        assert_eq!(ms(json!("2018-05-03T25:00:00Z")), None);
        assert_eq!(ms(json!("2018-05-03T21:40:60Z")), None);
        assert_eq!(ms(json!("2018-05-03T21:40:10+25:00")), None);
    }

    #[test]
    fn rfc2822() {
        assert_eq!(
            parsed(json!("Thu, 03 May 2018 21:40:10 +0200")),
            Some(ParsedDate {
                epoch_ms: 1_525_376_410_000,
                offset_minutes: Some(120)
            })
        );
        assert_eq!(
            ms(json!("Thu, 03 May 2018 21:40:10 GMT")),
            Some(1_525_383_610_000)
        );
    }

    #[test]
    fn unparsable_values() {
        for value in [
            json!(null),
            json!(true),
            json!(""),
            json!("   "),
            json!("yesterday"),
            json!("2018-05-03T21:40:10.088Zjunk"),
            json!({"date": 1_525_383_610_088_i64}),
            json!([]),
        ] {
            assert_eq!(parsed(value.clone()), None, "{value}");
        }
    }

    #[test]
    fn array_takes_first_parsable_item() {
        assert_eq!(
            ms(json!([
                "nonsense",
                MAY_3_2018_21_40_10_088_UTC,
                "2020-01-01"
            ])),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
    }

    #[test]
    fn timestamp_text_forms() {
        assert_eq!(
            parse_timestamp_text("1525383610088"),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
        assert_eq!(parse_timestamp_text("1525383610"), Some(1_525_383_610_000));
        assert_eq!(
            parse_timestamp_text("2018-05-03T21:40:10.088Z"),
            Some(MAY_3_2018_21_40_10_088_UTC)
        );
        assert_eq!(
            parse_timestamp_text("Thu, 03 May 2018 21:40:10 GMT"),
            Some(1_525_383_610_000)
        );
        assert_eq!(parse_timestamp_text("0"), None);
        assert_eq!(parse_timestamp_text("abc"), None);
        assert_eq!(parse_timestamp_text(""), None);
    }

    #[test]
    fn iso_utc_format() {
        assert_eq!(
            iso_utc(MAY_3_2018_21_40_10_088_UTC),
            "2018-05-03T21:40:10.088Z"
        );
        assert_eq!(iso_utc(MIN_VALID_DATE_MS), "2000-01-01T00:00:00.000Z");
    }

    #[test]
    fn normalize_sets_all_three_fields() {
        let mut doc = object(json!({"date": "2018-05-03T21:40:10.088+02:00", "app": "x"}));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["date"], json!(1_525_376_410_088_i64));
        assert_eq!(doc["utcOffset"], json!(120));
        assert_eq!(doc["created_at"], json!("2018-05-03T19:40:10.088Z"));
    }

    #[test]
    fn normalize_keeps_client_offset() {
        let mut doc = object(json!({"date": "2018-05-03T21:40:10.088+02:00", "utcOffset": 60}));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["utcOffset"], json!(60));

        let mut doc = object(json!({"date": MAY_3_2018_21_40_10_088_UTC, "utcOffset": null}));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["utcOffset"], json!(null));
    }

    #[test]
    fn normalize_number_gives_zero_offset() {
        let mut doc = object(json!({"date": 1_525_383_610}));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["date"], json!(1_525_383_610_000_i64));
        assert_eq!(doc["utcOffset"], json!(0));
        assert_eq!(doc["created_at"], json!("2018-05-03T21:40:10.000Z"));
    }

    #[test]
    fn normalize_overwrites_created_at_from_date() {
        let mut doc = object(json!({
            "date": MAY_3_2018_21_40_10_088_UTC,
            "created_at": "2001-01-01T00:00:00Z"
        }));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["created_at"], json!("2018-05-03T21:40:10.088Z"));
    }

    #[test]
    fn normalize_falls_back_to_created_at() {
        let mut doc =
            object(json!({"date": "garbage", "created_at": "2018-05-03T23:40:10.088+02:00"}));
        normalize_dates(&mut doc, true).unwrap();
        assert_eq!(doc["date"], json!(MAY_3_2018_21_40_10_088_UTC));
        assert_eq!(doc["utcOffset"], json!(120));
        assert_eq!(doc["created_at"], json!("2018-05-03T21:40:10.088Z"));
    }

    #[test]
    fn normalize_without_fallback() {
        let mut doc = object(json!({"created_at": "2018-05-03T21:40:10.088Z"}));
        assert_eq!(
            normalize_dates(&mut doc, false),
            Err(ApiError::bad_field("date"))
        );
        assert_eq!(doc["created_at"], json!("2018-05-03T21:40:10.088Z"));

        let mut doc = object(json!({
            "date": MAY_3_2018_21_40_10_088_UTC,
            "created_at": "2018-05-03T21:40:10.088Z"
        }));
        normalize_dates(&mut doc, false).unwrap();
        assert!(!doc.contains_key("created_at"));
    }

    #[test]
    fn normalize_rejects_missing_or_old_date() {
        for value in [
            json!({"app": "x"}),
            json!({"date": "garbage"}),
            json!({"date": "1999-12-31T23:59:59Z"}),
            json!({"date": 900_000_000}),
            json!({"created_at": "garbage"}),
        ] {
            let mut doc = object(value.clone());
            let result = normalize_dates(&mut doc, true);
            assert_eq!(result, Err(ApiError::bad_field("date")), "{value}");
            assert_eq!(Value::Object(doc), value, "document changed");
        }
    }

    #[test]
    fn bad_date_message() {
        let mut doc = object(json!({}));
        let error = normalize_dates(&mut doc, true).unwrap_err();
        assert_eq!(error.message, "Bad or missing date field");
        assert_eq!(error.kind.http_status(), 400);
    }
}

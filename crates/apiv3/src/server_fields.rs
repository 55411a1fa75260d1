//! Fields the server derives for a document: `srvModified` and `srvCreated` of documents
//! written without them, and `endmills` of treatments that have a duration.

use serde_json::{Map, Value};

use crate::collection::Collection;
use crate::date::{parse_date, parse_date_text};
use crate::js::{is_blank, is_truthy, number_value, to_js_number};

/// Milliseconds in one minute, the unit of a treatment's `duration`.
const MINUTE_MS: f64 = 60_000.0;

/// Fills `srvModified` and `srvCreated` of a document read from storage, without writing back.
///
/// A document whose `srvModified` is missing or false-like (0, null) gets the instant of its
/// collection's fallback date field (`date` for entries, `created_at` for the others, none
/// for settings) when that parses. Then a document with `srvModified` and without
/// `srvCreated` gets `srvCreated` equal to `srvModified`.
pub fn fill_server_dates(collection: Collection, doc: &mut Map<String, Value>) {
    if !is_truthy(doc.get("srvModified"))
        && let Some(epoch_ms) = fallback_date_ms(collection, doc)
    {
        doc.insert("srvModified".to_string(), Value::from(epoch_ms));
    }

    if let Some(modified) = doc.get("srvModified").filter(|v| is_truthy(Some(v)))
        && !is_truthy(doc.get("srvCreated"))
    {
        let created = modified.clone();
        doc.insert("srvCreated".to_string(), created);
    }
}

/// Returns the instant of the collection's fallback date field in epoch milliseconds, or
/// `None` when the collection has no such field or the value does not parse as a date
/// after 2000 (see [`parse_date`]).
pub fn fallback_date_ms(collection: Collection, doc: &Map<String, Value>) -> Option<i64> {
    let field = collection.fallback_date_field()?;
    parse_date(doc.get(field)?).map(|parsed| parsed.epoch_ms)
}

/// Sets the end of a treatment, `endmills`, from its start and duration, and derives the
/// duration back from `endmills`. Callers apply it to treatments on every write.
///
/// `doc` is the document to write, or the patch for PATCH, where `stored` is the stored
/// document. The start is the first number or date among `mills` (of `doc`, then `stored`),
/// `created_at`, `date` (of `doc`), `created_at`, `date` (of `stored`).
///
/// When `doc` has no `endmills` (or `null`), the duration comes from the first of `doc` and
/// `stored` that carries one. `durationInMilliseconds` wins over `duration` (minutes), and
/// a duration in milliseconds that is not positive sets nothing. Then, when `endmills` is at
/// or after the start, `durationInMilliseconds` is set to their difference and `duration`
/// to the same in whole minutes, rounded. This follows the reference's treatment duration
/// rules (Nightscout 15.0.7), which read values as JavaScript's `Number()` does.
pub fn set_treatment_end(doc: &mut Map<String, Value>, stored: Option<&Map<String, Value>>) {
    let Some(start) = treatment_start(doc, stored) else {
        return;
    };

    let has_end = doc.get("endmills").is_some_and(|end| !end.is_null());
    if !has_end {
        let duration = carried_duration_ms(doc).or_else(|| stored.and_then(carried_duration_ms));
        if let Some(Some(duration)) = duration {
            doc.insert("endmills".to_string(), number_value(start + duration));
        }
    }

    let end = match doc.get("endmills") {
        Some(end) => to_js_number(Some(end)),
        None => return,
    };
    if end.is_finite() && end >= start {
        let duration = end - start;
        doc.insert("durationInMilliseconds".to_string(), number_value(duration));
        doc.insert(
            "duration".to_string(),
            number_value((duration / MINUTE_MS).round()),
        );
    }
}

/// Finds the start of a treatment in the order that [`set_treatment_end`] documents.
fn treatment_start(doc: &Map<String, Value>, stored: Option<&Map<String, Value>>) -> Option<f64> {
    let stored_field = |field: &str| stored.and_then(|stored| stored.get(field));
    [
        doc.get("mills"),
        stored_field("mills"),
        doc.get("created_at"),
        doc.get("date"),
        stored_field("created_at"),
        stored_field("date"),
    ]
    .into_iter()
    .find_map(to_mills)
}

/// Reads an instant as the reference does: a finite number as is, numeric text as a number,
/// other text as an ISO 8601 or RFC 2822 date.
fn to_mills(value: Option<&Value>) -> Option<f64> {
    let value = value?;
    match value {
        Value::Null => None,
        Value::String(text) if is_blank(text) => None,
        _ => {
            let number = to_js_number(Some(value));
            if number.is_finite() {
                return Some(number);
            }
            // NOTE: JavaScript reads ISO text without a zone as local time, but this reads it
            // as UTC, which matches a reference server running in UTC.
            let Value::String(text) = value else {
                return None;
            };
            parse_date_text(text).map(|parsed| parsed.epoch_ms as f64)
        }
    }
}

/// Returns the duration in milliseconds that `source` carries: `None` when it has neither
/// `durationInMilliseconds` nor `duration`, `Some(None)` when it carries one that sets no end.
fn carried_duration_ms(source: &Map<String, Value>) -> Option<Option<f64>> {
    if source.contains_key("durationInMilliseconds") {
        let duration = or_zero(to_js_number(source.get("durationInMilliseconds")));
        return Some((duration > 0.0).then_some(duration));
    }
    if source.contains_key("duration") {
        let minutes = or_zero(to_js_number(source.get("duration")));
        return Some(Some(minutes * MINUTE_MS));
    }
    None
}

/// Replaces NaN by 0, as JavaScript's `Number(x) || 0` does.
fn or_zero(number: f64) -> f64 {
    if number.is_nan() { 0.0 } else { number }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const START: i64 = 1_525_383_610_088;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn fill_from_entries_date() {
        let mut doc = object(json!({"date": START, "sgv": 100}));
        fill_server_dates(Collection::Entries, &mut doc);
        assert_eq!(doc["srvModified"], json!(START));
        assert_eq!(doc["srvCreated"], json!(START));
    }

    #[test]
    fn fill_from_created_at() {
        let mut doc = object(json!({"created_at": "2018-05-03T21:40:10.088Z"}));
        fill_server_dates(Collection::Treatments, &mut doc);
        assert_eq!(doc["srvModified"], json!(START));
        assert_eq!(doc["srvCreated"], json!(START));
    }

    #[test]
    fn fill_uses_collection_fallback_field() {
        // Treatments fall back to created_at only, so a date alone gives nothing.
        let mut doc = object(json!({"date": START}));
        fill_server_dates(Collection::Treatments, &mut doc);
        assert!(!doc.contains_key("srvModified"));
        assert!(!doc.contains_key("srvCreated"));
    }

    #[test]
    fn fill_nothing_for_settings() {
        let mut doc = object(json!({"date": START, "created_at": "2018-05-03T21:40:10.088Z"}));
        fill_server_dates(Collection::Settings, &mut doc);
        assert!(!doc.contains_key("srvModified"));
    }

    #[test]
    fn fill_keeps_existing_server_dates() {
        let mut doc = object(
            json!({"date": START, "srvModified": 2_000_000_000_000_i64, "srvCreated": 1_900_000_000_000_i64}),
        );
        fill_server_dates(Collection::Entries, &mut doc);
        assert_eq!(doc["srvModified"], json!(2_000_000_000_000_i64));
        assert_eq!(doc["srvCreated"], json!(1_900_000_000_000_i64));
    }

    #[test]
    fn fill_created_defaults_to_modified() {
        let mut doc = object(json!({"date": START, "srvModified": 2_000_000_000_000_i64}));
        fill_server_dates(Collection::Entries, &mut doc);
        assert_eq!(doc["srvCreated"], json!(2_000_000_000_000_i64));
    }

    #[test]
    fn fill_replaces_zero_modified() {
        let mut doc = object(json!({"date": START, "srvModified": 0, "srvCreated": null}));
        fill_server_dates(Collection::Entries, &mut doc);
        assert_eq!(doc["srvModified"], json!(START));
        assert_eq!(doc["srvCreated"], json!(START));
    }

    #[test]
    fn fill_unparsable_fallback() {
        let mut doc = object(json!({"date": "never"}));
        fill_server_dates(Collection::Entries, &mut doc);
        assert!(!doc.contains_key("srvModified"));
        assert!(!doc.contains_key("srvCreated"));
    }

    #[test]
    fn fallback_date_per_collection() {
        let doc = object(json!({"date": START, "created_at": "2020-01-01T00:00:00.000Z"}));
        assert_eq!(fallback_date_ms(Collection::Entries, &doc), Some(START));
        assert_eq!(
            fallback_date_ms(Collection::DeviceStatus, &doc),
            Some(1_577_836_800_000)
        );
        assert_eq!(fallback_date_ms(Collection::Settings, &doc), None);
        assert_eq!(fallback_date_ms(Collection::Food, &object(json!({}))), None);
    }

    #[test]
    fn end_from_duration_minutes() {
        let mut doc = object(json!({"mills": START, "duration": 30}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 1_800_000));
        assert_eq!(doc["durationInMilliseconds"], json!(1_800_000));
        assert_eq!(doc["duration"], json!(30));
    }

    #[test]
    fn end_from_duration_milliseconds() {
        let mut doc =
            object(json!({"mills": START, "durationInMilliseconds": 90_000, "duration": 99}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 90_000));
        assert_eq!(doc["durationInMilliseconds"], json!(90_000));
        // 1.5 minutes rounds to 2, and the recomputed duration replaces the client's 99.
        assert_eq!(doc["duration"], json!(2));
    }

    #[test]
    fn end_not_set_for_nonpositive_milliseconds() {
        let mut doc = object(json!({"mills": START, "durationInMilliseconds": 0, "duration": 30}));
        set_treatment_end(&mut doc, None);
        assert!(!doc.contains_key("endmills"));
        assert_eq!(doc["duration"], json!(30));
    }

    #[test]
    fn end_from_created_at_text() {
        let mut doc = object(json!({"created_at": "2018-05-03T21:40:10.088Z", "duration": "15"}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 900_000));
    }

    #[test]
    fn end_from_date_when_no_created_at() {
        let mut doc = object(json!({"date": START, "duration": 1}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 60_000));
    }

    #[test]
    fn end_start_prefers_mills() {
        let mut doc = object(json!({
            "mills": START,
            "created_at": "2020-01-01T00:00:00.000Z",
            "date": 1_600_000_000_000_i64,
            "duration": 1
        }));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 60_000));
    }

    #[test]
    fn end_keeps_client_endmills() {
        let mut doc = object(json!({"mills": START, "duration": 30, "endmills": START + 600_000}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 600_000));
        assert_eq!(doc["durationInMilliseconds"], json!(600_000));
        assert_eq!(doc["duration"], json!(10));
    }

    #[test]
    fn end_before_start_leaves_duration() {
        let mut doc = object(json!({"mills": START, "duration": 30, "endmills": START - 1}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START - 1));
        assert_eq!(doc["duration"], json!(30));
        assert!(!doc.contains_key("durationInMilliseconds"));
    }

    #[test]
    fn end_null_endmills_is_recomputed() {
        let mut doc = object(json!({"mills": START, "duration": 5, "endmills": null}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc["endmills"], json!(START + 300_000));
    }

    #[test]
    fn end_without_duration_or_start() {
        let mut doc = object(json!({"mills": START, "insulin": 1}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc, object(json!({"mills": START, "insulin": 1})));

        let mut doc = object(json!({"duration": 30}));
        set_treatment_end(&mut doc, None);
        assert_eq!(doc, object(json!({"duration": 30})));
    }

    #[test]
    fn end_patch_uses_stored_start_and_duration() {
        let stored = object(json!({"created_at": "2018-05-03T21:40:10.088Z", "duration": 20}));
        let mut patch = object(json!({"notes": "changed"}));
        set_treatment_end(&mut patch, Some(&stored));
        assert_eq!(patch["endmills"], json!(START + 1_200_000));
        assert_eq!(patch["duration"], json!(20));
    }

    #[test]
    fn end_patch_duration_wins_over_stored() {
        let stored = object(json!({"mills": START, "durationInMilliseconds": 60_000}));
        let mut patch = object(json!({"duration": 3}));
        set_treatment_end(&mut patch, Some(&stored));
        assert_eq!(patch["endmills"], json!(START + 180_000));
    }

    #[test]
    fn end_patch_own_date_before_stored_created_at() {
        let stored = object(json!({"created_at": "2020-01-01T00:00:00.000Z"}));
        let mut patch = object(json!({"date": START, "duration": 1}));
        set_treatment_end(&mut patch, Some(&stored));
        assert_eq!(patch["endmills"], json!(START + 60_000));
    }
}

//! Validation of request bodies and documents: the common fields, immutable fields and
//! read-only documents, each failure with the exact APIv3 message.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::date::MIN_VALID_DATE_MS;
use crate::error::ApiError;
use crate::js::is_blank;
use crate::search::compare_values;

/// Smallest accepted `utcOffset`, in minutes.
const MIN_UTC_OFFSET: f64 = -1440.0;
/// Largest accepted `utcOffset`, in minutes.
const MAX_UTC_OFFSET: f64 = 1440.0;

/// Fields that PUT, PATCH and create-deduplication may not change, in the order the
/// reference checks them (so the first reported field is the same).
pub const IMMUTABLE_FIELDS: &[&str] = &[
    "identifier",
    "date",
    "utcOffset",
    "eventType",
    "device",
    "app",
    "srvCreated",
    "subject",
    "srvModified",
    "modifiedBy",
    "isValid",
];

/// Checks that a request body is a non-empty JSON object and returns it.
///
/// Returns 400 `Bad or missing request body` for anything else: arrays, scalars, `null`, `{}`.
pub fn check_body(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) if !map.is_empty() && depth(body) <= MAX_DEPTH => Ok(map),
        _ => Err(ApiError::bad_body()),
    }
}

/// Deepest nesting of objects and arrays a document may have, as in MongoDB.
///
/// Deeper documents could be stored but not returned inside the search envelope,
/// whose JSON parsers stop at 128 levels.
pub const MAX_DEPTH: usize = 100;

/// Returns the nesting depth of objects and arrays in `value` (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Validates a document to create or to replace by PUT, after
/// [`normalize_dates`](crate::date::normalize_dates).
///
/// Checks in this order, returning 400 with the first failure: `identifier` is a non-blank
/// string, `date` is a number above 946684800000, `utcOffset` is a number in [-1440, 1440],
/// and `app` is a non-blank string.
pub fn validate_document(doc: &Map<String, Value>) -> Result<(), ApiError> {
    match doc.get("identifier") {
        Some(Value::String(identifier)) if !is_blank(identifier) => {}
        _ => return Err(ApiError::bad_field("identifier")),
    }
    check_date(doc.get("date"))?;
    check_utc_offset(doc.get("utcOffset"))?;
    check_app(doc.get("app"))
}

/// Validates a PATCH body: `date`, `utcOffset` and `app` as in [`validate_document`], but
/// each only when the patch contains it (a `null` value counts as contained).
pub fn validate_patch(patch: &Map<String, Value>) -> Result<(), ApiError> {
    if patch.contains_key("date") {
        check_date(patch.get("date"))?;
    }
    if patch.contains_key("utcOffset") {
        check_utc_offset(patch.get("utcOffset"))?;
    }
    if patch.contains_key("app") {
        check_app(patch.get("app"))?;
    }
    Ok(())
}

/// Checks that `incoming` leaves every field of [`IMMUTABLE_FIELDS`] as `stored` has it.
///
/// A field counts as changed only when `incoming` carries it (even as `null`) with another
/// value. Numbers compare by value (5 equals 5.0), objects and arrays by content, key
/// order included.
/// `allow_identifier_change` skips `identifier`, for create-deduplication. A soft-deleted
/// stored document (`isValid: false`) skips every check. Returns 400
/// `Field <name> cannot be modified by the client` for the first changed field.
pub fn check_immutable(
    stored: &Map<String, Value>,
    incoming: &Map<String, Value>,
    allow_identifier_change: bool,
) -> Result<(), ApiError> {
    if stored.get("isValid") == Some(&Value::Bool(false)) {
        return Ok(());
    }

    for &field in IMMUTABLE_FIELDS {
        if field == "identifier" && allow_identifier_change {
            continue;
        }
        let Some(value) = incoming.get(field) else {
            continue;
        };
        let unchanged = stored
            .get(field)
            .is_some_and(|old| compare_values(old, value) == Ordering::Equal);
        if !unchanged {
            return Err(ApiError::immutable_field(field));
        }
    }
    Ok(())
}

/// Tells whether a stored document is read-only: `isReadOnly`, `readOnly` or `readonly`
/// is `true`. Modifying such a document fails with [`ApiError::read_only`].
pub fn is_read_only(doc: &Map<String, Value>) -> bool {
    ["isReadOnly", "readOnly", "readonly"]
        .iter()
        .any(|field| doc.get(*field) == Some(&Value::Bool(true)))
}

fn check_date(date: Option<&Value>) -> Result<(), ApiError> {
    match date.and_then(Value::as_f64) {
        Some(ms) if ms > MIN_VALID_DATE_MS as f64 => Ok(()),
        _ => Err(ApiError::bad_field("date")),
    }
}

fn check_utc_offset(offset: Option<&Value>) -> Result<(), ApiError> {
    match offset.and_then(Value::as_f64) {
        Some(minutes) if (MIN_UTC_OFFSET..=MAX_UTC_OFFSET).contains(&minutes) => Ok(()),
        _ => Err(ApiError::bad_field("utcOffset")),
    }
}

fn check_app(app: Option<&Value>) -> Result<(), ApiError> {
    match app {
        Some(Value::String(app)) if !is_blank(app) => Ok(()),
        _ => Err(ApiError::bad_field("app")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut value = json!(1);
        for _ in 1..levels {
            value = json!([value]);
        }
        json!({ "n": value })
    }

    #[test]
    fn check_body_depth_limit() {
        // `nested(n)` is n levels deep: the outer object plus n - 1 arrays.
        assert!(check_body(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            check_body(&nested(MAX_DEPTH + 1)),
            Err(ApiError::bad_body())
        );
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn valid_doc() -> Map<String, Value> {
        object(json!({
            "identifier": "abc",
            "date": 1_525_383_610_088_i64,
            "utcOffset": 120,
            "app": "xDrip",
            "device": "dev",
            "eventType": "Note"
        }))
    }

    fn message(result: Result<(), ApiError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.kind.http_status(), 400);
        error.message
    }

    #[test]
    fn body_must_be_nonempty_object() {
        for body in [
            json!(null),
            json!([]),
            json!([{"a": 1}]),
            json!("x"),
            json!(5),
            json!({}),
        ] {
            let error = check_body(&body).unwrap_err();
            assert_eq!(error.message, "Bad or missing request body", "{body}");
            assert_eq!(error.kind.http_status(), 400);
        }
        let body = json!({"a": 1});
        assert_eq!(check_body(&body).unwrap()["a"], json!(1));
    }

    #[test]
    fn document_valid() {
        assert_eq!(validate_document(&valid_doc()), Ok(()));
    }

    #[test]
    fn document_identifier() {
        for identifier in [json!(null), json!(""), json!(" \t"), json!(5)] {
            let mut doc = valid_doc();
            doc.insert("identifier".into(), identifier);
            assert_eq!(
                message(validate_document(&doc)),
                "Bad or missing identifier field"
            );
        }
        let mut doc = valid_doc();
        doc.remove("identifier");
        assert_eq!(
            message(validate_document(&doc)),
            "Bad or missing identifier field"
        );
    }

    #[test]
    fn document_date() {
        for date in [
            json!(null),
            json!("1525383610088"),
            json!(946_684_800_000_i64),
            json!(5),
        ] {
            let mut doc = valid_doc();
            doc.insert("date".into(), date.clone());
            assert_eq!(
                message(validate_document(&doc)),
                "Bad or missing date field",
                "{date}"
            );
        }
        let mut doc = valid_doc();
        doc.insert("date".into(), json!(946_684_800_001_i64));
        assert_eq!(validate_document(&doc), Ok(()));
    }

    #[test]
    fn document_utc_offset() {
        for offset in [
            json!(null),
            json!("ABC"),
            json!(-5000),
            json!(1441),
            json!(-1440.5),
        ] {
            let mut doc = valid_doc();
            doc.insert("utcOffset".into(), offset.clone());
            assert_eq!(
                message(validate_document(&doc)),
                "Bad or missing utcOffset field",
                "{offset}"
            );
        }
        for offset in [json!(-1440), json!(1440), json!(0), json!(90.5)] {
            let mut doc = valid_doc();
            doc.insert("utcOffset".into(), offset.clone());
            assert_eq!(validate_document(&doc), Ok(()), "{offset}");
        }
    }

    #[test]
    fn document_app() {
        for app in [json!(null), json!(""), json!("  "), json!(1)] {
            let mut doc = valid_doc();
            doc.insert("app".into(), app.clone());
            assert_eq!(
                message(validate_document(&doc)),
                "Bad or missing app field",
                "{app}"
            );
        }
        let mut doc = valid_doc();
        doc.remove("app");
        assert_eq!(message(validate_document(&doc)), "Bad or missing app field");
    }

    #[test]
    fn document_checks_in_reference_order() {
        let doc = object(json!({"identifier": 5, "date": "x", "utcOffset": "x"}));
        assert_eq!(
            message(validate_document(&doc)),
            "Bad or missing identifier field"
        );
        let doc = object(json!({"identifier": "a", "date": "x", "utcOffset": "x"}));
        assert_eq!(
            message(validate_document(&doc)),
            "Bad or missing date field"
        );
        let doc =
            object(json!({"identifier": "a", "date": 1_525_383_610_088_i64, "utcOffset": "x"}));
        assert_eq!(
            message(validate_document(&doc)),
            "Bad or missing utcOffset field"
        );
    }

    #[test]
    fn patch_checks_only_present_fields() {
        assert_eq!(validate_patch(&object(json!({"notes": "x"}))), Ok(()));
        assert_eq!(
            validate_patch(&object(json!({"date": 1_525_383_610_088_i64, "app": "a"}))),
            Ok(())
        );
        assert_eq!(
            message(validate_patch(&object(json!({"date": null})))),
            "Bad or missing date field"
        );
        assert_eq!(
            message(validate_patch(&object(json!({"utcOffset": 2000})))),
            "Bad or missing utcOffset field"
        );
        assert_eq!(
            message(validate_patch(&object(json!({"app": ""})))),
            "Bad or missing app field"
        );
    }

    #[test]
    fn immutable_unchanged_fields_pass() {
        let stored = valid_doc();
        let incoming = object(json!({
            "identifier": "abc",
            "date": 1_525_383_610_088.0,
            "utcOffset": 120,
            "notes": "changed"
        }));
        assert_eq!(check_immutable(&stored, &incoming, false), Ok(()));
    }

    #[test]
    fn immutable_changed_field_fails() {
        let stored = valid_doc();
        for field in [
            "identifier",
            "date",
            "utcOffset",
            "eventType",
            "device",
            "app",
        ] {
            let incoming = object(json!({ field: "other" }));
            assert_eq!(
                message(check_immutable(&stored, &incoming, false)),
                format!("Field {field} cannot be modified by the client")
            );
        }
    }

    #[test]
    fn immutable_field_missing_from_stored() {
        let stored = valid_doc();
        for field in [
            "srvCreated",
            "subject",
            "srvModified",
            "modifiedBy",
            "isValid",
        ] {
            let incoming = object(json!({ field: 1 }));
            assert_eq!(
                message(check_immutable(&stored, &incoming, false)),
                format!("Field {field} cannot be modified by the client")
            );
        }
        let incoming = object(json!({"subject": null}));
        assert_eq!(
            message(check_immutable(&stored, &incoming, false)),
            "Field subject cannot be modified by the client"
        );
    }

    #[test]
    fn immutable_reports_first_field() {
        let stored = valid_doc();
        let incoming = object(json!({"app": "other", "date": 1}));
        assert_eq!(
            message(check_immutable(&stored, &incoming, false)),
            "Field date cannot be modified by the client"
        );
    }

    #[test]
    fn immutable_identifier_change_allowed() {
        let stored = valid_doc();
        let incoming = object(json!({"identifier": "new", "app": "xDrip"}));
        assert_eq!(check_immutable(&stored, &incoming, true), Ok(()));
        let incoming = object(json!({"identifier": "new", "app": "other"}));
        assert_eq!(
            message(check_immutable(&stored, &incoming, true)),
            "Field app cannot be modified by the client"
        );
    }

    #[test]
    fn immutable_skipped_for_deleted_document() {
        let mut stored = valid_doc();
        stored.insert("isValid".into(), json!(false));
        let incoming = object(json!({"date": 1, "app": "other", "isValid": true}));
        assert_eq!(check_immutable(&stored, &incoming, false), Ok(()));
    }

    #[test]
    fn read_only_flags() {
        assert!(!is_read_only(&valid_doc()));
        for field in ["isReadOnly", "readOnly", "readonly"] {
            assert!(is_read_only(&object(json!({ field: true }))), "{field}");
            assert!(
                !is_read_only(&object(json!({ field: "true" }))),
                "{field} text"
            );
            assert!(
                !is_read_only(&object(json!({ field: false }))),
                "{field} false"
            );
        }
    }
}

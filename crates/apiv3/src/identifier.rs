//! The `identifier` of a document: kept when the client sends one, otherwise derived from
//! device, date and eventType so that repeated uploads of one event deduplicate.

use serde_json::{Map, Value};
use tracing::warn;
use uuid::Uuid;

use crate::error::ApiError;
use crate::js::{is_blank, is_truthy, to_js_string};

/// Namespace of the version 5 UUIDs: the 16 ASCII bytes of `NightscoutRocks!`, as in the
/// reference server, so that both compute the same identifier for the same document.
const NAMESPACE: Uuid = Uuid::from_bytes(*b"NightscoutRocks!");

/// Calculates the identifier of a document: the version 5 UUID of `<device>_<date>`, with
/// `_<eventType>` appended when `eventType` is set (not empty, 0, false or null).
///
/// Values are written as JavaScript string conversion writes them, because the reference
/// builds the name that way: a missing device is `undefined`, `null` is `null`, numbers use
/// JavaScript's number format and objects are `[object Object]`. Call it after
/// [`normalize_dates`](crate::date::normalize_dates), so that `date` is epoch milliseconds.
pub fn calculate_identifier(doc: &Map<String, Value>) -> String {
    let mut name = format!(
        "{}_{}",
        to_js_string(doc.get("device")),
        to_js_string(doc.get("date"))
    );
    if is_truthy(doc.get("eventType")) {
        name.push('_');
        name.push_str(&to_js_string(doc.get("eventType")));
    }
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// Resolves the identifier of a document to create, and returns it.
///
/// A missing or false-like identifier (`null`, `""`, 0, false) is replaced by
/// [`calculate_identifier`]. Any other identifier is kept, and a warning is logged when it
/// differs from the calculated one. A kept identifier that is not a string, or is only
/// whitespace, gives 400 `Bad or missing identifier field`.
///
/// This is for create only: PUT takes the identifier from the URL and ignores the body's.
pub fn resolve_identifier(doc: &mut Map<String, Value>) -> Result<String, ApiError> {
    let calculated = calculate_identifier(doc);
    if !is_truthy(doc.get("identifier")) {
        doc.insert("identifier".to_string(), Value::from(calculated.as_str()));
        return Ok(calculated);
    }

    match doc.get("identifier") {
        Some(Value::String(identifier)) if !is_blank(identifier) => {
            if *identifier != calculated {
                // Debug formatting escapes control characters, so a client cannot
                // forge log lines; long values are cut.
                let shown: String = identifier.chars().take(64).collect();
                warn!(
                    identifier = ?shown,
                    calculated = %calculated,
                    "client identifier differs from the calculated one, keeping the client's"
                );
            }
            Ok(identifier.clone())
        }
        _ => Err(ApiError::bad_field("identifier")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Expected UUIDs were computed with Python:
    // uuid.uuid5(uuid.UUID(bytes=b'NightscoutRocks!'), name)
    const DEV_DATE: &str = "ec2ba5de-ee02-579a-9b97-16b1f20d9fed"; // dev_1525383610088
    const UNDEFINED_DATE: &str = "13e1e10f-3b56-5385-87b4-66802f6fd96a"; // undefined_1525383610088
    const DEV_DATE_MEAL: &str = "8a028ae5-bb4e-5231-9887-8a65a711b252"; // dev_1525383610088_Meal Bolus
    const NULL_DATE: &str = "1be160d1-e847-59c1-8f32-69fe3e853c3c"; // null_1525383610088
    const FIVE_DATE: &str = "5f79a5e3-6679-5778-a792-7ed50801bdf2"; // 5_1525383610088
    const OBJECT_DATE_TRUE: &str = "7cf8bd4b-9848-5ea9-90d1-0f9e8da8c187"; // [object Object]_1525383610088_true
    const ARRAY_DATE_BIG: &str = "e40bb1a3-4646-5c8e-8a3a-80d0cb948064"; // a,,b_1525383610088_1e+21
    const UNICODE_DATE: &str = "530897ae-8c45-55f3-89e1-f2dab834b0f2"; // xDrip+ é_1525383610088

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn identifier_of(value: Value) -> String {
        calculate_identifier(&object(value))
    }

    #[test]
    fn calculate_from_device_and_date() {
        assert_eq!(
            identifier_of(json!({"device": "dev", "date": 1_525_383_610_088_i64, "sgv": 5})),
            DEV_DATE
        );
    }

    #[test]
    fn calculate_without_device() {
        assert_eq!(
            identifier_of(json!({"date": 1_525_383_610_088_i64})),
            UNDEFINED_DATE
        );
    }

    #[test]
    fn calculate_with_event_type() {
        assert_eq!(
            identifier_of(json!({
                "device": "dev",
                "date": 1_525_383_610_088_i64,
                "eventType": "Meal Bolus"
            })),
            DEV_DATE_MEAL
        );
    }

    #[test]
    fn calculate_ignores_false_like_event_type() {
        for event_type in [json!(""), json!(null), json!(0), json!(false)] {
            assert_eq!(
                identifier_of(json!({
                    "device": "dev",
                    "date": 1_525_383_610_088_i64,
                    "eventType": event_type
                })),
                DEV_DATE,
                "eventType {event_type}"
            );
        }
    }

    #[test]
    fn calculate_renders_values_like_javascript() {
        assert_eq!(
            identifier_of(json!({"device": null, "date": 1_525_383_610_088_i64})),
            NULL_DATE
        );
        assert_eq!(
            identifier_of(json!({"device": 5, "date": 1_525_383_610_088_i64})),
            FIVE_DATE
        );
        assert_eq!(
            identifier_of(json!({
                "device": {"name": "x"},
                "date": 1_525_383_610_088_i64,
                "eventType": true
            })),
            OBJECT_DATE_TRUE
        );
        assert_eq!(
            identifier_of(json!({
                "device": ["a", null, "b"],
                "date": 1_525_383_610_088_i64,
                "eventType": 1e21
            })),
            ARRAY_DATE_BIG
        );
        assert_eq!(
            identifier_of(json!({"device": "xDrip+ é", "date": 1_525_383_610_088_i64})),
            UNICODE_DATE
        );
    }

    #[test]
    fn resolve_computes_missing_identifier() {
        let mut doc = object(json!({"device": "dev", "date": 1_525_383_610_088_i64}));
        assert_eq!(resolve_identifier(&mut doc), Ok(DEV_DATE.to_string()));
        assert_eq!(doc["identifier"], json!(DEV_DATE));
    }

    #[test]
    fn resolve_replaces_false_like_identifier() {
        for identifier in [json!(null), json!(""), json!(0), json!(false)] {
            let mut doc = object(json!({
                "identifier": identifier,
                "device": "dev",
                "date": 1_525_383_610_088_i64
            }));
            assert_eq!(
                resolve_identifier(&mut doc),
                Ok(DEV_DATE.to_string()),
                "identifier {identifier}"
            );
            assert_eq!(doc["identifier"], json!(DEV_DATE));
        }
    }

    #[test]
    fn resolve_keeps_client_identifier() {
        let mut doc = object(json!({
            "identifier": "E1F2A3B4-C5D6-7890-ABCD-EF1234567890",
            "device": "dev",
            "date": 1_525_383_610_088_i64
        }));
        assert_eq!(
            resolve_identifier(&mut doc),
            Ok("E1F2A3B4-C5D6-7890-ABCD-EF1234567890".to_string())
        );
        assert_eq!(
            doc["identifier"],
            json!("E1F2A3B4-C5D6-7890-ABCD-EF1234567890")
        );
    }

    #[test]
    fn resolve_rejects_bad_identifier() {
        for identifier in [
            json!("   "),
            json!(5),
            json!(true),
            json!({"a": 1}),
            json!([]),
        ] {
            let mut doc = object(json!({"identifier": identifier, "date": 1_525_383_610_088_i64}));
            let error = resolve_identifier(&mut doc).unwrap_err();
            assert_eq!(
                error.message, "Bad or missing identifier field",
                "{identifier}"
            );
            assert_eq!(error.kind.http_status(), 400);
        }
    }
}

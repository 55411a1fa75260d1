//! Conversion between stored BSON documents and the JSON documents core works with.
//!
//! Reading follows what Nightscout's JSON output shows for the same data: an ObjectId
//! becomes its 24 hex digits, a BSON date its ISO 8601 text in UTC, and a double with a
//! whole-number value (Nightscout's Node.js driver stores every number outside the
//! 32-bit range as a double, `date` and `srvModified` included) a JSON integer. The
//! top-level `_id` never reaches a client: it becomes the key of a document without
//! `identifier`. Writing keeps the stored BSON type of every field whose value did not
//! change, so a rewrite does not turn untouched doubles, ObjectIds or dates into other
//! types.

use mongodb::bson::{Bson, Document, oid::ObjectId};
use serde_json::{Map, Number, Value};

use crate::StoredDocument;
use crate::error::StoreError;

/// Largest integer a double represents exactly (2^53); whole doubles up to it read as integers.
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// Converts a JSON value to BSON: integers to Int32 when they fit and Int64 otherwise,
/// other numbers to Double.
pub fn json_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(flag) => Bson::Boolean(*flag),
        Value::Number(number) => number_to_bson(number),
        Value::String(text) => Bson::String(text.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(object_to_document(map)),
    }
}

fn number_to_bson(number: &Number) -> Bson {
    if let Some(integer) = number.as_i64() {
        return match i32::try_from(integer) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(integer),
        };
    }
    Bson::Double(number.as_f64().unwrap_or(f64::NAN))
}

/// Converts a JSON object to a BSON document, keeping the field order.
pub fn object_to_document(map: &Map<String, Value>) -> Document {
    map.iter()
        .map(|(name, value)| (name.clone(), json_to_bson(value)))
        .collect()
}

/// Converts a BSON value to JSON as Nightscout's output shows it.
pub fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(flag) => Value::Bool(*flag),
        Bson::Int32(integer) => Value::from(*integer),
        Bson::Int64(integer) => Value::from(*integer),
        Bson::Double(number) => double_to_json(*number),
        Bson::String(text) => Value::String(text.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        Bson::Document(document) => Value::Object(document_to_object(document)),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(instant) => {
            Value::String(nightjar_apiv3::date::iso_utc(instant.timestamp_millis()))
        }
        // Decimals, binaries, regular expressions, timestamps and the rest appear in
        // their relaxed Extended JSON form, which Nightscout's output resembles.
        other => other.clone().into_relaxed_extjson(),
    }
}

/// Converts a double: whole numbers within 2^53 become integers, NaN and infinities
/// become null (as `JSON.stringify` writes them).
fn double_to_json(number: f64) -> Value {
    if !number.is_finite() {
        return Value::Null;
    }
    if number.fract() == 0.0 && number.abs() <= MAX_EXACT_DOUBLE {
        return Value::from(number as i64);
    }
    Number::from_f64(number).map_or(Value::Null, Value::Number)
}

/// Converts a BSON document to a JSON object, keeping the field order.
pub fn document_to_object(document: &Document) -> Map<String, Value> {
    document
        .iter()
        .map(|(name, value)| (name.clone(), bson_to_json(value)))
        .collect()
}

/// Returns the key of a database `_id`: the hex digits of an ObjectId, the text of a
/// string, the JSON text of anything else.
pub fn id_key(id: &Bson) -> String {
    match id {
        Bson::ObjectId(id) => id.to_hex(),
        Bson::String(text) => text.clone(),
        other => bson_to_json(other).to_string(),
    }
}

/// A document read from a data collection, with the `_id` that addresses it there.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDocument {
    /// The database `_id`, kept to replace or remove exactly this document.
    pub id: Bson,
    /// The document as it is stored, `_id` included, to preserve types on rewrite and
    /// to notice a concurrent change between transaction attempts.
    pub raw: Document,
    /// The document as core works with it.
    pub stored: StoredDocument,
}

/// Splits a stored document into its `_id` and the form core works with.
///
/// The key is the `identifier` when it is non-empty text, otherwise the `_id` (see
/// [`id_key`]), as Nightscout addresses documents written by its older APIs.
pub fn found_document(raw: Document) -> Result<FoundDocument, StoreError> {
    let id = raw
        .get("_id")
        .cloned()
        .ok_or_else(|| StoreError::Corrupt("stored document has no _id".into()))?;
    let stored = stored_document(&raw, &id);
    Ok(FoundDocument { id, raw, stored })
}

/// Converts a stored document to the form core works with, without its top-level `_id`.
pub fn stored_document(raw: &Document, id: &Bson) -> StoredDocument {
    let mut body = Map::with_capacity(raw.len());
    for (name, value) in raw {
        if name != "_id" {
            body.insert(name.clone(), bson_to_json(value));
        }
    }
    let has_identifier = body.contains_key("identifier");
    let key = match body.get("identifier") {
        Some(Value::String(identifier)) if !identifier.is_empty() => identifier.clone(),
        _ => id_key(id),
    };
    StoredDocument {
        key,
        has_identifier,
        body,
    }
}

/// Converts a body to write, keeping the stored BSON value of every field whose JSON
/// form is unchanged from `previous` (nested documents field by field).
pub fn body_to_document(body: &Map<String, Value>, previous: Option<&Document>) -> Document {
    let mut document = Document::new();
    for (name, value) in body {
        if name == "_id" {
            // The database id is the store's to keep; a body never sets it.
            continue;
        }
        let converted = match previous.and_then(|stored| stored.get(name)) {
            Some(stored) => preserve_type(value, stored),
            None => json_to_bson(value),
        };
        document.insert(name.clone(), converted);
    }
    document
}

/// Returns `stored` when it reads as `value`, else `value` converted, recursing into
/// objects so one changed nested field does not retype its siblings.
fn preserve_type(value: &Value, stored: &Bson) -> Bson {
    if bson_to_json(stored) == *value {
        return stored.clone();
    }
    match (value, stored) {
        (Value::Object(map), Bson::Document(previous)) => {
            Bson::Document(body_to_document(map, Some(previous)))
        }
        _ => json_to_bson(value),
    }
}

/// Parses 24 hex digits (either case) as an ObjectId.
pub fn object_id(text: &str) -> Option<ObjectId> {
    if text.len() == 24 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        ObjectId::parse_str(text).ok()
    } else {
        None
    }
}

/// Converts an authorization entry (subject or role) to JSON: `_id` as hex digits, and
/// fields holding null left out, because the entry types treat an absent field as its
/// default but reject null.
pub fn auth_entry_to_json(document: &Document) -> Value {
    let entry: Map<String, Value> = document
        .iter()
        .map(|(name, value)| (name.clone(), bson_to_json(value)))
        .filter(|(_, value)| !value.is_null())
        .collect();
    Value::Object(entry)
}

/// Converts an authorization entry to BSON with the `_id` as an ObjectId when `id` is
/// 24 hex digits (as Nightscout stores it), else as text.
pub fn auth_entry_to_document(id: &str, body: &Value) -> Document {
    let mut document = Document::new();
    document.insert("_id", auth_id(id));
    if let Value::Object(map) = body {
        for (name, value) in map {
            if name != "_id" {
                document.insert(name.clone(), json_to_bson(value));
            }
        }
    }
    document
}

/// Returns the database `_id` of an authorization entry id.
pub fn auth_id(id: &str) -> Bson {
    match object_id(id) {
        Some(oid) => Bson::ObjectId(oid),
        None => Bson::String(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, doc};
    use serde_json::json;

    use super::*;

    const OID: &str = "5ae9ab3a4d6f2b1a2c3d4e5f";

    fn oid() -> ObjectId {
        ObjectId::parse_str(OID).unwrap()
    }

    #[test]
    fn bson_scalars_read_as_nightscout_shows_them() {
        let cases = [
            (
                Bson::Double(1_525_383_610_088.0),
                json!(1_525_383_610_088_i64),
            ),
            (Bson::Double(5.5), json!(5.5)),
            (Bson::Double(-0.0), json!(0)),
            (Bson::Double(f64::NAN), json!(null)),
            (Bson::Double(1e300), json!(1e300)),
            (Bson::Int32(120), json!(120)),
            (Bson::Int64(1_525_383_610_088), json!(1_525_383_610_088_i64)),
            (Bson::ObjectId(oid()), json!(OID)),
            (
                Bson::DateTime(DateTime::from_millis(1_525_383_610_088)),
                json!("2018-05-03T21:40:10.088Z"),
            ),
            (Bson::Undefined, json!(null)),
            (Bson::Boolean(false), json!(false)),
        ];
        for (bson, expected) in cases {
            assert_eq!(bson_to_json(&bson), expected, "reading {bson:?}");
        }
    }

    #[test]
    fn json_numbers_write_as_smallest_exact_type() {
        assert_eq!(json_to_bson(&json!(120)), Bson::Int32(120));
        assert_eq!(
            json_to_bson(&json!(1_525_383_610_088_i64)),
            Bson::Int64(1_525_383_610_088)
        );
        assert_eq!(json_to_bson(&json!(5.5)), Bson::Double(5.5));
        assert_eq!(
            json_to_bson(&json!(u64::MAX)),
            Bson::Double(u64::MAX as f64)
        );
    }

    #[test]
    fn nested_values_convert_both_ways() {
        let value = json!({"a": [1, "x", {"b": null}], "c": {"d": true}});
        let bson = json_to_bson(&value);
        assert_eq!(
            bson,
            Bson::Document(doc! {"a": [1, "x", {"b": Bson::Null}], "c": {"d": true}})
        );
        assert_eq!(bson_to_json(&bson), value);
    }

    #[test]
    fn legacy_document_keyed_by_object_id() {
        let raw = doc! {
            "_id": oid(),
            "sgv": 120,
            "date": 1_525_383_610_088.0,
            "created_at": "2018-05-03T21:40:10.088Z",
        };
        let found = found_document(raw.clone()).unwrap();
        assert_eq!(found.id, Bson::ObjectId(oid()));
        assert_eq!(found.raw, raw);
        assert_eq!(found.stored.key, OID);
        assert!(!found.stored.has_identifier);
        assert_eq!(
            Value::Object(found.stored.body),
            json!({"sgv": 120, "date": 1_525_383_610_088_i64, "created_at": "2018-05-03T21:40:10.088Z"})
        );
    }

    #[test]
    fn identifier_is_key_and_id_is_hidden() {
        let raw = doc! {"_id": oid(), "identifier": "abc", "nested": {"_id": oid()}};
        let found = found_document(raw).unwrap();
        assert_eq!(found.stored.key, "abc");
        assert!(found.stored.has_identifier);
        assert!(!found.stored.body.contains_key("_id"));
        assert_eq!(found.stored.body["nested"], json!({"_id": OID}));
    }

    #[test]
    fn empty_identifier_falls_back_to_id() {
        let found = found_document(doc! {"_id": "legacy-text-id", "identifier": ""}).unwrap();
        assert_eq!(found.stored.key, "legacy-text-id");
        assert!(found.stored.has_identifier);
    }

    #[test]
    fn document_without_id_is_corrupt() {
        assert!(matches!(
            found_document(doc! {"identifier": "abc"}),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn rewrite_keeps_types_of_unchanged_fields() {
        let stored = doc! {
            "_id": oid(),
            "date": 1_525_383_610_088.0,
            "sgv": 120.0,
            "when": DateTime::from_millis(1_525_383_610_088),
            "boluscalc": {"foods": [{"_id": oid()}], "carbs": 10},
        };
        let body = json!({
            "_id": "ignored",
            "date": 1_525_383_610_088_i64,
            "sgv": 130,
            "when": "2018-05-03T21:40:10.088Z",
            "boluscalc": {"foods": [{"_id": OID}], "carbs": 12},
            "identifier": "abc",
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let written = body_to_document(&body, Some(&stored));
        assert_eq!(
            written,
            doc! {
                "date": 1_525_383_610_088.0,
                "sgv": 130,
                "when": DateTime::from_millis(1_525_383_610_088),
                "boluscalc": {"foods": [{"_id": oid()}], "carbs": 12},
                "identifier": "abc",
            }
        );
    }

    #[test]
    fn new_body_converts_plainly() {
        let Value::Object(body) = json!({"identifier": "abc", "date": 1_525_383_610_088_i64})
        else {
            unreachable!()
        };
        assert_eq!(
            body_to_document(&body, None),
            doc! {"identifier": "abc", "date": 1_525_383_610_088_i64}
        );
    }

    #[test]
    fn object_id_accepts_only_24_hex_digits() {
        assert_eq!(object_id(OID), Some(oid()));
        assert_eq!(object_id(&OID.to_uppercase()), Some(oid()));
        assert_eq!(object_id("5ae9ab3a4d6f2b1a2c3d4e5"), None);
        assert_eq!(object_id("5ae9ab3a4d6f2b1a2c3d4e5g"), None);
        assert_eq!(object_id("a5ae9ab3a4d6f2b1a2c3d4e5f"), None);
    }

    #[test]
    fn auth_entries_map_id_and_drop_nulls() {
        let stored = doc! {
            "_id": oid(),
            "name": "phone",
            "roles": ["readable"],
            "notes": Bson::Null,
            "created_at": "2020-01-01T00:00:00.000Z",
        };
        assert_eq!(
            auth_entry_to_json(&stored),
            json!({"_id": OID, "name": "phone", "roles": ["readable"], "created_at": "2020-01-01T00:00:00.000Z"})
        );

        let body = json!({"_id": OID, "name": "phone", "roles": ["readable"]});
        assert_eq!(
            auth_entry_to_document(OID, &body),
            doc! {"_id": oid(), "name": "phone", "roles": ["readable"]}
        );
        assert_eq!(auth_id("custom"), Bson::String("custom".into()));
    }
}

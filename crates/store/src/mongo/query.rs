//! Translation of APIv3 searches, history requests and write lookups into MongoDB
//! filters, sort orders and projections, so the server does the filtering and paging.
//!
//! Every function here is pure. The filters follow Nightscout 15.0.7's
//! (`lib/api3/storage/mongoCollection/utils.js`) with two deliberate differences.
//! Values keep the types the APIv3 parser gave them, `in`/`nin` items included, where
//! the reference compares text only. Two filters on one field both apply, where the
//! reference keeps only the last. MongoDB's comparisons only match values of the same
//! type, as the embedded store's do.

use mongodb::bson::{Bson, Document, doc};
use nightjar_apiv3::search::{Filter, FilterOp, FilterValue, SearchQuery};
use serde_json::Value;

use super::mapping::{json_to_bson, object_id};

/// A find request: filter, order, paging and projection.
#[derive(Debug, Clone, PartialEq)]
pub struct FindSpec {
    /// The filter.
    pub filter: Document,
    /// The sort order, most significant field first.
    pub sort: Document,
    /// Maximum number of documents to return.
    pub limit: i64,
    /// Matching documents to skip first.
    pub skip: u64,
    /// Fields to return, or `None` for whole documents.
    pub projection: Option<Document>,
}

/// Fields that break ties after the sort field, in the reference's order.
const TIE_BREAK_FIELDS: [&str; 3] = ["identifier", "created_at", "date"];

/// Fields a projection always keeps: core needs them to build the key and the server
/// dates before it applies `fields` itself.
const PROJECTION_KEEPS: [&str; 5] = [
    "identifier",
    "srvModified",
    "srvCreated",
    "date",
    "created_at",
];

/// Returns a filter that no document matches, because every stored document has an
/// `_id`.
fn match_nothing() -> Document {
    doc! {"_id": {"$exists": false}}
}

/// Builds the find request of a search: the filters, valid documents only, sorted by
/// the requested field and then `identifier`, `created_at`, `date` and `_id` in the
/// same direction.
pub fn search(query: &SearchQuery) -> FindSpec {
    let mut clauses: Vec<Document> = query.filters.iter().filter_map(filter_clause).collect();
    clauses.push(doc! {"isValid": {"$ne": false}});

    FindSpec {
        filter: combine(clauses),
        sort: sort_order(query),
        limit: i64::from(query.limit),
        skip: query.skip,
        projection: projection(query.fields.as_deref()),
    }
}

/// Builds the filter of a history request: documents modified after `since`, or at it
/// when `inclusive`, soft-deleted ones included.
pub fn history_filter(since: i64, inclusive: bool) -> Document {
    let operator = if inclusive { "$gte" } else { "$gt" };
    doc! {"srvModified": {operator: since}}
}

/// Returns the order of a history request: by srvModified, then by `_id` for equal
/// values.
pub fn history_sort() -> Document {
    doc! {"srvModified": 1, "_id": 1}
}

/// Builds the filter that finds a document by identifier: its `identifier`, or the
/// `_id` of a document without identifier (as an ObjectId when the identifier is 24
/// hex digits, and as text).
///
/// Sort the matches by `{identifier: -1}` so a document with identifier wins over one
/// found by its `_id`.
pub fn identifier_filter(identifier: &str) -> Document {
    let mut ids = Vec::with_capacity(2);
    if let Some(oid) = object_id(identifier) {
        ids.push(Bson::ObjectId(oid));
    }
    ids.push(Bson::String(identifier.to_string()));
    doc! {
        "$or": [
            {"identifier": {"$eq": identifier}},
            {"_id": {"$in": ids}, "identifier": {"$exists": false}},
        ]
    }
}

/// Builds the deduplication fallback filter: every field equal, on documents without
/// identifier. Returns `None` for an empty field list (fallback off).
pub fn fallback_filter(fields: &[(String, Value)]) -> Option<Document> {
    if fields.is_empty() {
        return None;
    }
    let mut filter = Document::new();
    for (field, value) in fields {
        filter.insert(field.clone(), doc! {"$eq": json_to_bson(value)});
    }
    filter.insert("identifier", doc! {"$exists": false});
    Some(filter)
}

/// Joins clauses: one document when no field repeats, else `$and` of all of them.
fn combine(clauses: Vec<Document>) -> Document {
    let mut merged = Document::new();
    for clause in &clauses {
        for (field, condition) in clause {
            if merged.contains_key(field) {
                return doc! {"$and": clauses};
            }
            merged.insert(field.clone(), condition.clone());
        }
    }
    merged
}

/// Returns whether MongoDB reads `field` as a plain field path: no empty part and no
/// part starting with `$` (which MongoDB would take as an operator).
fn is_plain_path(field: &str) -> bool {
    field
        .split('.')
        .all(|part| !part.is_empty() && !part.starts_with('$'))
}

/// Translates one filter, or returns `None` when it matches every document.
///
/// A field that is not a plain path cannot be stored under that name, so the filter is
/// decided as for a missing field. Then `eq null`, `ne` with a value, `in` with null
/// and `nin` without null match everything, and the rest match nothing.
pub fn filter_clause(filter: &Filter) -> Option<Document> {
    if !is_plain_path(&filter.field) {
        return missing_field_clause(filter);
    }

    let condition = match (filter.op, &filter.value) {
        (FilterOp::Re, FilterValue::Pattern(pattern)) => doc! {"$regex": pattern},
        (FilterOp::In, FilterValue::List(values)) => doc! {"$in": list(values)},
        (FilterOp::Nin, FilterValue::List(values)) => doc! {"$nin": list(values)},
        (op, FilterValue::Single(value)) => match comparison(op) {
            Some(operator) => doc! {operator: json_to_bson(value)},
            None => return Some(match_nothing()),
        },
        // The parser never pairs an operator with another kind of operand.
        _ => return Some(match_nothing()),
    };
    let mut clause = Document::new();
    clause.insert(filter.field.clone(), condition);
    Some(clause)
}

fn list(values: &[Value]) -> Vec<Bson> {
    values.iter().map(json_to_bson).collect()
}

fn comparison(op: FilterOp) -> Option<&'static str> {
    let operator = match op {
        FilterOp::Eq => "$eq",
        FilterOp::Ne => "$ne",
        FilterOp::Gt => "$gt",
        FilterOp::Gte => "$gte",
        FilterOp::Lt => "$lt",
        FilterOp::Lte => "$lte",
        FilterOp::In | FilterOp::Nin | FilterOp::Re => return None,
    };
    Some(operator)
}

fn missing_field_clause(filter: &Filter) -> Option<Document> {
    let has_null = |values: &[Value]| values.iter().any(Value::is_null);
    let matches_all = match (filter.op, &filter.value) {
        (FilterOp::Eq, FilterValue::Single(value)) => value.is_null(),
        (FilterOp::Ne, FilterValue::Single(value)) => !value.is_null(),
        (FilterOp::In, FilterValue::List(values)) => has_null(values),
        (FilterOp::Nin, FilterValue::List(values)) => !has_null(values),
        _ => false,
    };
    if matches_all {
        None
    } else {
        Some(match_nothing())
    }
}

/// Builds the sort order of a search. A sort field that is not a plain path is left
/// out, because it would compare equal on every document.
fn sort_order(query: &SearchQuery) -> Document {
    let (field, direction) = match &query.sort {
        Some(sort) => (
            Some(sort.field.as_str()),
            if sort.descending { -1 } else { 1 },
        ),
        None => (None, 1),
    };
    let mut sort = Document::new();
    let fields = field
        .filter(|field| is_plain_path(field))
        .into_iter()
        .chain(TIE_BREAK_FIELDS)
        .chain(["_id"]);
    for field in fields {
        if !sort.contains_key(field) {
            sort.insert(field, direction);
        }
    }
    sort
}

/// Builds the projection of `fields`, or returns `None` to fetch whole documents. That
/// includes a name with `.` or a leading `$`, because core matches such names against
/// top-level fields literally while MongoDB would read them as paths or operators.
fn projection(fields: Option<&[String]>) -> Option<Document> {
    let fields = fields?;
    if fields
        .iter()
        .any(|field| field.is_empty() || field.contains('.') || field.starts_with('$'))
    {
        return None;
    }
    let mut projection = Document::new();
    for field in fields.iter().map(String::as_str).chain(PROJECTION_KEEPS) {
        projection.insert(field, 1);
    }
    Some(projection)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use nightjar_apiv3::search::parse_search;
    use serde_json::json;

    use super::*;

    const OID: &str = "5ae9ab3a4d6f2b1a2c3d4e5f";

    fn parse(pairs: &[(&str, &str)]) -> SearchQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        parse_search(&pairs, 1000).unwrap()
    }

    fn default_sort() -> Document {
        doc! {"identifier": 1, "created_at": 1, "date": 1, "_id": 1}
    }

    /// Each APIv3 query string and the exact filter it must produce.
    #[test]
    fn search_filters_translate_exactly() {
        type Case = (&'static str, Vec<(&'static str, &'static str)>, Document);
        let cases: Vec<Case> = vec![
            ("no filter", vec![], doc! {"isValid": {"$ne": false}}),
            (
                "bare equality on a number",
                vec![("sgv", "120")],
                doc! {"sgv": {"$eq": 120}, "isValid": {"$ne": false}},
            ),
            (
                "quoted number stays text",
                vec![("sgv", "'120'")],
                doc! {"sgv": {"$eq": "120"}, "isValid": {"$ne": false}},
            ),
            (
                "boolean",
                vec![("isReadOnly$eq", "true")],
                doc! {"isReadOnly": {"$eq": true}, "isValid": {"$ne": false}},
            ),
            (
                "date in ISO form becomes epoch milliseconds",
                vec![("date$gte", "2018-05-03T21:40:10.088Z")],
                doc! {"date": {"$gte": 1_525_383_610_088_i64}, "isValid": {"$ne": false}},
            ),
            (
                "created_at becomes ISO text",
                vec![("created_at$lt", "1525383610088")],
                doc! {"created_at": {"$lt": "2018-05-03T21:40:10.088Z"}, "isValid": {"$ne": false}},
            ),
            (
                "srvModified greater than",
                vec![("srvModified$gt", "1525383610088")],
                doc! {"srvModified": {"$gt": 1_525_383_610_088_i64}, "isValid": {"$ne": false}},
            ),
            (
                "not equal and less than or equal",
                vec![("type$ne", "mbg"), ("sgv$lte", "39.5")],
                doc! {"type": {"$ne": "mbg"}, "sgv": {"$lte": 39.5}, "isValid": {"$ne": false}},
            ),
            (
                "dotted path",
                vec![("boluscalc.carbs$gt", "10")],
                doc! {"boluscalc.carbs": {"$gt": 10}, "isValid": {"$ne": false}},
            ),
            (
                "in with typed items",
                vec![("sgv$in", "100|120|abc")],
                doc! {"sgv": {"$in": [100, 120, "abc"]}, "isValid": {"$ne": false}},
            ),
            (
                "nin with quoted text items",
                vec![("eventType$nin", "'Note|Temp Basal'")],
                doc! {"eventType": {"$nin": ["Note", "Temp Basal"]}, "isValid": {"$ne": false}},
            ),
            (
                "regular expression",
                vec![("device$re", "^xDrip")],
                doc! {"device": {"$regex": "^xDrip"}, "isValid": {"$ne": false}},
            ),
            (
                "two filters on one field both apply",
                vec![("date$gte", "1525383610088"), ("date$lt", "1525383620088")],
                doc! {"$and": [
                    {"date": {"$gte": 1_525_383_610_088_i64}},
                    {"date": {"$lt": 1_525_383_620_088_i64}},
                    {"isValid": {"$ne": false}},
                ]},
            ),
            (
                "a filter on isValid joins the validity check",
                vec![("isValid", "true")],
                doc! {"$and": [
                    {"isValid": {"$eq": true}},
                    {"isValid": {"$ne": false}},
                ]},
            ),
            (
                "operator-like field matches as missing",
                vec![("$where$eq", "1")],
                doc! {"_id": {"$exists": false}, "isValid": {"$ne": false}},
            ),
            (
                "operator-like field with ne matches everything",
                vec![("a.$b$ne", "1")],
                doc! {"isValid": {"$ne": false}},
            ),
        ];

        for (name, pairs, expected) in cases {
            let spec = search(&parse(&pairs));
            assert_eq!(spec.filter, expected, "{name}");
        }
    }

    #[test]
    fn search_sort_default_and_tie_breaks() {
        assert_eq!(search(&parse(&[])).sort, default_sort());
        assert_eq!(
            search(&parse(&[("sort$desc", "date")])).sort,
            doc! {"date": -1, "identifier": -1, "created_at": -1, "_id": -1}
        );
        assert_eq!(
            search(&parse(&[("sort", "sgv")])).sort,
            doc! {"sgv": 1, "identifier": 1, "created_at": 1, "date": 1, "_id": 1}
        );
        assert_eq!(
            search(&parse(&[("sort", "identifier")])).sort,
            default_sort()
        );
        assert_eq!(search(&parse(&[("sort", "$natural")])).sort, default_sort());
    }

    #[test]
    fn search_sort_field_order_is_kept() {
        let sort = search(&parse(&[("sort$desc", "created_at")])).sort;
        let fields: Vec<&String> = sort.keys().collect();
        assert_eq!(fields, ["created_at", "identifier", "date", "_id"]);
    }

    #[test]
    fn search_limit_and_skip() {
        let spec = search(&parse(&[("limit", "10"), ("skip", "20")]));
        assert_eq!(spec.limit, 10);
        assert_eq!(spec.skip, 20);

        let spec = search(&parse(&[]));
        assert_eq!(spec.limit, 1000);
        assert_eq!(spec.skip, 0);
    }

    #[test]
    fn search_projection() {
        assert_eq!(search(&parse(&[])).projection, None);
        assert_eq!(search(&parse(&[("fields", "_all")])).projection, None);
        assert_eq!(
            search(&parse(&[("fields", "sgv,direction")])).projection,
            Some(doc! {
                "sgv": 1, "direction": 1, "identifier": 1, "srvModified": 1,
                "srvCreated": 1, "date": 1, "created_at": 1,
            })
        );
        assert_eq!(
            search(&parse(&[("fields", "sgv,date")])).projection,
            Some(doc! {
                "sgv": 1, "date": 1, "identifier": 1, "srvModified": 1,
                "srvCreated": 1, "created_at": 1,
            })
        );
        assert_eq!(
            search(&parse(&[("fields", "boluscalc.carbs")])).projection,
            None
        );
        assert_eq!(search(&parse(&[("fields", "$where")])).projection, None);
    }

    #[test]
    fn history_by_srv_modified() {
        assert_eq!(
            history_filter(1_525_383_610_088, false),
            doc! {"srvModified": {"$gt": 1_525_383_610_088_i64}}
        );
        assert_eq!(
            history_filter(1_525_383_610_000, true),
            doc! {"srvModified": {"$gte": 1_525_383_610_000_i64}}
        );
        assert_eq!(history_sort(), doc! {"srvModified": 1, "_id": 1});
    }

    #[test]
    fn identifier_filter_matches_legacy_id() {
        let oid = ObjectId::parse_str(OID).unwrap();
        assert_eq!(
            identifier_filter(OID),
            doc! {"$or": [
                {"identifier": {"$eq": OID}},
                {"_id": {"$in": [oid, OID]}, "identifier": {"$exists": false}},
            ]}
        );
        assert_eq!(
            identifier_filter("6e1c4e4e-0c4c-5b3a-9a52-3c1ea8a8b1a1"),
            doc! {"$or": [
                {"identifier": {"$eq": "6e1c4e4e-0c4c-5b3a-9a52-3c1ea8a8b1a1"}},
                {"_id": {"$in": ["6e1c4e4e-0c4c-5b3a-9a52-3c1ea8a8b1a1"]}, "identifier": {"$exists": false}},
            ]}
        );
    }

    #[test]
    fn fallback_filter_requires_no_identifier() {
        assert_eq!(fallback_filter(&[]), None);
        let fields = vec![
            ("date".to_string(), json!(1_525_383_610_088_i64)),
            ("type".to_string(), json!("sgv")),
        ];
        assert_eq!(
            fallback_filter(&fields),
            Some(doc! {
                "date": {"$eq": 1_525_383_610_088_i64},
                "type": {"$eq": "sgv"},
                "identifier": {"$exists": false},
            })
        );
    }

    #[test]
    fn null_equality_kept_for_missing_fields() {
        let filter = Filter {
            field: "notes".into(),
            op: FilterOp::Eq,
            value: FilterValue::Single(Value::Null),
        };
        assert_eq!(
            filter_clause(&filter),
            Some(doc! {"notes": {"$eq": Bson::Null}})
        );
    }
}

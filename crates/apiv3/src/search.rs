//! The APIv3 search query: its model, its parsing from URL query pairs, and an in-memory
//! evaluator (filter matching, sort order, field projection) that follows MongoDB, whose
//! semantics the reference server exposes.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Number, Value};

use crate::date::{iso_utc, parse_date};
use crate::error::ApiError;
use crate::js::{is_blank, number_value, parse_js_number_text};

/// Query parameters that control the search instead of filtering.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "token",
    "sort",
    "sort$desc",
    "limit",
    "skip",
    "fields",
    "now",
];

/// Fields whose filter values are read as dates and compared as epoch milliseconds.
const EPOCH_DATE_FIELDS: &[&str] = &["date", "srvModified", "srvCreated"];

/// Fields that break ties after the sort field, in this order.
const TIE_BREAK_FIELDS: &[&str] = &["identifier", "created_at", "date"];

/// `field$operator`, split as the reference splits it: the field is everything before the
/// last `$` that is followed by letters, and anything after those letters is ignored.
static OPERATOR_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(.*)\$([a-zA-Z]+)").expect("operator pattern is valid"));

/// Max compiled patterns kept per thread by [`compile_pattern`].
const PATTERN_CACHE_SIZE: usize = 64;

thread_local! {
    static PATTERN_CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

/// A comparison operator of a search filter, written `field$op` in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    /// `eq` (also a bare `field=value`): equal.
    Eq,
    /// `ne`: not equal, which also matches documents without the field.
    Ne,
    /// `gt`: greater than.
    Gt,
    /// `gte`: greater than or equal.
    Gte,
    /// `lt`: less than.
    Lt,
    /// `lte`: less than or equal.
    Lte,
    /// `in`: equal to one of the `|`-separated values.
    In,
    /// `nin`: equal to none of the `|`-separated values, which also matches documents
    /// without the field.
    Nin,
    /// `re`: the field is text that the regular expression matches somewhere.
    Re,
}

impl FilterOp {
    /// Parses an operator name as written after `$`, case-sensitively.
    pub fn parse(name: &str) -> Option<FilterOp> {
        let op = match name {
            "eq" => FilterOp::Eq,
            "ne" => FilterOp::Ne,
            "gt" => FilterOp::Gt,
            "gte" => FilterOp::Gte,
            "lt" => FilterOp::Lt,
            "lte" => FilterOp::Lte,
            "in" => FilterOp::In,
            "nin" => FilterOp::Nin,
            "re" => FilterOp::Re,
            _ => return None,
        };
        Some(op)
    }

    /// Returns the operator name as written after `$`.
    pub fn name(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Ne => "ne",
            FilterOp::Gt => "gt",
            FilterOp::Gte => "gte",
            FilterOp::Lt => "lt",
            FilterOp::Lte => "lte",
            FilterOp::In => "in",
            FilterOp::Nin => "nin",
            FilterOp::Re => "re",
        }
    }
}

/// The operand of a search filter.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    /// One value, for `eq`, `ne`, `gt`, `gte`, `lt` and `lte`.
    Single(Value),
    /// Values to compare with, for `in` and `nin`.
    List(Vec<Value>),
    /// Regular expression in the syntax of the `regex` crate, for `re`.
    Pattern(String),
}

/// One condition of a search. A document must match all filters of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Field path, with `.` between the names of nested fields.
    pub field: String,
    /// Comparison operator.
    pub op: FilterOp,
    /// Operand, converted from URL text.
    pub value: FilterValue,
}

/// The sort order that a search requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    /// Field path to sort by.
    pub field: String,
    /// Sort direction: true for `sort$desc`, false for `sort`.
    pub descending: bool,
}

/// A parsed search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Conditions that every returned document meets.
    pub filters: Vec<Filter>,
    /// Requested order, or `None` to sort by the tie-break fields ascending.
    pub sort: Option<SortSpec>,
    /// Max number of documents to return, at least 1.
    pub limit: u32,
    /// Number of matching documents to skip before the first returned one.
    pub skip: u64,
    /// Top-level fields to return, or `None` for all fields.
    pub fields: Option<Vec<String>>,
}

/// Parses one search parameter, `field=value` or `field$op=value`, into a filter.
///
/// Values convert as in the reference: numeric text becomes a number, `true` and `false`
/// become booleans, and text in single quotes is kept as text without the quotes. For
/// `date`, `srvModified` and `srvCreated`, a value in any date form becomes epoch
/// milliseconds, and for `created_at` it becomes ISO text in UTC. A value that does not
/// parse as a date stays as converted before.
///
/// `in` and `nin` split the value on `|` and convert each item the same way, unless the
/// whole value is in single quotes: then the items stay text. `re` keeps the text, without
/// surrounding single quotes, as a pattern.
///
/// Returns 400 `Unsupported filter operator <op>` for an unknown operator, and 400
/// `Invalid regular expression in parameter <name>` for a pattern that the `regex` crate
/// rejects. The reference passes patterns to MongoDB, so such a pattern gives a server
/// error there.
pub fn parse_filter(key: &str, raw: &str) -> Result<Filter, ApiError> {
    let (field, op) = match OPERATOR_SUFFIX.captures(key) {
        Some(captures) => {
            let name = &captures[2];
            let op = FilterOp::parse(name).ok_or_else(|| ApiError::unsupported_operator(name))?;
            (captures[1].to_string(), op)
        }
        None => (key.to_string(), FilterOp::Eq),
    };
    if !is_queryable_field(&field) {
        return Err(ApiError::invalid_field(key));
    }

    let value = match op {
        FilterOp::In | FilterOp::Nin => FilterValue::List(convert_list(&field, raw)),
        FilterOp::Re => {
            let pattern = unquote(raw).unwrap_or(raw);
            compile_pattern(pattern).map_err(|_| ApiError::invalid_pattern(key))?;
            FilterValue::Pattern(pattern.to_string())
        }
        _ => FilterValue::Single(convert_value(&field, raw)),
    };
    Ok(Filter { field, op, value })
}

/// Parses the query pairs of a search request (URL-decoded, in order).
///
/// Pairs named in [`RESERVED_PARAMETERS`] control the search, and every other pair is a filter
/// (see [`parse_filter`]). A reserved parameter given twice takes its last value, and an
/// empty value counts as absent.
///
/// - `sort=f` sorts ascending and `sort$desc=f` descending. Both together give 400
///   `Parameters sort and sort_desc cannot be combined`.
/// - `limit` defaults to `max_limit`. A value that is not a number in 1..=`max_limit` gives
///   400 `Parameter limit out of tolerance`. A fraction is cut off, and a value that is cut to
///   0 is rejected.
/// - `skip` defaults to 0. A value that is not a finite number at least 0 gives 400
///   `Parameter skip out of tolerance`. A fraction is cut off.
/// - `fields=a,b` keeps the listed fields, trimmed. `fields=_all` keeps all.
///
/// Errors are checked in the reference's order: filters, sort, limit, skip.
pub fn parse_search(params: &[(String, String)], max_limit: u32) -> Result<SearchQuery, ApiError> {
    let mut filters = Vec::new();
    let mut reserved: HashMap<&str, &str> = HashMap::new();
    for (key, value) in params {
        if RESERVED_PARAMETERS.contains(&key.as_str()) {
            reserved.insert(key.as_str(), value.as_str());
        } else {
            filters.push(parse_filter(key, value)?);
        }
    }
    let reserved_value = |name: &str| reserved.get(name).copied().filter(|v| !v.is_empty());

    let sort = parse_sort(reserved_value("sort"), reserved_value("sort$desc"))?;
    let limit = parse_limit(reserved_value("limit"), max_limit)?;
    let skip = parse_skip(reserved_value("skip"))?;
    let fields = parse_fields(reserved_value("fields"));
    Ok(SearchQuery {
        filters,
        sort,
        limit,
        skip,
        fields,
    })
}

impl Filter {
    /// Tells whether a document matches this filter, with MongoDB's semantics.
    ///
    /// The field path descends into objects, and into every object of an array on the way
    /// (a numeric part also selects an array element). When the value found is an array,
    /// the filter matches the array itself or any of its elements. Comparisons only match
    /// values of the same type (numbers with numbers, text with text), `ne` and `nin` also
    /// match documents without the field, and `re` matches text only.
    pub fn matches(&self, doc: &Value) -> bool {
        let found = resolve_path(doc, &self.field);
        let candidates = expand_arrays(&found);
        let missing = found.is_empty();

        match (self.op, &self.value) {
            (FilterOp::Eq, FilterValue::Single(value)) => equals_any(&candidates, value, missing),
            (FilterOp::Ne, FilterValue::Single(value)) => !equals_any(&candidates, value, missing),
            (FilterOp::In, FilterValue::List(values)) => values
                .iter()
                .any(|value| equals_any(&candidates, value, missing)),
            (FilterOp::Nin, FilterValue::List(values)) => !values
                .iter()
                .any(|value| equals_any(&candidates, value, missing)),
            (FilterOp::Re, FilterValue::Pattern(pattern)) => matches_pattern(&candidates, pattern),
            (
                op @ (FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte),
                FilterValue::Single(value),
            ) => candidates.iter().any(|candidate| {
                same_type(candidate, value)
                    && comparison_holds(op, compare_values(candidate, value))
            }),
            // parse_filter never pairs an operator with another kind of operand.
            _ => false,
        }
    }
}

/// Orders two documents for a search result: by the sort field, then by `identifier`,
/// `created_at` and `date`, all in the sort's direction. Without a sort, those three
/// fields order ascending.
///
/// Values follow MongoDB's order across types: missing and null, then numbers, text,
/// objects, arrays, booleans. Arrays compare element by element, which differs from MongoDB,
/// where an array sorts by its smallest (ascending) or largest (descending) element.
pub fn compare_documents(a: &Value, b: &Value, sort: Option<&SortSpec>) -> Ordering {
    let descending = sort.is_some_and(|sort| sort.descending);
    let fields = sort
        .map(|sort| sort.field.as_str())
        .into_iter()
        .chain(TIE_BREAK_FIELDS.iter().copied());

    for field in fields {
        let ordering = compare_values(sort_key(a, field), sort_key(b, field));
        let ordering = if descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// Keeps only the listed top-level fields of a document, in the document's order, or
/// copies it whole when `fields` is `None`. A dotted name matches a top-level field
/// of that exact name, as in the reference.
pub fn project(doc: &Map<String, Value>, fields: Option<&[String]>) -> Map<String, Value> {
    let Some(fields) = fields else {
        return doc.clone();
    };
    doc.iter()
        .filter(|(name, _)| fields.iter().any(|field| field == *name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Compares two JSON values in a total order modelled on MongoDB's: null, then numbers
/// (by value, so 5 equals 5.0), text (by UTF-8 bytes), objects (field by field, name then
/// value), arrays (element by element), booleans (false first).
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    let by_type = type_rank(a).cmp(&type_rank(b));
    if by_type != Ordering::Equal {
        return by_type;
    }

    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => compare_sequences(x.iter(), y.iter()),
        (Value::Object(x), Value::Object(y)) => {
            for ((name_x, value_x), (name_y, value_y)) in x.iter().zip(y.iter()) {
                let ordering = name_x
                    .cmp(name_y)
                    .then_with(|| compare_values(value_x, value_y));
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => Ordering::Equal,
    }
}

fn compare_sequences<'a>(
    x: impl ExactSizeIterator<Item = &'a Value>,
    y: impl ExactSizeIterator<Item = &'a Value>,
) -> Ordering {
    let lengths = x.len().cmp(&y.len());
    for (item_x, item_y) in x.zip(y) {
        let ordering = compare_values(item_x, item_y);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    lengths
}

fn type_rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Object(_) => 3,
        Value::Array(_) => 4,
        Value::Bool(_) => 5,
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    type_rank(a) == type_rank(b)
}

fn compare_numbers(x: &Number, y: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return x.cmp(&y);
    }
    let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

fn comparison_holds(op: FilterOp, ordering: Ordering) -> bool {
    match op {
        FilterOp::Gt => ordering == Ordering::Greater,
        FilterOp::Gte => ordering != Ordering::Less,
        FilterOp::Lt => ordering == Ordering::Less,
        FilterOp::Lte => ordering != Ordering::Greater,
        _ => false,
    }
}

/// Tells whether any candidate equals `value`. A null `value` also matches a missing field.
fn equals_any(candidates: &[&Value], value: &Value, missing: bool) -> bool {
    if value.is_null() && missing {
        return true;
    }
    candidates
        .iter()
        .any(|candidate| compare_values(candidate, value) == Ordering::Equal)
}

fn matches_pattern(candidates: &[&Value], pattern: &str) -> bool {
    let Ok(regex) = compile_pattern(pattern) else {
        return false;
    };
    candidates
        .iter()
        .any(|candidate| candidate.as_str().is_some_and(|text| regex.is_match(text)))
}

/// Compiles a pattern, reusing a per-thread cache because [`Filter::matches`] runs once per
/// document.
///
/// NOTE: MongoDB uses PCRE, and the `regex` crate has no look-around or backreferences, so
/// patterns with those are rejected here although the reference accepts them.
fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    PATTERN_CACHE.with(|cache| {
        if let Some(regex) = cache.borrow().get(pattern) {
            return Ok(regex.clone());
        }
        let regex = Regex::new(pattern)?;
        let mut cache = cache.borrow_mut();
        if cache.len() >= PATTERN_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex.clone());
        Ok(regex)
    })
}

/// Collects the values at a dotted path, descending into arrays as MongoDB does.
fn resolve_path<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut found = Vec::new();
    collect_path(doc, &parts, &mut found);
    found
}

fn collect_path<'a>(value: &'a Value, parts: &[&str], found: &mut Vec<&'a Value>) {
    let Some((first, rest)) = parts.split_first() else {
        found.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(child) = map.get(*first) {
                collect_path(child, rest, found);
            }
        }
        Value::Array(items) => {
            if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get(i)) {
                collect_path(item, rest, found);
            }
            for item in items.iter().filter(|item| item.is_object()) {
                collect_path(item, parts, found);
            }
        }
        _ => {}
    }
}

/// Adds the elements of every array among `found` to the candidates, after the array itself.
fn expand_arrays<'a>(found: &[&'a Value]) -> Vec<&'a Value> {
    let mut candidates = Vec::with_capacity(found.len());
    for value in found {
        candidates.push(*value);
        if let Value::Array(items) = value {
            candidates.extend(items.iter());
        }
    }
    candidates
}

/// Returns the first value at a dotted path, or null when there is none.
fn sort_key<'a>(doc: &'a Value, field: &str) -> &'a Value {
    resolve_path(doc, field)
        .into_iter()
        .next()
        .unwrap_or(&Value::Null)
}

/// Strips surrounding single quotes. A lone `'` becomes empty text, as in the reference.
fn unquote(raw: &str) -> Option<&str> {
    if raw == "'" {
        return Some("");
    }
    raw.strip_prefix('\'')?.strip_suffix('\'')
}

fn convert_list(field: &str, raw: &str) -> Vec<Value> {
    if let Some(text) = unquote(raw) {
        return text.split('|').map(Value::from).collect();
    }
    raw.split('|')
        .map(|item| convert_value(field, item))
        .collect()
}

/// Converts one URL value of a filter on `field` (see [`parse_filter`]).
fn convert_value(field: &str, raw: &str) -> Value {
    let value = if let Some(number) = numeric_text(raw) {
        number_value(number)
    } else if raw == "true" {
        Value::Bool(true)
    } else if raw == "false" {
        Value::Bool(false)
    } else {
        Value::from(unquote(raw).unwrap_or(raw))
    };

    if EPOCH_DATE_FIELDS.contains(&field) {
        if let Some(parsed) = parse_date(&value) {
            return Value::from(parsed.epoch_ms);
        }
    } else if field == "created_at"
        && let Some(parsed) = parse_date(&value)
    {
        return Value::from(iso_utc(parsed.epoch_ms));
    }
    value
}

/// Reads decimal numeric text (surrounding whitespace allowed) as a finite number.
fn numeric_text(raw: &str) -> Option<f64> {
    if is_blank(raw) {
        return None;
    }
    Some(parse_js_number_text(raw)).filter(|number| number.is_finite())
}

/// Checks that a field name can be filtered or sorted on. The embedded store's
/// JSON paths cannot carry double quotes, backslashes or control characters.
fn is_queryable_field(field: &str) -> bool {
    !field
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
}

fn parse_sort(
    ascending: Option<&str>,
    descending: Option<&str>,
) -> Result<Option<SortSpec>, ApiError> {
    for (parameter, field) in [("sort", ascending), ("sort$desc", descending)] {
        if field.is_some_and(|field| !is_queryable_field(field)) {
            return Err(ApiError::invalid_field(parameter));
        }
    }
    match (ascending, descending) {
        (Some(_), Some(_)) => Err(ApiError::sort_conflict()),
        (_, Some(field)) => Ok(Some(SortSpec {
            field: field.to_string(),
            descending: true,
        })),
        (Some(field), None) => Ok(Some(SortSpec {
            field: field.to_string(),
            descending: false,
        })),
        (None, None) => Ok(None),
    }
}

fn parse_limit(text: Option<&str>, max_limit: u32) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(max_limit);
    };
    let number = parse_js_number_text(text).trunc();
    if number >= 1.0 && number <= f64::from(max_limit) {
        Ok(number as u32)
    } else {
        Err(ApiError::bad_limit())
    }
}

fn parse_skip(text: Option<&str>) -> Result<u64, ApiError> {
    let Some(text) = text else {
        return Ok(0);
    };
    let number = parse_js_number_text(text);
    if number.is_finite() && number >= 0.0 {
        // `as` saturates at u64::MAX, which skips everything, as such a skip would.
        Ok(number.trunc() as u64)
    } else {
        Err(ApiError::bad_skip())
    }
}

fn parse_fields(text: Option<&str>) -> Option<Vec<String>> {
    match text {
        None | Some("_all") => None,
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAY_3_2018_21_40_10_088_UTC: i64 = 1_525_383_610_088;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn filter(key: &str, raw: &str) -> Filter {
        parse_filter(key, raw).unwrap()
    }

    fn single(key: &str, raw: &str) -> Value {
        match filter(key, raw).value {
            FilterValue::Single(value) => value,
            other => panic!("not a single value: {other:?}"),
        }
    }

    fn bad_request(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.kind.http_status(), 400);
        error.message
    }

    #[test]
    fn filter_bare_key_is_eq() {
        assert_eq!(
            filter("type", "sgv"),
            Filter {
                field: "type".into(),
                op: FilterOp::Eq,
                value: FilterValue::Single(json!("sgv"))
            }
        );
    }

    #[test]
    fn filter_every_operator() {
        for name in ["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "re"] {
            let parsed = filter(&format!("sgv${name}"), "100");
            assert_eq!(parsed.op.name(), name);
            assert_eq!(parsed.field, "sgv");
        }
    }

    #[test]
    fn filter_unknown_operator() {
        assert_eq!(
            bad_request(parse_filter("sgv$foo", "1")),
            "Unsupported filter operator foo"
        );
        assert_eq!(
            bad_request(parse_filter("sgv$GT", "1")),
            "Unsupported filter operator GT"
        );
    }

    #[test]
    fn filter_unqueryable_field() {
        for key in ["a\\", "a\"b", "a\u{0}", "x\u{1f}$gt"] {
            assert_eq!(
                bad_request(parse_filter(key, "1")),
                format!("Invalid field name in parameter {key}")
            );
        }
        let params = pairs(&[("sort", "a\\")]);
        assert_eq!(
            bad_request(parse_search(&params, 1000)),
            "Invalid field name in parameter sort"
        );
    }

    #[test]
    fn filter_key_split_like_reference() {
        // The field ends at the last `$` followed by letters, and later characters are ignored.
        let parsed = filter("a$b$gte", "1");
        assert_eq!((parsed.field.as_str(), parsed.op), ("a$b", FilterOp::Gte));
        let parsed = filter("sgv$gt1", "1");
        assert_eq!((parsed.field.as_str(), parsed.op), ("sgv", FilterOp::Gt));
        let parsed = filter("odd$", "1");
        assert_eq!((parsed.field.as_str(), parsed.op), ("odd$", FilterOp::Eq));
    }

    #[test]
    fn filter_dotted_field_kept() {
        assert_eq!(filter("boluscalc.carbs$gt", "5").field, "boluscalc.carbs");
    }

    #[test]
    fn value_numbers() {
        assert_eq!(single("sgv", "100"), json!(100));
        assert!(single("sgv", "100").is_i64());
        assert_eq!(single("sgv", "-1.5"), json!(-1.5));
        assert_eq!(single("sgv", "1e3"), json!(1000));
        assert_eq!(single("sgv", " 7 "), json!(7));
    }

    #[test]
    fn value_booleans_and_text() {
        assert_eq!(single("isValid", "true"), json!(true));
        assert_eq!(single("isValid", "false"), json!(false));
        assert_eq!(single("isValid", "True"), json!("True"));
        assert_eq!(single("type", "sgv"), json!("sgv"));
        assert_eq!(single("type", ""), json!(""));
        assert_eq!(single("type", "Infinity"), json!("Infinity"));
    }

    #[test]
    fn value_single_quotes_keep_text() {
        assert_eq!(single("sgv", "'100'"), json!("100"));
        assert_eq!(single("flag", "'true'"), json!("true"));
        assert_eq!(single("name", "''"), json!(""));
        assert_eq!(single("name", "'"), json!(""));
        assert_eq!(single("name", "'half"), json!("'half"));
    }

    #[test]
    fn value_epoch_date_fields() {
        for field in ["date", "srvModified", "srvCreated"] {
            assert_eq!(
                single(field, "2018-05-03T21:40:10.088Z"),
                json!(MAY_3_2018_21_40_10_088_UTC),
                "{field}"
            );
            assert_eq!(
                single(&format!("{field}$gte"), "1525383610"),
                json!(1_525_383_610_000_i64),
                "{field} seconds"
            );
        }
        // A value that is no date stays as converted.
        assert_eq!(single("date$gt", "0"), json!(0));
        assert_eq!(single("date", "soon"), json!("soon"));
        // Other fields are not read as dates.
        assert_eq!(
            single("mills", "2018-05-03T21:40:10.088Z"),
            json!("2018-05-03T21:40:10.088Z")
        );
    }

    #[test]
    fn value_created_at_becomes_iso() {
        assert_eq!(
            single("created_at$gte", "2018-05-03T23:40:10.088+02:00"),
            json!("2018-05-03T21:40:10.088Z")
        );
        assert_eq!(
            single("created_at", "1525383610088"),
            json!("2018-05-03T21:40:10.088Z")
        );
        assert_eq!(single("created_at", "x"), json!("x"));
    }

    #[test]
    fn value_in_list() {
        assert_eq!(
            filter("type$in", "sgv|mbg|100").value,
            FilterValue::List(vec![json!("sgv"), json!("mbg"), json!(100)])
        );
        assert_eq!(
            filter("date$nin", "1525383610088|2018-05-03T21:40:10Z").value,
            FilterValue::List(vec![
                json!(MAY_3_2018_21_40_10_088_UTC),
                json!(1_525_383_610_000_i64)
            ])
        );
        assert_eq!(
            filter("sgv$in", "'100|120'").value,
            FilterValue::List(vec![json!("100"), json!("120")])
        );
    }

    #[test]
    fn value_pattern() {
        assert_eq!(
            filter("notes$re", "^Meal.*bolus$").value,
            FilterValue::Pattern("^Meal.*bolus$".into())
        );
        assert_eq!(
            filter("notes$re", "'12'").value,
            FilterValue::Pattern("12".into())
        );
    }

    #[test]
    fn value_invalid_pattern() {
        assert_eq!(
            bad_request(parse_filter("notes$re", "(unclosed")),
            "Invalid regular expression in parameter notes$re"
        );
        assert_eq!(
            bad_request(parse_filter("notes$re", "(?<=x)y")),
            "Invalid regular expression in parameter notes$re"
        );
    }

    #[test]
    fn search_defaults() {
        let query = parse_search(&[], 1000).unwrap();
        assert_eq!(
            query,
            SearchQuery {
                filters: vec![],
                sort: None,
                limit: 1000,
                skip: 0,
                fields: None
            }
        );
    }

    #[test]
    fn search_reserved_are_not_filters() {
        let params = pairs(&[
            ("token", "abc"),
            ("now", "123"),
            ("limit", "3"),
            ("skip", "2"),
            ("sort$desc", "date"),
            ("fields", "date,sgv"),
            ("type", "sgv"),
        ]);
        let query = parse_search(&params, 1000).unwrap();
        assert_eq!(query.filters, vec![filter("type", "sgv")]);
        assert_eq!(query.limit, 3);
        assert_eq!(query.skip, 2);
        assert_eq!(
            query.sort,
            Some(SortSpec {
                field: "date".into(),
                descending: true
            })
        );
        assert_eq!(
            query.fields,
            Some(vec!["date".to_string(), "sgv".to_string()])
        );
    }

    #[test]
    fn search_sort_ascending() {
        let query = parse_search(&pairs(&[("sort", "created_at")]), 10).unwrap();
        assert_eq!(
            query.sort,
            Some(SortSpec {
                field: "created_at".into(),
                descending: false
            })
        );
    }

    #[test]
    fn search_sort_conflict() {
        let params = pairs(&[("sort", "date"), ("sort$desc", "created_at")]);
        assert_eq!(
            bad_request(parse_search(&params, 1000)),
            "Parameters sort and sort_desc cannot be combined"
        );
        // An empty value counts as absent.
        let params = pairs(&[("sort", ""), ("sort$desc", "created_at")]);
        assert!(
            parse_search(&params, 1000)
                .unwrap()
                .sort
                .unwrap()
                .descending
        );
    }

    #[test]
    fn search_limit_bounds() {
        for limit in ["0", "-1", "1001", "INVALID", "0.5", " ", "Infinity"] {
            let params = pairs(&[("limit", limit)]);
            assert_eq!(
                bad_request(parse_search(&params, 1000)),
                "Parameter limit out of tolerance",
                "limit {limit}"
            );
        }
        for (limit, expected) in [("1", 1), ("1000", 1000), ("2.9", 2), ("", 1000)] {
            let params = pairs(&[("limit", limit)]);
            assert_eq!(
                parse_search(&params, 1000).unwrap().limit,
                expected,
                "limit {limit}"
            );
        }
        let params = pairs(&[("limit", "10")]);
        assert_eq!(
            bad_request(parse_search(&params, 5)),
            "Parameter limit out of tolerance"
        );
        assert_eq!(parse_search(&[], 5).unwrap().limit, 5);
    }

    #[test]
    fn search_skip_bounds() {
        for skip in ["-5", "INVALID", "Infinity"] {
            let params = pairs(&[("skip", skip)]);
            assert_eq!(
                bad_request(parse_search(&params, 1000)),
                "Parameter skip out of tolerance",
                "skip {skip}"
            );
        }
        for (skip, expected) in [("0", 0), ("3", 3), ("3.7", 3), ("", 0)] {
            let params = pairs(&[("skip", skip)]);
            assert_eq!(
                parse_search(&params, 1000).unwrap().skip,
                expected,
                "skip {skip}"
            );
        }
    }

    #[test]
    fn search_last_reserved_value_wins() {
        let params = pairs(&[("limit", "5"), ("limit", "7")]);
        assert_eq!(parse_search(&params, 1000).unwrap().limit, 7);
    }

    #[test]
    fn search_fields() {
        let fields = |value: &str| {
            parse_search(&pairs(&[("fields", value)]), 10)
                .unwrap()
                .fields
        };
        assert_eq!(fields("_all"), None);
        assert_eq!(fields(""), None);
        assert_eq!(
            fields("date, app ,subject"),
            Some(vec!["date".into(), "app".into(), "subject".into()])
        );
    }

    #[test]
    fn search_error_order() {
        let params = pairs(&[
            ("limit", "0"),
            ("sgv$foo", "1"),
            ("sort", "a"),
            ("sort$desc", "b"),
        ]);
        assert_eq!(
            bad_request(parse_search(&params, 1000)),
            "Unsupported filter operator foo"
        );
        let params = pairs(&[
            ("skip", "-1"),
            ("limit", "0"),
            ("sort", "a"),
            ("sort$desc", "b"),
        ]);
        assert_eq!(
            bad_request(parse_search(&params, 1000)),
            "Parameters sort and sort_desc cannot be combined"
        );
        let params = pairs(&[("skip", "-1"), ("limit", "0")]);
        assert_eq!(
            bad_request(parse_search(&params, 1000)),
            "Parameter limit out of tolerance"
        );
    }

    #[test]
    fn search_filters_keep_order_and_repeats() {
        let params = pairs(&[("sgv$gt", "100"), ("sgv$lt", "200"), ("type", "sgv")]);
        let query = parse_search(&params, 1000).unwrap();
        assert_eq!(
            query.filters,
            vec![
                filter("sgv$gt", "100"),
                filter("sgv$lt", "200"),
                filter("type", "sgv")
            ]
        );
    }

    fn matches(key: &str, raw: &str, doc: Value) -> bool {
        filter(key, raw).matches(&doc)
    }

    #[test]
    fn match_eq() {
        assert!(matches("type", "sgv", json!({"type": "sgv"})));
        assert!(!matches("type", "sgv", json!({"type": "mbg"})));
        assert!(!matches("type", "sgv", json!({})));
        assert!(matches("sgv", "100", json!({"sgv": 100.0})));
        // Text never equals a number.
        assert!(!matches("sgv", "100", json!({"sgv": "100"})));
        assert!(matches("sgv", "'100'", json!({"sgv": "100"})));
        assert!(matches("isValid", "false", json!({"isValid": false})));
    }

    #[test]
    fn match_eq_null_matches_missing() {
        let null_filter = Filter {
            field: "x".into(),
            op: FilterOp::Eq,
            value: FilterValue::Single(Value::Null),
        };
        assert!(null_filter.matches(&json!({})));
        assert!(null_filter.matches(&json!({"x": null})));
        assert!(!null_filter.matches(&json!({"x": 1})));
    }

    #[test]
    fn match_ne_includes_missing() {
        assert!(matches("type$ne", "sgv", json!({"type": "mbg"})));
        assert!(matches("type$ne", "sgv", json!({})));
        assert!(!matches("type$ne", "sgv", json!({"type": "sgv"})));
        assert!(!matches("tags$ne", "a", json!({"tags": ["a", "b"]})));
    }

    #[test]
    fn match_ranges_same_type_only() {
        let doc = json!({"sgv": 120, "direction": "Flat"});
        assert!(matches("sgv$gt", "100", doc.clone()));
        assert!(!matches("sgv$gt", "120", doc.clone()));
        assert!(matches("sgv$gte", "120", doc.clone()));
        assert!(matches("sgv$lt", "120.5", doc.clone()));
        assert!(!matches("sgv$lt", "120", doc.clone()));
        assert!(matches("sgv$lte", "120", doc.clone()));
        // A number is never greater than text, nor text than a number.
        assert!(!matches("sgv$gt", "'1'", doc.clone()));
        assert!(!matches("direction$gt", "1", doc.clone()));
        assert!(matches("direction$gt", "Down", doc.clone()));
        assert!(!matches("missing$lt", "5", doc));
    }

    #[test]
    fn match_date_range() {
        let doc =
            json!({"date": MAY_3_2018_21_40_10_088_UTC, "created_at": "2018-05-03T21:40:10.088Z"});
        assert!(matches("date$gte", "2018-05-03T21:40:10.088Z", doc.clone()));
        assert!(!matches("date$gt", "2018-05-03T21:40:10.088Z", doc.clone()));
        assert!(matches("created_at$lt", "2018-05-04", doc.clone()));
        assert!(!matches("created_at$lt", "2018-05-03", doc));
    }

    #[test]
    fn match_in_and_nin() {
        let doc = json!({"type": "mbg", "sgv": 100});
        assert!(matches("type$in", "sgv|mbg", doc.clone()));
        assert!(!matches("type$in", "sgv|cal", doc.clone()));
        assert!(matches("sgv$in", "90|100", doc.clone()));
        assert!(!matches("type$nin", "sgv|mbg", doc.clone()));
        assert!(matches("type$nin", "sgv|cal", doc.clone()));
        assert!(matches("missing$nin", "a|b", doc.clone()));
        assert!(!matches("missing$in", "a|b", doc));
    }

    #[test]
    fn match_regex_on_text() {
        let doc = json!({"notes": "Meal bolus", "sgv": 123, "tags": ["x", "pump"]});
        assert!(matches("notes$re", "bolus", doc.clone()));
        assert!(matches("notes$re", "^Meal", doc.clone()));
        assert!(!matches("notes$re", "^bolus", doc.clone()));
        assert!(!matches("sgv$re", "12", doc.clone()));
        assert!(matches("tags$re", "^pu", doc.clone()));
        assert!(!matches("missing$re", ".*", doc));
    }

    #[test]
    fn match_dotted_paths() {
        let doc = json!({
            "boluscalc": {"carbs": 30, "profile": {"name": "Default"}},
            "predBGs": {"IOB": [120, 130]},
            "items": [{"kind": "a", "amount": 1}, {"kind": "b", "amount": 5}]
        });
        assert!(matches("boluscalc.carbs$gte", "30", doc.clone()));
        assert!(matches("boluscalc.profile.name", "Default", doc.clone()));
        assert!(!matches("boluscalc.profile.name.x", "Default", doc.clone()));
        assert!(matches("predBGs.IOB$gt", "125", doc.clone()));
        assert!(matches("predBGs.IOB.1", "130", doc.clone()));
        assert!(matches("items.kind", "b", doc.clone()));
        assert!(matches("items.amount$gt", "4", doc.clone()));
        assert!(!matches("items.amount$gt", "5", doc.clone()));
        assert!(matches("items.0.kind", "a", doc.clone()));
        assert!(!matches("items.1.kind", "a", doc));
    }

    #[test]
    fn compare_values_type_order() {
        let ordered = [
            json!(null),
            json!(-5),
            json!(2.5),
            json!(10),
            json!(""),
            json!("B"),
            json!("a"),
            json!({}),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"b": 0}),
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([2]),
            json!(false),
            json!(true),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_values(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(compare_values(&json!(5), &json!(5.0)), Ordering::Equal);
    }

    #[test]
    fn documents_sort_by_field_then_ties() {
        let sort = SortSpec {
            field: "sgv".into(),
            descending: false,
        };
        let a = json!({"sgv": 100, "identifier": "b"});
        let b = json!({"sgv": 120, "identifier": "a"});
        let c = json!({"sgv": 100, "identifier": "c"});
        assert_eq!(compare_documents(&a, &b, Some(&sort)), Ordering::Less);
        assert_eq!(compare_documents(&a, &c, Some(&sort)), Ordering::Less);

        let descending = SortSpec {
            field: "sgv".into(),
            descending: true,
        };
        assert_eq!(
            compare_documents(&a, &b, Some(&descending)),
            Ordering::Greater
        );
        // Ties break in the same direction as the sort.
        assert_eq!(
            compare_documents(&a, &c, Some(&descending)),
            Ordering::Greater
        );
    }

    #[test]
    fn documents_tie_break_order() {
        let a = json!({"identifier": "x", "created_at": "2018-01-01", "date": 2});
        let b = json!({"identifier": "x", "created_at": "2018-01-01", "date": 1});
        let c = json!({"identifier": "x", "created_at": "2017-01-01", "date": 3});
        assert_eq!(compare_documents(&a, &b, None), Ordering::Greater);
        assert_eq!(compare_documents(&a, &c, None), Ordering::Greater);
        assert_eq!(compare_documents(&a, &a, None), Ordering::Equal);
    }

    #[test]
    fn documents_missing_sort_field_first() {
        let sort = SortSpec {
            field: "sgv".into(),
            descending: false,
        };
        let missing = json!({"identifier": "a"});
        let present = json!({"identifier": "b", "sgv": 0});
        assert_eq!(
            compare_documents(&missing, &present, Some(&sort)),
            Ordering::Less
        );
    }

    #[test]
    fn documents_sort_a_list() {
        let mut docs = [
            json!({"identifier": "c", "date": 3}),
            json!({"identifier": "a", "date": 2}),
            json!({"identifier": "b", "date": 1}),
        ];
        let sort = SortSpec {
            field: "date".into(),
            descending: true,
        };
        docs.sort_by(|a, b| compare_documents(a, b, Some(&sort)));
        let identifiers: Vec<&str> = docs
            .iter()
            .map(|doc| doc["identifier"].as_str().unwrap())
            .collect();
        assert_eq!(identifiers, ["c", "a", "b"]);
        docs.sort_by(|a, b| compare_documents(a, b, None));
        let identifiers: Vec<&str> = docs
            .iter()
            .map(|doc| doc["identifier"].as_str().unwrap())
            .collect();
        assert_eq!(identifiers, ["a", "b", "c"]);
    }

    #[test]
    fn project_fields() {
        let doc = match json!({"date": 1, "app": "x", "sgv": 5, "a.b": 2, "a": {"b": 3}}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        assert_eq!(project(&doc, None), doc);

        let fields = vec!["sgv".to_string(), "date".to_string(), "missing".to_string()];
        let projected = project(&doc, Some(&fields));
        assert_eq!(projected.keys().collect::<Vec<_>>(), ["date", "sgv"]);

        let fields = vec!["a.b".to_string()];
        assert_eq!(
            Value::Object(project(&doc, Some(&fields))),
            json!({"a.b": 2})
        );

        assert!(project(&doc, Some(&[])).is_empty());
    }
}

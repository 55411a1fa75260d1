//! Translation of an APIv3 search into one SQL statement over the `documents` table.
//!
//! Fields copied into indexed columns (`date`, `srvModified`, `created_at`,
//! `identifier`) are compared on those columns; any other field through
//! `json_extract`, with a `json_type` check so that numbers compare only with
//! numbers and text only with text, as MongoDB does. Field paths and values are
//! bound as parameters, never spliced into the SQL text.

use nightjar_apiv3::search::{Filter, FilterOp, FilterValue, SearchQuery};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

/// A SQL fragment and the parameters it binds, in order.
#[derive(Debug, Default, PartialEq)]
pub struct Sql {
    /// SQL text with `?` placeholders.
    pub text: String,
    /// Values for the placeholders.
    pub params: Vec<SqlValue>,
}

/// Location a field is read from: an indexed column or a JSON path.
enum Source {
    /// An indexed column holding numbers (`date`, `srv_modified`).
    NumberColumn(&'static str),
    /// An indexed column holding text (`created_at`, `key`).
    TextColumn(&'static str),
    /// A JSON path into the body.
    Json(String),
}

fn source_of(field: &str) -> Source {
    match field {
        "date" => Source::NumberColumn("date"),
        "srvModified" => Source::NumberColumn("srv_modified"),
        "created_at" => Source::TextColumn("created_at"),
        "identifier" => Source::TextColumn("key"),
        _ => Source::Json(json_path(field)),
    }
}

/// Turns a dotted field name into an SQLite JSON path with every part quoted.
pub fn json_path(field: &str) -> String {
    let mut path = String::from("$");
    for part in field.split('.') {
        path.push_str(".\"");
        path.push_str(&part.replace('"', "\\\""));
        path.push('"');
    }
    path
}

/// Builds the statement for `query` on `collection`, soft-deleted documents excluded.
pub fn search(collection: &str, query: &SearchQuery) -> Sql {
    let mut sql = Sql {
        text:
            "SELECT key, has_identifier, body FROM documents WHERE collection = ? AND is_valid = 1"
                .to_string(),
        params: vec![SqlValue::Text(collection.to_string())],
    };

    for filter in &query.filters {
        sql.text.push_str(" AND ");
        push_filter(&mut sql, filter);
    }

    // The key is unique within a collection, so it settles every tie; the later
    // tie-breakers (created_at, date) can never take effect and are left out.
    let (field, direction) = match &query.sort {
        Some(sort) => (Some(sort.field.as_str()), direction(sort.descending)),
        None => (None, "ASC"),
    };
    sql.text.push_str(" ORDER BY ");
    if let Some(field) = field.filter(|f| *f != "identifier") {
        push_source(&mut sql, &source_of(field));
        sql.text.push_str(&format!(" {direction}, "));
    }
    sql.text
        .push_str(&format!("key {direction} LIMIT ? OFFSET ?"));
    sql.params.push(SqlValue::Integer(i64::from(query.limit)));
    sql.params.push(SqlValue::Integer(
        i64::try_from(query.skip).unwrap_or(i64::MAX),
    ));
    sql
}

fn direction(descending: bool) -> &'static str {
    if descending { "DESC" } else { "ASC" }
}

/// Appends the expression that reads `source`.
fn push_source(sql: &mut Sql, source: &Source) {
    match source {
        Source::NumberColumn(column) | Source::TextColumn(column) => sql.text.push_str(column),
        Source::Json(path) => {
            sql.text.push_str("json_extract(body, ?)");
            sql.params.push(SqlValue::Text(path.clone()));
        }
    }
}

/// Appends one filter as a condition: true, or false or NULL for no match.
fn push_filter(sql: &mut Sql, filter: &Filter) {
    let source = source_of(&filter.field);
    match (&filter.op, &filter.value) {
        (FilterOp::Re, FilterValue::Pattern(pattern)) => push_regexp(sql, &source, pattern),
        (FilterOp::In, FilterValue::List(values)) => push_any_equal(sql, &source, values),
        // A comparison is NULL when the field is missing; only under NOT does that
        // matter (a missing field is "not equal"), so only there is it coalesced,
        // because COALESCE around a column comparison keeps SQLite off its index.
        (FilterOp::Nin, FilterValue::List(values)) => {
            sql.text.push_str("NOT COALESCE(");
            push_any_equal(sql, &source, values);
            sql.text.push_str(", 0)");
        }
        (FilterOp::Ne, FilterValue::Single(value)) => {
            sql.text.push_str("NOT COALESCE(");
            push_comparison(sql, &source, "=", value);
            sql.text.push_str(", 0)");
        }
        (op, FilterValue::Single(value)) => push_comparison(sql, &source, operator(op), value),
        // A list or pattern with another operator cannot come out of the parser;
        // compare with the whole value as text so the query stays well-formed.
        (op, other) => push_comparison(
            sql,
            &source,
            operator(op),
            &Value::String(format!("{other:?}")),
        ),
    }
}

fn operator(op: &FilterOp) -> &'static str {
    match op {
        FilterOp::Gt => ">",
        FilterOp::Gte => ">=",
        FilterOp::Lt => "<",
        FilterOp::Lte => "<=",
        _ => "=",
    }
}

fn push_any_equal(sql: &mut Sql, source: &Source, values: &[Value]) {
    sql.text.push('(');
    if values.is_empty() {
        sql.text.push('0');
    }
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            sql.text.push_str(" OR ");
        }
        push_comparison(sql, source, "=", value);
    }
    sql.text.push(')');
}

fn push_regexp(sql: &mut Sql, source: &Source, pattern: &str) {
    sql.text.push_str("COALESCE(regexp(?, ");
    sql.params.push(SqlValue::Text(pattern.to_string()));
    match source {
        Source::Json(path) => {
            // json_extract of a non-text value gives a number or JSON text; only
            // real strings may match.
            sql.text
                .push_str("CASE WHEN json_type(body, ?) = 'text' THEN json_extract(body, ?) END");
            sql.params.push(SqlValue::Text(path.clone()));
            sql.params.push(SqlValue::Text(path.clone()));
        }
        Source::NumberColumn(column) => sql.text.push_str(&format!("CAST({column} AS TEXT)")),
        Source::TextColumn(column) => sql.text.push_str(column),
    }
    sql.text.push_str("), 0)");
}

/// Appends `field <op> value` with type bracketing: a number never equals text.
fn push_comparison(sql: &mut Sql, source: &Source, op: &str, value: &Value) {
    let bound = match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(("number", SqlValue::Integer(i))),
            None => n.as_f64().map(|f| ("number", SqlValue::Real(f))),
        },
        Value::String(s) => Some(("text", SqlValue::Text(s.clone()))),
        Value::Bool(b) => Some(("bool", SqlValue::Integer(i64::from(*b)))),
        Value::Null => None,
        // Objects and arrays compare by their JSON text.
        other => Some(("json", SqlValue::Text(other.to_string()))),
    };

    match (source, bound) {
        (Source::NumberColumn(column), Some(("number", v))) => {
            sql.text.push_str(&format!("{column} {op} ?"));
            sql.params.push(v);
        }
        (Source::TextColumn(column), Some(("text", v))) => {
            sql.text.push_str(&format!("{column} {op} ?"));
            sql.params.push(v);
        }
        (Source::NumberColumn(column) | Source::TextColumn(column), Some(_)) => {
            // The column holds only one type; a value of another type can still be
            // in the body (a date sent as text, say), so fall back to the JSON path.
            let field = match *column {
                "srv_modified" => "srvModified",
                "key" => "identifier",
                other => other,
            };
            push_comparison(sql, &Source::Json(json_path(field)), op, value);
        }
        (source, None) => push_null_comparison(sql, source, op),
        (Source::Json(path), Some((kind, v))) => {
            let types = match kind {
                "number" => "('integer', 'real')",
                "text" => "('text')",
                "bool" => "('true', 'false')",
                _ => "('object', 'array')",
            };
            let read = if kind == "bool" {
                "(json_type(body, ?) = 'true')"
            } else {
                "json_extract(body, ?)"
            };
            sql.text.push_str(&format!(
                "(json_type(body, ?) IN {types} AND {read} {op} ?)"
            ));
            sql.params.push(SqlValue::Text(path.clone()));
            sql.params.push(SqlValue::Text(path.clone()));
            sql.params.push(v);
        }
    }
}

/// `field = null` matches a missing or null field, as in MongoDB; ordering against
/// null matches only null itself for `>=`/`<=`.
fn push_null_comparison(sql: &mut Sql, source: &Source, op: &str) {
    let is_null = match source {
        Source::NumberColumn(c) | Source::TextColumn(c) => format!("{c} IS NULL"),
        Source::Json(_) => "COALESCE(json_type(body, ?), 'null') = 'null'".to_string(),
    };
    let expression = match op {
        "=" | ">=" | "<=" => is_null,
        _ => "0".to_string(),
    };
    if let (Source::Json(path), true) = (source, expression != "0") {
        sql.params.push(SqlValue::Text(path.clone()));
    }
    sql.text.push_str(&format!("({expression})"));
}

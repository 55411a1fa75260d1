//! APIv3 search (`GET /api/v3/{collection}`): filter operators and value
//! types, sorting, paging, field projection and output formats.

mod common;

use common::Nightjar;
use common::rest::{Api, BASE_DATE, expect_error, expect_status, identifiers, iso_utc};
use serde_json::{Value, json};

/// One fixture entry: identifier, minutes after `BASE_DATE`, sgv, type,
/// device, direction, `meta.source`, `code` (a numeric-looking string) and `flag`.
type Row = (
    &'static str,
    i64,
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

/// The fixture entries in insertion order, which is neither identifier nor sgv order.
const ROWS: [Row; 6] = [
    ("e3", 0, 100, "sgv", "dev-a", "Flat", "cgm", "100", true),
    (
        "e0",
        1,
        110,
        "sgv",
        "dev-b",
        "FortyFiveUp",
        "cgm",
        "110",
        false,
    ),
    (
        "e5",
        2,
        120,
        "sgv",
        "dev-a",
        "FortyFiveDown",
        "manual",
        "120",
        true,
    ),
    (
        "e1", 3, 130, "mbg", "dev-b", "SingleUp", "cgm", "130", false,
    ),
    ("e4", 4, 140, "sgv", "dev-a", "Flat", "manual", "140", false),
    (
        "e2", 5, 150, "mbg", "dev-b", "DoubleUp", "cgm", "150", false,
    ),
];

/// Query filters and the identifiers they must select, in sgv order.
type FilterCase = (Vec<(&'static str, &'static str)>, Vec<&'static str>);

/// Returns the epoch milliseconds of the fixture row `minutes` after `BASE_DATE`.
fn row_date(minutes: i64) -> i64 {
    BASE_DATE + minutes * 60_000
}

/// Stores the fixture entries through `api`.
async fn insert_rows(api: &Api) {
    for (identifier, minutes, sgv, kind, device, direction, source, code, flag) in ROWS {
        let document = json!({
            "identifier": identifier,
            "date": row_date(minutes),
            "sgv": sgv,
            "type": kind,
            "device": device,
            "direction": direction,
            "meta": { "source": source },
            "code": code,
            "flag": flag,
            "app": "nightjar-tests",
        });
        api.create("entries", &document).await;
    }
}

/// Starts a server holding the fixture entries and returns it with an admin client.
async fn server_with_rows() -> (Nightjar, Api) {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    insert_rows(&api).await;
    (server, api)
}

#[tokio::test]
async fn filter_operators() {
    let (_server, api) = server_with_rows().await;
    let minute_3_iso = iso_utc(row_date(3));
    let minute_2_ms = row_date(2).to_string();
    // Each case adds `sort=sgv`, so the expected identifiers are in sgv order.
    let cases: Vec<FilterCase> = vec![
        (vec![("sgv", "120")], vec!["e5"]),
        (vec![("sgv$eq", "120")], vec!["e5"]),
        (vec![("sgv$ne", "120")], vec!["e3", "e0", "e1", "e4", "e2"]),
        (vec![("sgv$gt", "130")], vec!["e4", "e2"]),
        (vec![("sgv$gte", "130")], vec!["e1", "e4", "e2"]),
        (vec![("sgv$lt", "110")], vec!["e3"]),
        (vec![("sgv$lte", "110")], vec!["e3", "e0"]),
        (vec![("sgv$in", "110|140")], vec!["e0", "e4"]),
        (vec![("sgv$nin", "110|140")], vec!["e3", "e5", "e1", "e2"]),
        (vec![("direction$re", "^Forty")], vec!["e0", "e5"]),
        (vec![("direction$re", "Up$")], vec!["e0", "e1", "e2"]),
        (vec![("type", "mbg")], vec!["e1", "e2"]),
        (vec![("device$eq", "dev-a")], vec!["e3", "e5", "e4"]),
        (vec![("identifier$in", "e0|e1")], vec!["e0", "e1"]),
        (vec![("type", "sgv"), ("sgv$gte", "120")], vec!["e5", "e4"]),
        (vec![("sgv", "999")], vec![]),
    ];

    for (filters, expected) in cases {
        let mut query = filters.clone();
        query.push(("sort", "sgv"));
        let found = identifiers(&api.search("entries", &query).await);
        assert_eq!(found, expected, "filters {filters:?}");
    }

    let found = identifiers(
        &api.search("entries", &[("date$gte", &minute_3_iso), ("sort", "sgv")])
            .await,
    );
    assert_eq!(found, ["e1", "e4", "e2"], "date filter with an ISO value");
    let found = identifiers(
        &api.search("entries", &[("date$lt", &minute_2_ms), ("sort", "sgv")])
            .await,
    );
    assert_eq!(found, ["e3", "e0"], "date filter with epoch milliseconds");
}

#[tokio::test]
async fn dotted_path_filters() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(
        &api.search("entries", &[("meta.source", "manual"), ("sort", "sgv")])
            .await,
    );
    assert_eq!(found, ["e5", "e4"]);

    let query = [("meta.source$ne", "manual"), ("sort", "sgv")];
    let found = identifiers(&api.search("entries", &query).await);
    assert_eq!(found, ["e3", "e0", "e1", "e2"]);
}

#[tokio::test]
async fn value_types_in_filters() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(&api.search("entries", &[("code", "'120'")]).await);
    assert_eq!(found, ["e5"], "quoted text matches the stored string");

    let found = identifiers(&api.search("entries", &[("code", "120")]).await);
    assert!(
        found.is_empty(),
        "numeric text is a number and matches no string: {found:?}"
    );

    let found = identifiers(
        &api.search("entries", &[("flag", "true"), ("sort", "sgv")])
            .await,
    );
    assert_eq!(found, ["e3", "e5"]);

    let found = identifiers(
        &api.search("entries", &[("flag", "false"), ("sort", "sgv")])
            .await,
    );
    assert_eq!(found, ["e0", "e1", "e4", "e2"]);
}

#[tokio::test]
async fn created_at_filter_takes_any_date_form() {
    let (_server, api) = server_with_rows().await;
    let minute_2_ms = row_date(2).to_string();
    let minute_4_iso = iso_utc(row_date(4));

    let found = identifiers(
        &api.search(
            "entries",
            &[("created_at$lt", &minute_2_ms), ("sort", "sgv")],
        )
        .await,
    );
    assert_eq!(
        found,
        ["e3", "e0"],
        "epoch milliseconds become an ISO string"
    );

    let found = identifiers(
        &api.search(
            "entries",
            &[("created_at$gte", &minute_4_iso), ("sort", "sgv")],
        )
        .await,
    );
    assert_eq!(found, ["e4", "e2"]);
}

#[tokio::test]
async fn unsupported_operator_is_400() {
    let (_server, api) = server_with_rows().await;

    let reply = api
        .get_query("/api/v3/entries", &[("sgv$like", "120")])
        .await;
    expect_error(&reply, 400, "Unsupported filter operator like");

    let reply = api
        .get_query("/api/v3/entries", &[("sgv$regex", "1")])
        .await;
    expect_error(&reply, 400, "Unsupported filter operator regex");
}

#[tokio::test]
async fn default_order_is_identifier() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(&api.search("entries", &[]).await);

    assert_eq!(found, ["e0", "e1", "e2", "e3", "e4", "e5"]);
}

#[tokio::test]
async fn sort_ascending_and_descending() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(&api.search("entries", &[("sort", "sgv")]).await);
    assert_eq!(found, ["e3", "e0", "e5", "e1", "e4", "e2"]);

    let found = identifiers(&api.search("entries", &[("sort$desc", "sgv")]).await);
    assert_eq!(found, ["e2", "e4", "e1", "e5", "e0", "e3"]);

    let found = identifiers(&api.search("entries", &[("sort$desc", "date")]).await);
    assert_eq!(found, ["e2", "e4", "e1", "e5", "e0", "e3"]);
}

#[tokio::test]
async fn sort_ties_break_on_identifier() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(&api.search("entries", &[("sort", "type")]).await);
    assert_eq!(
        found,
        ["e1", "e2", "e0", "e3", "e4", "e5"],
        "mbg before sgv, identifiers ascending"
    );

    let found = identifiers(&api.search("entries", &[("sort$desc", "type")]).await);
    assert_eq!(
        found,
        ["e5", "e4", "e3", "e0", "e2", "e1"],
        "sgv before mbg, identifiers descending"
    );
}

#[tokio::test]
async fn sort_with_sort_desc_is_400() {
    let (_server, api) = server_with_rows().await;

    let reply = api
        .get_query("/api/v3/entries", &[("sort", "sgv"), ("sort$desc", "date")])
        .await;

    expect_error(
        &reply,
        400,
        "Parameters sort and sort_desc cannot be combined",
    );
}

#[tokio::test]
async fn limit_and_skip() {
    let (_server, api) = server_with_rows().await;

    let found = identifiers(
        &api.search("entries", &[("sort", "sgv"), ("limit", "2")])
            .await,
    );
    assert_eq!(found, ["e3", "e0"]);

    let query = [("sort", "sgv"), ("limit", "2"), ("skip", "2")];
    let found = identifiers(&api.search("entries", &query).await);
    assert_eq!(found, ["e5", "e1"]);

    let found = identifiers(
        &api.search("entries", &[("sort", "sgv"), ("skip", "4")])
            .await,
    );
    assert_eq!(found, ["e4", "e2"]);

    let found = identifiers(&api.search("entries", &[("skip", "6")]).await);
    assert!(found.is_empty(), "skipping every document: {found:?}");

    let found = identifiers(
        &api.search("entries", &[("skip", "0"), ("limit", "1000")])
            .await,
    );
    assert_eq!(found.len(), 6);
}

#[tokio::test]
async fn limit_and_skip_out_of_tolerance() {
    let (_server, api) = server_with_rows().await;

    for limit in ["0", "-1", "abc", "1001"] {
        let reply = api.get_query("/api/v3/entries", &[("limit", limit)]).await;
        assert_eq!(reply.status, 400, "limit {limit}: {}", reply.body);
        expect_error(&reply, 400, "Parameter limit out of tolerance");
    }

    for skip in ["-1", "abc"] {
        let reply = api.get_query("/api/v3/entries", &[("skip", skip)]).await;
        assert_eq!(reply.status, 400, "skip {skip}: {}", reply.body);
        expect_error(&reply, 400, "Parameter skip out of tolerance");
    }
}

#[tokio::test]
async fn max_limit_from_environment() {
    let server = Nightjar::start_with_env(&[("API3_MAX_LIMIT", "5")]);
    let api = Api::admin(&server).await;
    insert_rows(&api).await;

    let found = api.search("entries", &[("limit", "5")]).await;
    assert_eq!(found.len(), 5);

    let reply = api.get_query("/api/v3/entries", &[("limit", "6")]).await;
    expect_error(&reply, 400, "Parameter limit out of tolerance");

    let found = api.search("entries", &[]).await;
    assert_eq!(found.len(), 5, "without `limit` the maximum applies");

    let history = format!("/api/v3/entries/history/{BASE_DATE}");
    let reply = api.get_query(&history, &[("limit", "6")]).await;
    expect_error(&reply, 400, "Parameter limit out of tolerance");
}

#[tokio::test]
async fn fields_projection() {
    let (_server, api) = server_with_rows().await;

    let found = api
        .search("entries", &[("fields", "identifier,sgv"), ("sort", "sgv")])
        .await;

    assert_eq!(identifiers(&found), ["e3", "e0", "e5", "e1", "e4", "e2"]);
    for document in &found {
        assert!(document["sgv"].is_i64(), "sgv kept in {document}");
        assert_eq!(
            document.get("direction"),
            None,
            "direction dropped from {document}"
        );
        assert_eq!(
            document.get("device"),
            None,
            "device dropped from {document}"
        );
        assert_eq!(document.get("meta"), None, "meta dropped from {document}");
    }

    let found = api
        .search("entries", &[("fields", "_all"), ("sort", "sgv")])
        .await;
    assert_eq!(found[0]["direction"], "Flat");
    assert_eq!(found[0]["meta"]["source"], "cgm");
}

#[tokio::test]
async fn soft_deleted_are_excluded() {
    let (_server, api) = server_with_rows().await;
    expect_status(&api.delete("/api/v3/entries/e5").await, 200);

    let found = identifiers(&api.search("entries", &[]).await);
    assert_eq!(found, ["e0", "e1", "e2", "e3", "e4"]);

    let found = identifiers(&api.search("entries", &[("sgv", "120")]).await);
    assert!(found.is_empty(), "the deleted document matched: {found:?}");
}

#[tokio::test]
async fn reserved_parameters_do_not_filter() {
    let (_server, api) = server_with_rows().await;

    let found = api.search("entries", &[("now", "1525383610088")]).await;

    assert_eq!(found.len(), 6);
}

#[tokio::test]
async fn search_other_collections() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let treatment = json!({
        "eventType": "Correction Bolus",
        "insulin": 1.5,
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    });
    api.create("treatments", &treatment).await;

    let found = api
        .search("treatments", &[("eventType", "Correction Bolus")])
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["insulin"], 1.5);

    assert!(
        api.search("entries", &[]).await.is_empty(),
        "collections are separate"
    );
    assert!(api.search("food", &[]).await.is_empty());
}

#[tokio::test]
async fn json_extension_and_accept() {
    let (_server, api) = server_with_rows().await;

    let reply = api
        .get_query("/api/v3/entries.json", &[("sort", "sgv")])
        .await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"].as_array().map(Vec::len), Some(6));

    let reply = api
        .get_with_headers("/api/v3/entries", &[("accept", "application/json")])
        .await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"].as_array().map(Vec::len), Some(6));
}

/// Asserts a CSV body: a header row naming `fields`, then one row per sgv value, in order.
#[track_caller]
fn assert_csv(body: &str, fields: &[&str], sgv_values: &[i64]) {
    let lines: Vec<&str> = body
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        sgv_values.len() + 1,
        "header plus one row per document:\n{body}"
    );
    let header: Vec<String> = lines[0]
        .split(',')
        .map(|name| name.trim_matches('"').to_string())
        .collect();
    for field in fields {
        assert!(
            header.iter().any(|name| name == field),
            "header names {field}: {}",
            lines[0]
        );
    }
    for (line, sgv) in lines[1..].iter().zip(sgv_values) {
        assert!(
            line.contains(&sgv.to_string()),
            "row {line:?} holds sgv {sgv}"
        );
    }
}

#[tokio::test]
async fn csv_extension_and_accept() {
    let (_server, api) = server_with_rows().await;
    let query = [("sort", "sgv"), ("fields", "identifier,sgv")];
    let sgv_values = [100, 110, 120, 130, 140, 150];

    let reply = api.get_query("/api/v3/entries.csv", &query).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.contains("csv"), "content type {content_type}");
    assert_csv(&reply.body, &["identifier", "sgv"], &sgv_values);

    let builder = api
        .request(reqwest::Method::GET, "/api/v3/entries")
        .query(&query)
        .header("accept", "text/csv");
    let reply = api.send(builder).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_csv(&reply.body, &["identifier", "sgv"], &sgv_values);
}

/// The XML declaration that every XML response starts with.
const XML_DECLARATION: &str = "<?xml version='1.0' encoding='utf-8'?>";

#[tokio::test]
async fn xml_extension_and_accept() {
    let (_server, api) = server_with_rows().await;

    let reply = api
        .get_query("/api/v3/entries.xml", &[("sort", "sgv")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.contains("xml"), "content type {content_type}");
    assert!(
        reply.body.starts_with(XML_DECLARATION),
        "XML declaration: {}",
        reply.body
    );
    assert!(
        reply.body.contains("<items>"),
        "list element: {}",
        reply.body
    );
    assert_eq!(
        reply.body.matches("<item>").count(),
        6,
        "one item per document: {}",
        reply.body
    );
    assert!(
        reply.body.contains("<sgv>100</sgv>"),
        "field element: {}",
        reply.body
    );
    assert!(
        reply.body.contains("<identifier>e3</identifier>"),
        "identifier element: {}",
        reply.body
    );

    let reply = api
        .get_with_headers("/api/v3/entries", &[("accept", "application/xml")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.starts_with(XML_DECLARATION),
        "XML declaration: {}",
        reply.body
    );
    assert_eq!(reply.body.matches("<item>").count(), 6);
}

#[tokio::test]
async fn read_in_other_formats() {
    let (_server, api) = server_with_rows().await;

    let reply = api.get("/api/v3/entries/e0.xml").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.starts_with(XML_DECLARATION),
        "XML declaration: {}",
        reply.body
    );
    assert!(reply.body.contains("<item>"), "single item: {}", reply.body);
    assert!(
        !reply.body.contains("<items>"),
        "no list element for one document: {}",
        reply.body
    );
    assert!(
        reply.body.contains("<sgv>110</sgv>"),
        "field element: {}",
        reply.body
    );

    let reply = api
        .get_query("/api/v3/entries/e0.csv", &[("fields", "identifier,sgv")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_csv(&reply.body, &["identifier", "sgv"], &[110]);

    let reply = api.get("/api/v3/entries/e0.json").await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"]["identifier"], "e0");
}

#[tokio::test]
async fn unsupported_format_is_406() {
    let (_server, api) = server_with_rows().await;

    let reply = api
        .get_with_headers("/api/v3/entries", &[("accept", "image/png")])
        .await;
    expect_error(&reply, 406, "Unsupported output format requested");

    let reply = api
        .get_with_headers("/api/v3/entries/e0", &[("accept", "image/png")])
        .await;
    expect_error(&reply, 406, "Unsupported output format requested");
}

#[tokio::test]
async fn response_has_no_etag() {
    let (_server, api) = server_with_rows().await;

    let reply = api.get("/api/v3/entries").await;

    expect_status(&reply, 200);
    assert_eq!(reply.header("etag"), None, "only history sets an ETag");
}

/// Returns the sgv values of `documents`, in order.
fn sgv_values(documents: &[Value]) -> Vec<i64> {
    documents
        .iter()
        .map(|document| document["sgv"].as_i64().unwrap_or(-1))
        .collect()
}

#[tokio::test]
async fn filter_on_number_fields_compares_numbers() {
    let (_server, api) = server_with_rows().await;

    // 99 < 100 numerically but "99" > "100" as text, so a text comparison would fail.
    let found = api
        .search("entries", &[("sgv$gt", "99"), ("sort", "sgv")])
        .await;

    assert_eq!(sgv_values(&found), [100, 110, 120, 130, 140, 150]);
}

//! APIv3 create (`POST /api/v3/{collection}`): response shape and headers,
//! date normalisation, validation messages, identifier calculation and
//! deduplication.

mod common;

use common::Nightjar;
use common::rest::{
    ADMIN_SUBJECT, Api, BASE_DATE, expect_error, expect_status, expected_identifier, int_field,
    now_ms, parse_http_date,
};
use serde_json::{Value, json};

/// Builds an entry with every field that create requires, dated `BASE_DATE`.
fn entry(device: &str, sgv: i64) -> Value {
    json!({
        "type": "sgv",
        "sgv": sgv,
        "date": BASE_DATE,
        "device": device,
        "app": "nightjar-tests",
    })
}

#[tokio::test]
async fn create_returns_201_with_headers() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let before = now_ms();

    let reply = api.post("/api/v3/entries", &entry("dexcom", 120)).await;

    let body = expect_status(&reply, 201);
    let identifier = expected_identifier(Some("dexcom"), BASE_DATE, None);
    assert_eq!(body["identifier"], identifier.as_str());
    assert_eq!(
        body.get("isDeduplication"),
        None,
        "an insert is no deduplication"
    );
    let last_modified = int_field(&body, "lastModified");
    assert!(
        last_modified >= before - 1000,
        "lastModified {last_modified} is before the request ({before})"
    );
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/api/v3/entries/{identifier}").as_str())
    );
    let header = reply.header("last-modified").expect("Last-Modified header");
    assert_eq!(
        parse_http_date(&header),
        last_modified - last_modified % 1000
    );
}

#[tokio::test]
async fn created_document_has_server_fields() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let reply = api.post("/api/v3/entries", &entry("dexcom", 120)).await;
    let body = expect_status(&reply, 201);
    let identifier = body["identifier"].as_str().unwrap().to_string();
    let document = api.read("entries", &identifier).await;

    assert_eq!(document["identifier"], identifier.as_str());
    assert_eq!(
        document.get("_id"),
        None,
        "the database id is never exposed"
    );
    assert_eq!(document["sgv"], 120);
    assert_eq!(document["type"], "sgv");
    assert_eq!(document["device"], "dexcom");
    assert_eq!(document["app"], "nightjar-tests");
    assert_eq!(document["date"], BASE_DATE);
    assert_eq!(document["utcOffset"], 0);
    assert_eq!(document["created_at"], "2018-05-03T21:40:10.088Z");
    assert_eq!(document["subject"], ADMIN_SUBJECT);
    assert_eq!(document["srvModified"], body["lastModified"]);
    assert_eq!(document["srvCreated"], document["srvModified"]);
    assert_ne!(document["isValid"], false);
}

/// One accepted date form and the values that normalisation must produce from it.
struct DateCase {
    name: &'static str,
    date: Value,
    date_ms: i64,
    utc_offset: i64,
    created_at: &'static str,
}

#[tokio::test]
async fn date_forms_are_normalised() {
    let cases = [
        DateCase {
            name: "epoch milliseconds",
            date: json!(1_525_383_610_088_i64),
            date_ms: 1_525_383_610_088,
            utc_offset: 0,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        DateCase {
            name: "epoch seconds",
            date: json!(1_525_383_610),
            date_ms: 1_525_383_610_000,
            utc_offset: 0,
            created_at: "2018-05-03T21:40:10.000Z",
        },
        DateCase {
            name: "numeric string",
            date: json!("1525383610088"),
            date_ms: 1_525_383_610_088,
            utc_offset: 0,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        DateCase {
            name: "ISO with Z",
            date: json!("2018-05-03T21:40:10.088Z"),
            date_ms: 1_525_383_610_088,
            utc_offset: 0,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        DateCase {
            name: "ISO with positive offset",
            date: json!("2018-05-03T23:40:10.088+02:00"),
            date_ms: 1_525_383_610_088,
            utc_offset: 120,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        DateCase {
            name: "ISO with negative offset",
            date: json!("2018-05-03T16:10:10.088-05:30"),
            date_ms: 1_525_383_610_088,
            utc_offset: -330,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        // Without an offset the time is UTC, as moment.parseZone reads it in Nightscout's APIv3.
        DateCase {
            name: "ISO without offset",
            date: json!("2018-05-03T21:40:10.088"),
            date_ms: 1_525_383_610_088,
            utc_offset: 0,
            created_at: "2018-05-03T21:40:10.088Z",
        },
        DateCase {
            name: "RFC 2822",
            date: json!("Thu, 03 May 2018 23:40:10 +0200"),
            date_ms: 1_525_383_610_000,
            utc_offset: 120,
            created_at: "2018-05-03T21:40:10.000Z",
        },
    ];
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for (index, case) in cases.iter().enumerate() {
        // A distinct device per case keeps the computed identifiers apart.
        let device = format!("date-case-{index}");
        let document = json!({
            "type": "sgv",
            "sgv": 100,
            "date": case.date,
            "device": device,
            "app": "nightjar-tests",
        });

        let identifier = api.create("entries", &document).await;
        let stored = api.read("entries", &identifier).await;

        assert_eq!(stored["date"], case.date_ms, "date of case {}", case.name);
        assert_eq!(
            stored["utcOffset"], case.utc_offset,
            "utcOffset of case {}",
            case.name
        );
        assert_eq!(
            stored["created_at"], case.created_at,
            "created_at of case {}",
            case.name
        );
        assert_eq!(
            identifier,
            expected_identifier(Some(&device), case.date_ms, None),
            "identifier of case {}",
            case.name
        );
    }
}

#[tokio::test]
async fn created_at_used_without_date() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let treatment = json!({
        "eventType": "Note",
        "notes": "created_at only",
        "created_at": "2018-05-03T23:40:10.088+02:00",
        "app": "nightjar-tests",
    });

    let identifier = api.create("treatments", &treatment).await;
    let stored = api.read("treatments", &identifier).await;

    assert_eq!(stored["date"], BASE_DATE);
    assert_eq!(stored["utcOffset"], 120);
    assert_eq!(stored["created_at"], "2018-05-03T21:40:10.088Z");
    assert_eq!(
        identifier,
        expected_identifier(None, BASE_DATE, Some("Note"))
    );
}

#[tokio::test]
async fn unparsable_date_falls_back_to_created_at() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let document = json!({
        "type": "sgv",
        "sgv": 90,
        "date": "not a date",
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "fallback",
        "app": "nightjar-tests",
    });

    let identifier = api.create("entries", &document).await;
    let stored = api.read("entries", &identifier).await;

    assert_eq!(stored["date"], BASE_DATE);
    assert_eq!(stored["created_at"], "2018-05-03T21:40:10.088Z");
}

#[tokio::test]
async fn client_utc_offset_is_kept() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let document = json!({
        "type": "sgv",
        "sgv": 90,
        "date": "2018-05-03T23:40:10.088+02:00",
        "utcOffset": 60,
        "device": "offset",
        "app": "nightjar-tests",
    });

    let identifier = api.create("entries", &document).await;
    let stored = api.read("entries", &identifier).await;

    assert_eq!(stored["utcOffset"], 60);
    assert_eq!(stored["date"], BASE_DATE);
}

#[tokio::test]
async fn bad_dates_are_rejected() {
    let cases: [(&str, Value); 6] = [
        ("epoch seconds in 1999", json!(915_148_800)),
        ("ISO in 1999", json!("1999-12-31T23:59:59.999Z")),
        ("RFC 2822 in 1999", json!("Fri, 31 Dec 1999 23:59:59 +0000")),
        ("text", json!("not a date")),
        ("boolean", json!(true)),
        ("object", json!({ "ms": BASE_DATE })),
    ];
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for (name, date) in cases {
        let document = json!({
            "type": "sgv",
            "sgv": 100,
            "date": date,
            "device": "bad-date",
            "app": "nightjar-tests",
        });
        let reply = api.post("/api/v3/entries", &document).await;
        assert_eq!(reply.status, 400, "case {name}: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing date field");
    }

    let undated =
        json!({ "type": "sgv", "sgv": 100, "device": "bad-date", "app": "nightjar-tests" });
    let reply = api.post("/api/v3/entries", &undated).await;
    expect_error(&reply, 400, "Bad or missing date field");

    assert!(
        api.search("entries", &[]).await.is_empty(),
        "no rejected document was stored"
    );
}

#[tokio::test]
async fn utc_offset_bounds() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for (index, offset) in [json!(-1440), json!(0), json!(1440)]
        .into_iter()
        .enumerate()
    {
        let mut document = entry(&format!("offset-{index}"), 100);
        document["utcOffset"] = offset.clone();
        let identifier = api.create("entries", &document).await;
        assert_eq!(api.read("entries", &identifier).await["utcOffset"], offset);
    }

    for offset in [json!(-1441), json!(1441), json!("60"), json!([60])] {
        let mut document = entry("offset-bad", 100);
        document["utcOffset"] = offset.clone();
        let reply = api.post("/api/v3/entries", &document).await;
        assert_eq!(reply.status, 400, "utcOffset {offset}: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing utcOffset field");
    }
}

#[tokio::test]
async fn bad_identifier_is_rejected() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    // NOTE: `""` and `null` are left out. A server may read them as "no identifier" and
    // compute one, and which outcome is right is not settled.
    for identifier in [json!("   "), json!(42), json!(["a"]), json!({ "id": "a" })] {
        let mut document = entry("bad-identifier", 100);
        document["identifier"] = identifier.clone();
        let reply = api.post("/api/v3/entries", &document).await;
        assert_eq!(reply.status, 400, "identifier {identifier}: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing identifier field");
    }
}

#[tokio::test]
async fn bad_app_is_rejected() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let mut missing = entry("bad-app", 100);
    missing.as_object_mut().unwrap().remove("app");
    let reply = api.post("/api/v3/entries", &missing).await;
    expect_error(&reply, 400, "Bad or missing app field");

    for app in [json!(""), json!("  "), json!(7), json!(null)] {
        let mut document = entry("bad-app", 100);
        document["app"] = app.clone();
        let reply = api.post("/api/v3/entries", &document).await;
        assert_eq!(reply.status, 400, "app {app}: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing app field");
    }
}

#[tokio::test]
async fn identifier_computed_per_collection() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let with_device = api.create("entries", &entry("xdrip", 100)).await;
    assert_eq!(
        with_device,
        expected_identifier(Some("xdrip"), BASE_DATE, None)
    );

    let without_device =
        json!({ "type": "sgv", "sgv": 100, "date": BASE_DATE, "app": "nightjar-tests" });
    let identifier = api.create("entries", &without_device).await;
    assert_eq!(identifier, expected_identifier(None, BASE_DATE, None));

    let treatment = json!({
        "eventType": "Meal Bolus",
        "insulin": 2.5,
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "pump-1",
        "app": "nightjar-tests",
    });
    let identifier = api.create("treatments", &treatment).await;
    assert_eq!(
        identifier,
        expected_identifier(Some("pump-1"), BASE_DATE, Some("Meal Bolus"))
    );

    let device_status = json!({
        "device": "openaps://phone",
        "created_at": "2018-05-03T21:40:10.088Z",
        "uploaderBattery": 80,
        "app": "nightjar-tests",
    });
    let identifier = api.create("devicestatus", &device_status).await;
    assert_eq!(
        identifier,
        expected_identifier(Some("openaps://phone"), BASE_DATE, None)
    );
}

#[tokio::test]
async fn client_identifier_is_kept() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("client-id", 100);
    document["identifier"] = json!("my-own-identifier");

    let reply = api.post("/api/v3/entries", &document).await;

    let body = expect_status(&reply, 201);
    assert_eq!(body["identifier"], "my-own-identifier");
    assert_eq!(
        reply.header("location").as_deref(),
        Some("/api/v3/entries/my-own-identifier")
    );
    let stored = api.read("entries", "my-own-identifier").await;
    assert_eq!(stored["identifier"], "my-own-identifier");

    let computed = expected_identifier(Some("client-id"), BASE_DATE, None);
    let reply = api.get(&format!("/api/v3/entries/{computed}")).await;
    expect_status(&reply, 404);
}

#[tokio::test]
async fn object_id_identifier_is_addressable() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let object_id = "5afb6d1c2d8e4a0012345678";
    let mut document = entry("object-id", 100);
    document["identifier"] = json!(object_id);

    assert_eq!(api.create("entries", &document).await, object_id);
    assert_eq!(
        api.read("entries", object_id).await["identifier"],
        object_id
    );
}

#[tokio::test]
async fn same_identifier_deduplicates() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let identifier = api.create("entries", &entry("dedup", 100)).await;
    let first = api.read("entries", &identifier).await;

    // Same device and date, other fields differ: the computed identifier is the same.
    let mut second = entry("dedup", 140);
    second["direction"] = json!("Flat");
    let reply = api.post("/api/v3/entries", &second).await;

    let body = expect_status(&reply, 200);
    assert_eq!(body["identifier"], identifier.as_str());
    assert_eq!(body["isDeduplication"], true);
    assert_eq!(
        body.get("deduplicatedIdentifier"),
        None,
        "the stored identifier was the same"
    );
    assert!(int_field(&body, "lastModified") > int_field(&first, "srvModified"));
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/api/v3/entries/{identifier}").as_str())
    );
    assert!(
        reply.header("last-modified").is_some(),
        "Last-Modified header"
    );

    let stored = api.read("entries", &identifier).await;
    assert_eq!(stored["sgv"], 140, "the document was replaced");
    assert_eq!(stored["direction"], "Flat");
    assert_eq!(
        stored["srvCreated"], first["srvCreated"],
        "srvCreated is kept"
    );
    assert_eq!(stored["srvModified"], body["lastModified"]);
    assert_eq!(api.search("entries", &[]).await.len(), 1);
}

#[tokio::test]
async fn explicit_identifier_deduplicates() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("explicit", 100);
    document["identifier"] = json!("explicit-1");
    api.create("entries", &document).await;

    document["sgv"] = json!(111);
    let reply = api.post("/api/v3/entries", &document).await;

    let body = expect_status(&reply, 200);
    assert_eq!(body["identifier"], "explicit-1");
    assert_eq!(body["isDeduplication"], true);
    assert_eq!(api.read("entries", "explicit-1").await["sgv"], 111);
}

#[tokio::test]
async fn treatment_event_type_separates_identifiers() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let note = json!({
        "eventType": "Note",
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "pump",
        "app": "nightjar-tests",
    });
    let mut correction = note.clone();
    correction["eventType"] = json!("Correction Bolus");
    correction["insulin"] = json!(1);

    let first = api.create("treatments", &note).await;
    let second = api.create("treatments", &correction).await;

    assert_ne!(first, second);
    assert_eq!(api.search("treatments", &[]).await.len(), 2);
}

/// Fallback deduplication only matches stored documents that lack `identifier`,
/// which only older writers leave. Documents written through APIv3 always carry
/// one, so equal fallback keys with different identifiers must both be stored.
#[tokio::test]
async fn fallback_keys_skip_documents_with_identifier() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    // entries: fallback keys date + type.
    let mut first = entry("fallback-a", 100);
    first["identifier"] = json!("entry-one");
    let mut second = entry("fallback-b", 101);
    second["identifier"] = json!("entry-two");
    assert_eq!(api.create("entries", &first).await, "entry-one");
    assert_eq!(api.create("entries", &second).await, "entry-two");
    assert_eq!(api.search("entries", &[]).await.len(), 2);

    // treatments: fallback keys created_at + eventType; the devices make the identifiers differ.
    for device in ["pump-a", "pump-b"] {
        let treatment = json!({
            "eventType": "Temp Basal",
            "created_at": "2018-05-03T21:40:10.088Z",
            "device": device,
            "app": "nightjar-tests",
        });
        let identifier = api.create("treatments", &treatment).await;
        assert_eq!(
            identifier,
            expected_identifier(Some(device), BASE_DATE, Some("Temp Basal"))
        );
    }
    assert_eq!(api.search("treatments", &[]).await.len(), 2);

    // devicestatus: fallback keys created_at + device, here equal, with client identifiers.
    for identifier in ["status-one", "status-two"] {
        let status = json!({
            "identifier": identifier,
            "created_at": "2018-05-03T21:40:10.088Z",
            "device": "uploader",
            "app": "nightjar-tests",
        });
        assert_eq!(api.create("devicestatus", &status).await, identifier);
    }
    assert_eq!(api.search("devicestatus", &[]).await.len(), 2);

    // food: fallback key created_at only.
    for identifier in ["food-one", "food-two"] {
        let food = json!({
            "identifier": identifier,
            "name": identifier,
            "created_at": "2018-05-03T21:40:10.088Z",
            "app": "nightjar-tests",
        });
        assert_eq!(api.create("food", &food).await, identifier);
    }
    assert_eq!(api.search("food", &[]).await.len(), 2);
}

#[tokio::test]
async fn deduplication_checks_immutable_fields() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("immutable", 100);
    document["identifier"] = json!("fixed");
    api.create("entries", &document).await;

    let mut other_date = document.clone();
    other_date["date"] = json!(BASE_DATE + 60_000);
    let reply = api.post("/api/v3/entries", &other_date).await;
    expect_error(&reply, 400, "Field date cannot be modified by the client");

    let mut other_app = document.clone();
    other_app["app"] = json!("another-app");
    let reply = api.post("/api/v3/entries", &other_app).await;
    expect_error(&reply, 400, "Field app cannot be modified by the client");

    let mut other_device = document.clone();
    other_device["device"] = json!("another-device");
    let reply = api.post("/api/v3/entries", &other_device).await;
    expect_error(&reply, 400, "Field device cannot be modified by the client");

    let stored = api.read("entries", "fixed").await;
    assert_eq!(stored["date"], BASE_DATE);
    assert_eq!(stored["app"], "nightjar-tests");
    assert_eq!(stored["device"], "immutable");
}

#[tokio::test]
async fn deduplication_overwrites_soft_deleted() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("revive", 100);
    document["identifier"] = json!("revived");
    api.create("entries", &document).await;
    let reply = api.delete("/api/v3/entries/revived").await;
    expect_status(&reply, 200);

    // The app differs, which the immutable-field check would reject on a live document.
    document["app"] = json!("another-app");
    document["sgv"] = json!(155);
    let reply = api.post("/api/v3/entries", &document).await;

    let body = expect_status(&reply, 200);
    assert_eq!(body["isDeduplication"], true);
    let stored = api.read("entries", "revived").await;
    assert_eq!(stored["sgv"], 155);
    assert_eq!(stored["app"], "another-app");
    assert_ne!(stored["isValid"], false);
}

#[tokio::test]
async fn deduplication_of_read_only_is_422() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("read-only", 100);
    document["isReadOnly"] = json!(true);
    let identifier = api.create("entries", &document).await;

    document["sgv"] = json!(200);
    let reply = api.post("/api/v3/entries", &document).await;

    expect_error(&reply, 422, "Trying to modify read-only document");
    assert_eq!(api.read("entries", &identifier).await["sgv"], 100);
}

#[tokio::test]
async fn treatment_duration_sets_endmills() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let minutes = json!({
        "eventType": "Temp Basal",
        "duration": 30,
        "absolute": 0.5,
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "minutes",
        "app": "nightjar-tests",
    });
    let identifier = api.create("treatments", &minutes).await;
    let stored = api.read("treatments", &identifier).await;
    assert_eq!(stored["endmills"], BASE_DATE + 30 * 60_000);

    let milliseconds = json!({
        "eventType": "Temp Basal",
        "durationInMilliseconds": 90_000,
        "absolute": 0.5,
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "milliseconds",
        "app": "nightjar-tests",
    });
    let identifier = api.create("treatments", &milliseconds).await;
    let stored = api.read("treatments", &identifier).await;
    assert_eq!(stored["endmills"], BASE_DATE + 90_000);

    let mills = json!({
        "eventType": "Temp Basal",
        "duration": 10,
        "mills": BASE_DATE + 5_000,
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "mills",
        "app": "nightjar-tests",
    });
    let identifier = api.create("treatments", &mills).await;
    let stored = api.read("treatments", &identifier).await;
    assert_eq!(
        stored["endmills"],
        BASE_DATE + 5_000 + 10 * 60_000,
        "mills is the start"
    );

    let explicit = json!({
        "eventType": "Temp Basal",
        "duration": 30,
        "endmills": BASE_DATE + 1,
        "created_at": "2018-05-03T21:40:10.088Z",
        "device": "explicit",
        "app": "nightjar-tests",
    });
    let identifier = api.create("treatments", &explicit).await;
    let stored = api.read("treatments", &identifier).await;
    assert_eq!(
        stored["endmills"],
        BASE_DATE + 1,
        "a client endmills is kept"
    );
}

#[tokio::test]
async fn every_collection_accepts_create() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for collection in common::rest::COLLECTIONS {
        let document = json!({
            "created_at": "2018-05-03T21:40:10.088Z",
            "device": format!("{collection}-device"),
            "app": "nightjar-tests",
            "note": collection,
        });
        let reply = api.post(&format!("/api/v3/{collection}"), &document).await;
        let body = expect_status(&reply, 201);
        let identifier = body["identifier"].as_str().expect("identifier").to_string();
        assert_eq!(
            reply.header("location").as_deref(),
            Some(format!("/api/v3/{collection}/{identifier}").as_str()),
            "Location of {collection}"
        );
        assert_eq!(api.read(collection, &identifier).await["note"], collection);
    }
}

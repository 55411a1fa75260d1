//! Markdown tables of the reports in a results directory, Nightjar beside the
//! reference, for `BENCHMARKS.md`.

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::report::Report;

/// Returns the tables for every report found in `results`.
pub fn markdown(results: &Path) -> Result<String, String> {
    let mut out = String::new();

    // 1. Idle.
    let idle = reports(results, "idle")?;
    if !idle.is_empty() {
        out.push_str("| idle | subscribed | still listening after hold | connect time | server RSS | server bytes per connection | server CPU while idle | bench bytes per connection |\n|---|---|---|---|---|---|---|---|\n");
        for report in &idle {
            let r = &report.results;
            let _ = writeln!(
                out,
                "| {} | {} of {} | {} | {:.1} s | {:.0} MiB | {:.0} | {:.3} cores | {:.0} |",
                name(report),
                r["connect"]["subscribed"],
                r["connect"]["requested"],
                r["still_listening_after_hold"],
                number(&r["connect"]["seconds"]),
                number(&r["server_rss_after_hold_bytes"]) / 1048576.0,
                number(&r["server_bytes_per_connection"]),
                number(&r["hold"]["server_cores"]),
                number(&r["bench_bytes_per_connection"]),
            );
        }
        out.push('\n');
    }

    // 2. Fan-out, one row per step.
    let fanout = reports(results, "fanout")?;
    if !fanout.is_empty() {
        out.push_str("| fan-out | writes/s offered | acknowledged/s | events/s delivered | p50 ms | p90 ms | p99 ms | max ms | lost | duplicated | server cores | server µs/event | bench cores | sustained |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for report in &fanout {
            for step in report.results["steps"].as_array().into_iter().flatten() {
                let latency = &step["deliveries"]["latency"];
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
                    name(report),
                    number(&step["rate"]),
                    number(&step["writes"]["acknowledged_per_second"]),
                    number(&step["delivered_per_second"]),
                    number(&latency["p50_ms"]),
                    number(&latency["p90_ms"]),
                    number(&latency["p99_ms"]),
                    number(&latency["max_ms"]),
                    step["deliveries"]["lost"],
                    step["deliveries"]["duplicated"],
                    number(&step["usage"]["server_cores"]),
                    number(&step["server_cpu_us_per_event"]),
                    number(&step["usage"]["bench_cores"]),
                    if step["sustained"] == true {
                        "yes"
                    } else {
                        "no"
                    },
                );
            }
        }
        out.push('\n');
    }

    // 3. Writes, one row per variant.
    let write = reports(results, "write")?;
    if !write.is_empty() {
        out.push_str("| write | transport | subscribers | creates/s | p50 ms | p99 ms | failed | events lost / duplicated | server cores | server µs/create | bench cores |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for report in &write {
            for variant in report.results["variants"].as_array().into_iter().flatten() {
                let events = match &variant["deliveries"] {
                    Value::Null => "-".to_string(),
                    d => format!("{} / {}", d["lost"], d["duplicated"]),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {} | {events} | {:.2} | {:.0} | {:.2} |",
                    name(report),
                    variant["transport"].as_str().unwrap_or("?"),
                    variant["subscribers"],
                    number(&variant["creates_per_second"]),
                    number(&variant["latency"]["p50_ms"]),
                    number(&variant["latency"]["p99_ms"]),
                    variant["failed"],
                    number(&variant["usage"]["server_cores"]),
                    number(&variant["server_cpu_us_per_create"]),
                    number(&variant["usage"]["bench_cores"]),
                );
            }
        }
        out.push('\n');
    }

    // 4. Queries.
    for report in reports(results, "query")? {
        let load = &report.results["store"]["load"];
        let _ = writeln!(
            out,
            "{}: store of {} entries, loaded through gRPC Create at {:.0} creates/s.\n",
            name(&report),
            report.results["store"]["entries"],
            number(&load["rate"])
        );
        out.push_str("| query | requests/s | p50 ms | p90 ms | p99 ms | max ms | failed | server cores |\n|---|---|---|---|---|---|---|---|\n");
        for query in report.results["queries"].as_array().into_iter().flatten() {
            let latency = &query["latency"];
            let _ = writeln!(
                out,
                "| {} {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} |",
                name(&report),
                query["kind"].as_str().unwrap_or("?"),
                number(&query["per_second"]),
                number(&latency["p50_ms"]),
                number(&latency["p90_ms"]),
                number(&latency["p99_ms"]),
                number(&latency["max_ms"]),
                query["failed"],
                number(&query["usage"]["server_cores"]),
            );
        }
        out.push('\n');
    }

    // 5. Catch-up.
    for report in reports(results, "catchup")? {
        out.push_str("| catch-up pass | documents | pages | seconds | documents/s | page p50 ms | page p99 ms | server cores | bench cores |\n|---|---|---|---|---|---|---|---|---|\n");
        for pass in report.results["passes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} |",
                name(&report),
                pass["transport"].as_str().unwrap_or("?"),
                pass["documents"],
                pass["pages"],
                number(&pass["seconds"]),
                number(&pass["documents_per_second"]),
                number(&pass["page_latency"]["p50_ms"]),
                number(&pass["page_latency"]["p99_ms"]),
                number(&pass["usage"]["server_cores"]),
                number(&pass["usage"]["bench_cores"]),
            );
        }
        out.push('\n');
    }
    Ok(out)
}

/// Reads every `<scenario>-*.json` report in `results`, Nightjar's first.
fn reports(results: &Path, scenario: &str) -> Result<Vec<Report>, String> {
    let entries = std::fs::read_dir(results)
        .map_err(|err| format!("cannot read {}: {err}", results.display()))?;
    let prefix = format!("{scenario}-");
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            file.starts_with(&prefix) && file.ends_with(".json")
        })
        .collect();
    paths.sort();
    let mut reports = paths
        .iter()
        .map(|path| Report::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    reports.sort_by_key(|report| (report.target != "nightjar", report.label.clone()));
    Ok(reports)
}

/// Returns the target with its label, such as `nightjar (no-fallback)`.
fn name(report: &Report) -> String {
    match &report.label {
        Some(label) => format!("{} ({label})", report.target),
        None => report.target.clone(),
    }
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

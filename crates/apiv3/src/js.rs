//! JavaScript value conversions that the reference server (Nightscout on Node.js) applies to
//! client JSON, and that identifiers, dates and durations depend on: truthiness,
//! `String(value)` and `Number(value)`.

use serde_json::{Number, Value};

/// Largest integer that a JavaScript number represents exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Tells whether JavaScript treats the value as true in a condition. A missing value is false.
pub(crate) fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(Value::Number(number)) => number.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// Tells whether `c` is in the JavaScript regular expression class `\s`.
pub(crate) fn is_js_whitespace(c: char) -> bool {
    c == '\u{feff}' || (c.is_whitespace() && c != '\u{85}')
}

/// Tells whether the text is empty or only whitespace, as the reference's blank check does.
pub(crate) fn is_blank(text: &str) -> bool {
    text.chars().all(is_js_whitespace)
}

/// Formats a value as JavaScript string conversion does (`String(value)`, `a + '_' + b`).
/// A missing value gives `undefined`.
pub(crate) fn to_js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) => format_js_number(number),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                // Array.prototype.join writes null elements as empty text.
                Value::Null => String::new(),
                other => to_js_string(Some(other)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_string(),
    }
}

/// Formats a JSON number as JavaScript's `Number.prototype.toString` does.
/// Integers beyond 2^53 are first rounded to the nearest double, as `JSON.parse` does.
pub(crate) fn format_js_number(number: &Number) -> String {
    if let Some(integer) = number.as_i64()
        && integer.unsigned_abs() <= MAX_SAFE_INTEGER
    {
        return integer.to_string();
    }
    format_js_double(number.as_f64().unwrap_or(f64::NAN))
}

/// Formats a double as JavaScript does: plain decimal notation for magnitudes in
/// [1e-6, 1e21), otherwise exponent notation with an explicit exponent sign (`1e+21`).
pub(crate) fn format_js_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }

    // Rust's Display and LowerExp both print the shortest digits that round-trip,
    // which is the digit string JavaScript prints too.
    let magnitude = x.abs();
    if (1e-6..1e21).contains(&magnitude) {
        return x.to_string();
    }
    let scientific = format!("{x:e}");
    match scientific.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => scientific,
    }
}

/// Converts a value as JavaScript's `Number(value)` does, with NaN for a missing value.
/// Text is read as a decimal literal or `Infinity`. Hexadecimal, octal and binary literals
/// give NaN here, although JavaScript reads them.
pub(crate) fn to_js_number(value: Option<&Value>) -> f64 {
    match value {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(flag)) => f64::from(u8::from(*flag)),
        Some(Value::Number(number)) => number.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(text)) => parse_js_number_text(text),
        // Number([]) is 0, Number([x]) converts x through its text, and longer arrays are NaN.
        Some(Value::Array(items)) => match items.as_slice() {
            [] => 0.0,
            [item] => parse_js_number_text(&to_js_string(Some(item))),
            _ => f64::NAN,
        },
        Some(Value::Object(_)) => f64::NAN,
    }
}

/// Reads text as JavaScript's `Number(text)` does for decimal literals.
pub(crate) fn parse_js_number_text(text: &str) -> f64 {
    let trimmed = text.trim_matches(is_js_whitespace);
    if trimmed.is_empty() {
        return 0.0;
    }
    match trimmed {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }

    // Rust also accepts `inf` and `nan`, which JavaScript does not.
    let decimal = trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if !decimal {
        return f64::NAN;
    }
    trimmed.parse().unwrap_or(f64::NAN)
}

/// Converts a JavaScript number into JSON: an integer when it has no fraction and
/// fits in i64, otherwise a float. Non-finite numbers become `null`, as in `JSON.stringify`.
pub(crate) fn number_value(x: f64) -> Value {
    // The bound is 2^63. Below it, `as i64` converts an integral float exactly.
    const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if x.fract() == 0.0 && x.abs() < I64_LIMIT {
        return Value::from(x as i64);
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_matches_javascript() {
        assert!(!is_truthy(None));
        assert!(!is_truthy(Some(&json!(null))));
        assert!(!is_truthy(Some(&json!(false))));
        assert!(!is_truthy(Some(&json!(0))));
        assert!(!is_truthy(Some(&json!(0.0))));
        assert!(!is_truthy(Some(&json!(""))));
        assert!(is_truthy(Some(&json!(" "))));
        assert!(is_truthy(Some(&json!(-1))));
        assert!(is_truthy(Some(&json!([]))));
        assert!(is_truthy(Some(&json!({}))));
    }

    #[test]
    fn blank_text_uses_javascript_whitespace() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\n\u{a0}\u{feff}\u{3000}"));
        assert!(!is_blank("\u{85}"));
        assert!(!is_blank(" a "));
    }

    // Expected strings were printed by Node.js 20 with String(value).
    #[test]
    fn string_conversion_matches_node() {
        let cases = [
            (json!(1525383610088_i64), "1525383610088"),
            (json!(123.456), "123.456"),
            (json!(1e21), "1e+21"),
            (json!(1.5e-7), "1.5e-7"),
            (json!(0.000001), "0.000001"),
            (json!(1.7976931348623157e308), "1.7976931348623157e+308"),
            (json!(9223372036854775807_i64), "9223372036854776000"),
            (json!(true), "true"),
            (json!(null), "null"),
            (json!("text"), "text"),
            (json!([1, null, [2, 3]]), "1,,2,3"),
            (json!({"a": 1}), "[object Object]"),
        ];
        for (value, expected) in cases {
            assert_eq!(to_js_string(Some(&value)), expected, "String({value})");
        }
        assert_eq!(to_js_string(None), "undefined");
    }

    #[test]
    fn number_conversion_matches_javascript() {
        assert_eq!(to_js_number(Some(&json!(" 12.5 "))), 12.5);
        assert_eq!(to_js_number(Some(&json!("1e3"))), 1000.0);
        assert_eq!(to_js_number(Some(&json!(""))), 0.0);
        assert_eq!(to_js_number(Some(&json!(null))), 0.0);
        assert_eq!(to_js_number(Some(&json!(true))), 1.0);
        assert_eq!(to_js_number(Some(&json!([]))), 0.0);
        assert_eq!(to_js_number(Some(&json!(["7"]))), 7.0);
        assert_eq!(to_js_number(Some(&json!("Infinity"))), f64::INFINITY);
        assert!(to_js_number(Some(&json!("inf"))).is_nan());
        assert!(to_js_number(Some(&json!("12abc"))).is_nan());
        assert!(to_js_number(Some(&json!({}))).is_nan());
        assert!(to_js_number(None).is_nan());
    }

    #[test]
    fn number_value_prefers_integers() {
        assert_eq!(number_value(5.0), json!(5));
        assert!(number_value(5.0).is_i64());
        assert_eq!(number_value(2.5), json!(2.5));
        assert_eq!(number_value(f64::NAN), json!(null));
    }
}

//! Output formats of read, search and history: the choice by URL extension or `Accept`
//! header, and the CSV and XML renderings. JSON needs no rendering here.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::js::format_js_number;

/// XML declaration that starts every XML response, as the reference writes it.
const XML_DECLARATION: &str = "<?xml version='1.0' encoding='utf-8'?>";

/// Indentation of one nesting level in XML output.
const XML_INDENT: &str = "    ";

/// The representation of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// The `{status, result}` JSON envelope.
    Json,
    /// Comma-separated values with a header row.
    Csv,
    /// XML with an `<item>` or `<items>` root.
    Xml,
}

impl OutputFormat {
    /// Every format, in the order that wins ties in content negotiation.
    const ALL: [OutputFormat; 3] = [OutputFormat::Json, OutputFormat::Csv, OutputFormat::Xml];

    /// Picks the format for a URL extension (`entries.csv`), case-insensitively. Other
    /// extensions give `None`, and the caller then returns [`ApiError::unsupported_format`].
    pub fn from_extension(extension: &str) -> Option<OutputFormat> {
        match extension.to_ascii_lowercase().as_str() {
            "json" => Some(OutputFormat::Json),
            "csv" => Some(OutputFormat::Csv),
            "xml" => Some(OutputFormat::Xml),
            _ => None,
        }
    }

    /// Picks the format for an `Accept` header, as HTTP content negotiation does.
    ///
    /// A missing or blank header gives JSON. Otherwise each format takes the quality (`q`)
    /// of the most specific media range that covers it (`text/csv` before `text/*` before
    /// `*/*`). The highest quality above 0 wins, then the more specific range, then the range
    /// listed first, then JSON, CSV, XML in that order. XML is served for `application/xml`
    /// and `text/xml`. Returns 406 `Unsupported output format requested` when no format is
    /// acceptable.
    pub fn from_accept(accept: Option<&str>) -> Result<OutputFormat, ApiError> {
        let Some(accept) = accept.filter(|header| !header.trim().is_empty()) else {
            return Ok(OutputFormat::Json);
        };
        let ranges: Vec<MediaRange> = accept.split(',').filter_map(MediaRange::parse).collect();

        let mut best: Option<(Preference, OutputFormat)> = None;
        for (format_index, format) in Self::ALL.into_iter().enumerate() {
            let Some(preference) = format.preference(&ranges, format_index) else {
                continue;
            };
            if best.is_none_or(|(current, _)| preference.is_better_than(&current)) {
                best = Some((preference, format));
            }
        }
        best.map(|(_, format)| format)
            .ok_or_else(ApiError::unsupported_format)
    }

    /// Returns the `Content-Type` header value of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json; charset=utf-8",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Xml => "application/xml; charset=utf-8",
        }
    }

    fn media_types(self) -> &'static [(&'static str, &'static str)] {
        match self {
            OutputFormat::Json => &[("application", "json")],
            OutputFormat::Csv => &[("text", "csv")],
            OutputFormat::Xml => &[("application", "xml"), ("text", "xml")],
        }
    }

    /// Finds the client's preference for this format, or `None` when it rejects the format.
    fn preference(self, ranges: &[MediaRange], format_index: usize) -> Option<Preference> {
        let mut best: Option<Preference> = None;
        for (range_index, range) in ranges.iter().enumerate() {
            for &(kind, subtype) in self.media_types() {
                let Some(specificity) = range.specificity(kind, subtype) else {
                    continue;
                };
                let candidate = Preference {
                    quality: range.quality,
                    specificity,
                    range_index,
                    format_index,
                };
                // The most specific range that covers the format decides its quality.
                let more_specific = best.is_none_or(|current| {
                    (specificity, candidate.quality) > (current.specificity, current.quality)
                });
                if more_specific {
                    best = Some(candidate);
                }
            }
        }
        best.filter(|preference| preference.quality > 0.0)
    }
}

/// One media range of an `Accept` header, such as `text/*;q=0.5`.
struct MediaRange {
    /// Type in lower case, or `*` for any.
    kind: String,
    /// Subtype in lower case, or `*` for any.
    subtype: String,
    /// Quality from the `q` parameter, 1 when absent.
    quality: f32,
}

impl MediaRange {
    /// Parses one comma-separated entry. A lone `*` counts as `*/*`, and an entry without a
    /// `/` or with an invalid `q` is skipped.
    fn parse(entry: &str) -> Option<MediaRange> {
        let mut parts = entry.split(';');
        let media = parts.next()?.trim().to_ascii_lowercase();
        let (kind, subtype) = match media.as_str() {
            "*" => ("*".to_string(), "*".to_string()),
            _ => {
                let (kind, subtype) = media.split_once('/')?;
                (kind.trim().to_string(), subtype.trim().to_string())
            }
        };

        let mut quality = 1.0;
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                quality = value.trim().parse::<f32>().ok().filter(|q| q.is_finite())?;
            }
        }
        Some(MediaRange {
            kind,
            subtype,
            quality: quality.clamp(0.0, 1.0),
        })
    }

    /// Returns 2 for an exact match, 1 for `type/*`, 0 for `*/*`, `None` when not covered.
    fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(0),
            (k, "*") if k == kind => Some(1),
            (k, s) if k == kind && s == subtype => Some(2),
            _ => None,
        }
    }
}

/// The strength of a client's preference for one format.
#[derive(Debug, Clone, Copy)]
struct Preference {
    /// Quality of the deciding media range.
    quality: f32,
    /// Specificity of the deciding media range (2 exact, 1 `type/*`, 0 `*/*`).
    specificity: u8,
    /// Position of the deciding range in the header.
    range_index: usize,
    /// Position of the format in [`OutputFormat::ALL`].
    format_index: usize,
}

impl Preference {
    fn is_better_than(&self, other: &Preference) -> bool {
        let key = |p: &Preference| {
            (
                p.specificity,
                std::cmp::Reverse(p.range_index),
                std::cmp::Reverse(p.format_index),
            )
        };
        match self.quality.total_cmp(&other.quality) {
            std::cmp::Ordering::Equal => key(self) > key(other),
            ordering => ordering.is_gt(),
        }
    }
}

/// Renders documents as CSV: a header row with every field name in order of first
/// appearance, then one row per document, each row ending in `\n`.
///
/// Cells follow the reference's CSV writer (csv-stringify): a missing field or `null` is
/// empty, `true` is `1` and `false` is empty, numbers use JavaScript's format, and objects and
/// arrays are JSON text. A cell that contains `,`, `"`, CR or LF is quoted, with inner
/// quotes doubled (RFC 4180). No documents give empty output.
pub fn render_csv(docs: &[Map<String, Value>]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for doc in docs {
        for name in doc.keys() {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }

    let mut output = String::new();
    push_csv_row(&mut output, columns.iter().map(|name| name.to_string()));
    for doc in docs {
        push_csv_row(
            &mut output,
            columns.iter().map(|name| csv_cell(doc.get(*name))),
        );
    }
    output
}

fn push_csv_row(output: &mut String, cells: impl Iterator<Item = String>) {
    for (index, cell) in cells.enumerate() {
        if index > 0 {
            output.push(',');
        }
        if cell.contains([',', '"', '\r', '\n']) {
            output.push('"');
            output.push_str(&cell.replace('"', "\"\""));
            output.push('"');
        } else {
            output.push_str(&cell);
        }
    }
    output.push('\n');
}

fn csv_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => String::new(),
        Some(Value::Bool(true)) => "1".to_string(),
        Some(Value::Number(number)) => format_js_number(number),
        Some(Value::String(text)) => text.clone(),
        Some(nested) => nested.to_string(),
    }
}

/// Renders one document as XML: the declaration, then an `<item>` element with one child
/// element per field. See [`render_xml_items`] for how values and names are written.
pub fn render_xml_item(doc: &Map<String, Value>) -> String {
    let mut output = format!("{XML_DECLARATION}\n");
    push_xml_object(&mut output, "item", doc, 0);
    output
}

/// Renders documents as XML: the declaration, then an `<items>` element that contains one
/// `<item>` per document, each with one child element per field.
///
/// Text, numbers (in JavaScript's format) and booleans become element text, with `&`, `<`,
/// `>` escaped and CR written as `&#13;`. Characters that XML 1.0 forbids become U+FFFD.
/// `null` and empty objects or arrays give an empty element. An object nests its fields as
/// child elements, and an array contains one `<item>` element per entry.
///
/// A field name that is not a valid XML name is rewritten: each character not allowed
/// in a name (`:` included, to keep the output free of namespace prefixes) becomes `_`, and
/// a name that starts with a digit, `-` or `.`, or is empty, gets a leading `_`. So
/// `2nd value` is written as `<_2nd_value>`.
pub fn render_xml_items(docs: &[Map<String, Value>]) -> String {
    let mut output = format!("{XML_DECLARATION}\n");
    if docs.is_empty() {
        output.push_str("<items/>\n");
        return output;
    }
    output.push_str("<items>\n");
    for doc in docs {
        push_xml_object(&mut output, "item", doc, 1);
    }
    output.push_str("</items>\n");
    output
}

fn push_xml_object(output: &mut String, name: &str, fields: &Map<String, Value>, depth: usize) {
    if fields.is_empty() {
        push_xml_line(output, depth, &format!("<{name}/>"));
        return;
    }
    push_xml_line(output, depth, &format!("<{name}>"));
    for (field, value) in fields {
        push_xml_value(output, &xml_name(field), value, depth + 1);
    }
    push_xml_line(output, depth, &format!("</{name}>"));
}

fn push_xml_value(output: &mut String, name: &str, value: &Value, depth: usize) {
    let text = match value {
        Value::Object(fields) => return push_xml_object(output, name, fields, depth),
        Value::Array(items) if items.is_empty() => String::new(),
        Value::Array(items) => {
            push_xml_line(output, depth, &format!("<{name}>"));
            for item in items {
                push_xml_value(output, "item", item, depth + 1);
            }
            push_xml_line(output, depth, &format!("</{name}>"));
            return;
        }
        Value::Null => String::new(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => format_js_number(number),
        Value::String(text) => escape_xml_text(text),
    };
    if text.is_empty() && !value.is_string() {
        push_xml_line(output, depth, &format!("<{name}/>"));
    } else {
        push_xml_line(output, depth, &format!("<{name}>{text}</{name}>"));
    }
}

fn push_xml_line(output: &mut String, depth: usize, line: &str) {
    for _ in 0..depth {
        output.push_str(XML_INDENT);
    }
    output.push_str(line);
    output.push('\n');
}

fn escape_xml_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            // A literal CR would be read back as LF.
            '\r' => escaped.push_str("&#13;"),
            c if is_xml_char(c) => escaped.push(c),
            _ => escaped.push('\u{fffd}'),
        }
    }
    escaped
}

/// Rewrites a field name into a valid XML element name (see [`render_xml_items`]).
fn xml_name(field: &str) -> String {
    let mut name: String = field
        .chars()
        .map(|c| if is_xml_name_char(c) { c } else { '_' })
        .collect();
    if !name.starts_with(is_xml_name_start_char) {
        name.insert(0, '_');
    }
    name
}

/// Tells whether XML 1.0 allows the character in a document (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Tells whether the character may start an XML 1.0 name (production `NameStartChar`,
/// without `:`).
fn is_xml_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{2ff}'
        | '\u{370}'..='\u{37d}' | '\u{37f}'..='\u{1fff}' | '\u{200c}'..='\u{200d}'
        | '\u{2070}'..='\u{218f}' | '\u{2c00}'..='\u{2fef}' | '\u{3001}'..='\u{d7ff}'
        | '\u{f900}'..='\u{fdcf}' | '\u{fdf0}'..='\u{fffd}' | '\u{10000}'..='\u{effff}')
}

/// Tells whether the character may appear in an XML 1.0 name after the first (production
/// `NameChar`, without `:`).
fn is_xml_name_char(c: char) -> bool {
    is_xml_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{b7}' | '\u{300}'..='\u{36f}' | '\u{203f}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn accept(header: &str) -> Result<OutputFormat, ApiError> {
        OutputFormat::from_accept(Some(header))
    }

    #[test]
    fn extension_formats() {
        assert_eq!(
            OutputFormat::from_extension("json"),
            Some(OutputFormat::Json)
        );
        assert_eq!(OutputFormat::from_extension("csv"), Some(OutputFormat::Csv));
        assert_eq!(OutputFormat::from_extension("XML"), Some(OutputFormat::Xml));
        assert_eq!(OutputFormat::from_extension("ttf"), None);
        assert_eq!(OutputFormat::from_extension(""), None);
    }

    #[test]
    fn accept_default_is_json() {
        assert_eq!(OutputFormat::from_accept(None), Ok(OutputFormat::Json));
        assert_eq!(accept(""), Ok(OutputFormat::Json));
        assert_eq!(accept("*/*"), Ok(OutputFormat::Json));
        assert_eq!(accept("*"), Ok(OutputFormat::Json));
        assert_eq!(accept("application/json"), Ok(OutputFormat::Json));
        assert_eq!(
            accept("application/json; charset=utf-8"),
            Ok(OutputFormat::Json)
        );
        assert_eq!(accept("application/*"), Ok(OutputFormat::Json));
    }

    #[test]
    fn accept_csv_and_xml() {
        assert_eq!(accept("text/csv"), Ok(OutputFormat::Csv));
        assert_eq!(accept("TEXT/CSV"), Ok(OutputFormat::Csv));
        assert_eq!(accept("application/xml"), Ok(OutputFormat::Xml));
        assert_eq!(accept("text/xml"), Ok(OutputFormat::Xml));
        assert_eq!(accept("text/*"), Ok(OutputFormat::Csv));
    }

    #[test]
    fn accept_quality_values() {
        assert_eq!(
            accept("application/json;q=0.5, application/xml;q=0.9"),
            Ok(OutputFormat::Xml)
        );
        assert_eq!(accept("text/csv;q=0, */*;q=0.1"), Ok(OutputFormat::Json));
        assert_eq!(accept("*/*;q=0.8, text/csv;q=0"), Ok(OutputFormat::Json));
        assert_eq!(
            accept("text/*;q=0.9, text/csv;q=0.2, text/xml"),
            Ok(OutputFormat::Xml)
        );
        assert_eq!(accept("text/csv;q=0.9, */*;q=0.9"), Ok(OutputFormat::Csv));
    }

    #[test]
    fn accept_order_breaks_ties() {
        assert_eq!(accept("text/csv, application/json"), Ok(OutputFormat::Csv));
        assert_eq!(accept("application/json, text/csv"), Ok(OutputFormat::Json));
        assert_eq!(
            accept("text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"),
            Ok(OutputFormat::Json)
        );
    }

    #[test]
    fn accept_unsupported() {
        for header in [
            "font/ttf",
            "text/html",
            "application/json;q=0",
            "application/json;q=abc",
            "nonsense",
        ] {
            let error = accept(header).unwrap_err();
            assert_eq!(error.kind.http_status(), 406, "{header}");
            assert_eq!(
                error.message, "Unsupported output format requested",
                "{header}"
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            OutputFormat::Json.content_type(),
            "application/json; charset=utf-8"
        );
        assert_eq!(OutputFormat::Csv.content_type(), "text/csv; charset=utf-8");
        assert_eq!(
            OutputFormat::Xml.content_type(),
            "application/xml; charset=utf-8"
        );
    }

    #[test]
    fn csv_header_is_union_of_fields() {
        let docs = [
            object(json!({"identifier": "a", "sgv": 100})),
            object(json!({"identifier": "b", "type": "mbg", "sgv": 90.5})),
        ];
        assert_eq!(
            render_csv(&docs),
            "identifier,sgv,type\na,100,\nb,90.5,mbg\n"
        );
    }

    #[test]
    fn csv_cell_values() {
        let docs = [object(json!({
            "yes": true,
            "no": false,
            "none": null,
            "big": 1e21,
            "nested": {"a": [1, "x"]},
            "list": [1, 2]
        }))];
        assert_eq!(
            render_csv(&docs),
            "yes,no,none,big,nested,list\n1,,,1e+21,\"{\"\"a\"\":[1,\"\"x\"\"]}\",\"[1,2]\"\n"
        );
    }

    #[test]
    fn csv_quoting() {
        let docs = [object(json!({
            "plain": "a b",
            "comma": "a,b",
            "quote": "say \"hi\"",
            "newline": "a\nb",
            "return": "a\rb",
            "with,comma": 1
        }))];
        assert_eq!(
            render_csv(&docs),
            "plain,comma,quote,newline,return,\"with,comma\"\n\
             a b,\"a,b\",\"say \"\"hi\"\"\",\"a\nb\",\"a\rb\",1\n"
        );
    }

    #[test]
    fn csv_empty() {
        assert_eq!(render_csv(&[]), "");
        assert_eq!(render_csv(&[Map::new()]), "");
    }

    #[test]
    fn xml_single_item() {
        let doc =
            object(json!({"identifier": "a", "sgv": 100, "ok": true, "none": null, "text": ""}));
        assert_eq!(
            render_xml_item(&doc),
            "<?xml version='1.0' encoding='utf-8'?>\n\
             <item>\n\
             \x20   <identifier>a</identifier>\n\
             \x20   <sgv>100</sgv>\n\
             \x20   <ok>true</ok>\n\
             \x20   <none/>\n\
             \x20   <text></text>\n\
             </item>\n"
        );
    }

    #[test]
    fn xml_items_list() {
        let docs = [object(json!({"a": 1})), object(json!({"a": 2}))];
        assert_eq!(
            render_xml_items(&docs),
            "<?xml version='1.0' encoding='utf-8'?>\n\
             <items>\n\
             \x20   <item>\n\
             \x20       <a>1</a>\n\
             \x20   </item>\n\
             \x20   <item>\n\
             \x20       <a>2</a>\n\
             \x20   </item>\n\
             </items>\n"
        );
        assert_eq!(
            render_xml_items(&[]),
            "<?xml version='1.0' encoding='utf-8'?>\n<items/>\n"
        );
    }

    #[test]
    fn xml_nested_values() {
        let doc = object(
            json!({"calc": {"carbs": 30}, "bgs": [120, {"v": 1}], "empty": [], "blank": {}}),
        );
        assert_eq!(
            render_xml_item(&doc),
            "<?xml version='1.0' encoding='utf-8'?>\n\
             <item>\n\
             \x20   <calc>\n\
             \x20       <carbs>30</carbs>\n\
             \x20   </calc>\n\
             \x20   <bgs>\n\
             \x20       <item>120</item>\n\
             \x20       <item>\n\
             \x20           <v>1</v>\n\
             \x20       </item>\n\
             \x20   </bgs>\n\
             \x20   <empty/>\n\
             \x20   <blank/>\n\
             </item>\n"
        );
    }

    #[test]
    fn xml_escapes_text() {
        let doc = object(json!({"notes": "a < b && c > d\r\u{1}'\""}));
        assert_eq!(
            render_xml_item(&doc),
            "<?xml version='1.0' encoding='utf-8'?>\n\
             <item>\n\
             \x20   <notes>a &lt; b &amp;&amp; c &gt; d&#13;\u{fffd}'\"</notes>\n\
             </item>\n"
        );
    }

    #[test]
    fn xml_rewrites_invalid_names() {
        let cases = [
            ("2nd value", "_2nd_value"),
            ("ns:name", "ns_name"),
            ("-x", "_-x"),
            (".x", "_.x"),
            ("", "_"),
            ("a<b>", "a_b_"),
            ("délai", "délai"),
            ("_id", "_id"),
            ("a.b-c", "a.b-c"),
        ];
        for (field, expected) in cases {
            assert_eq!(xml_name(field), expected, "{field:?}");
        }
        let doc = object(json!({"2nd value": 1}));
        assert!(render_xml_item(&doc).contains("<_2nd_value>1</_2nd_value>"));
    }
}

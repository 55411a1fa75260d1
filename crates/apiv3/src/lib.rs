//! Nightscout APIv3 rules, free of any wire protocol: collections, date normalisation,
//! identifiers, validation, server-derived fields, search queries and output formats.

pub mod collection;
pub mod date;
pub mod error;
pub mod format;
pub mod identifier;
mod js;
pub mod search;
pub mod server_fields;
pub mod validation;

pub use collection::Collection;
pub use date::{
    MIN_VALID_DATE_MS, ParsedDate, iso_utc, normalize_dates, parse_date, parse_timestamp_text,
};
pub use error::{ApiError, ErrorKind};
pub use format::{OutputFormat, render_csv, render_xml_item, render_xml_items};
pub use identifier::{calculate_identifier, resolve_identifier};
pub use search::{
    Filter, FilterOp, FilterValue, RESERVED_PARAMETERS, SearchQuery, SortSpec, compare_documents,
    compare_values, parse_filter, parse_search, project,
};
pub use server_fields::{fallback_date_ms, fill_server_dates, set_treatment_end};
pub use validation::{
    IMMUTABLE_FIELDS, check_body, check_immutable, is_read_only, validate_document, validate_patch,
};

//! The `regexp(pattern, text)` SQL function behind the `re` search operator.

use regex::Regex;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

/// Registers `regexp` on `connection`; compiled patterns are cached per statement.
pub fn register(connection: &Connection) -> rusqlite::Result<()> {
    connection.create_scalar_function(
        "regexp",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let pattern = context.get_or_create_aux(0, |value| -> Result<Regex, BoxError> {
                Ok(Regex::new(value.as_str()?)?)
            })?;
            let matched = match context.get_raw(1).as_str_or_null()? {
                Some(text) => pattern.is_match(text),
                None => false,
            };
            Ok(matched)
        },
    )
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

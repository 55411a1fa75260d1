//! The six APIv3 collections and their fallback fields.

use std::fmt;

/// One of the collections that APIv3 serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    DeviceStatus,
    Entries,
    Food,
    Profile,
    Settings,
    Treatments,
}

impl Collection {
    /// Every collection, in alphabetical order of its API name.
    pub const ALL: [Collection; 6] = [
        Collection::DeviceStatus,
        Collection::Entries,
        Collection::Food,
        Collection::Profile,
        Collection::Settings,
        Collection::Treatments,
    ];

    /// Returns the API name, as it appears in URLs and events.
    pub fn name(self) -> &'static str {
        match self {
            Collection::DeviceStatus => "devicestatus",
            Collection::Entries => "entries",
            Collection::Food => "food",
            Collection::Profile => "profile",
            Collection::Settings => "settings",
            Collection::Treatments => "treatments",
        }
    }

    /// Parses an API name; unknown names give `None`.
    pub fn parse(name: &str) -> Option<Collection> {
        Collection::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Returns the field that stands in for `srvModified` on documents written without it.
    pub fn fallback_date_field(self) -> Option<&'static str> {
        match self {
            Collection::Entries => Some("date"),
            Collection::Settings => None,
            _ => Some("created_at"),
        }
    }

    /// Returns the fields that identify a duplicate of a document that has no `identifier`.
    /// All of them must be present for the fallback to apply.
    pub fn dedup_fallback_fields(self) -> &'static [&'static str] {
        match self {
            Collection::DeviceStatus => &["created_at", "device"],
            Collection::Entries => &["date", "type"],
            Collection::Food | Collection::Profile => &["created_at"],
            Collection::Settings => &[],
            Collection::Treatments => &["created_at", "eventType"],
        }
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! What an SMS code or a face token is for: a proof for one purpose is no proof for
//! another (a code asked for to view a report cannot delete it).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Purpose {
    SubmitQuery,
    ViewReport,
    /// Deleting a report before its 7 days (the user's right to deletion).
    DeleteReport,
    /// Disputing a reported card ("this card is not mine"): decision 157.
    DisputeCard,
}

impl Purpose {
    pub fn as_str(&self) -> &'static str {
        match self {
            Purpose::SubmitQuery => "SUBMIT_QUERY",
            Purpose::ViewReport => "VIEW_REPORT",
            Purpose::DeleteReport => "DELETE_REPORT",
            Purpose::DisputeCard => "DISPUTE_CARD",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_is_the_stored_name() {
        for p in [
            Purpose::SubmitQuery,
            Purpose::ViewReport,
            Purpose::DeleteReport,
            Purpose::DisputeCard,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}

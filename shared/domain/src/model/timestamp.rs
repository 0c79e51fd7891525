//! Instants on the wire and in storage: RFC 3339 UTC with whole seconds
//! (`2026-11-28T13:20:21Z`), which also sort as strings.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339, UTC, whole seconds.
pub fn format(t: DateTime<Utc>) -> String {
    // `Secs` truncates the fraction (it does not round), as the stored strings always have.
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Any RFC 3339 instant, whatever its offset, as UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// serde adapter: `#[serde(with = "crate::model::timestamp::rfc3339")]`.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::format(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| super::super::parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn instants_are_written_in_utc_with_whole_seconds_and_a_z() {
        let t = crate::test_support::at(2026, 11, 28, 13, 20, 21);
        assert_eq!(format(t), "2026-11-28T13:20:21Z");
        // The fraction is dropped, never rounded up into the next second.
        assert_eq!(
            format(t + TimeDelta::nanoseconds(999_999_999)),
            "2026-11-28T13:20:21Z"
        );
    }

    #[test]
    fn any_offset_parses_to_the_same_instant() {
        let t = crate::test_support::at(2026, 11, 28, 13, 20, 21);
        assert_eq!(parse("2026-11-28T13:20:21Z").unwrap(), t);
        assert_eq!(parse("2026-11-28T21:20:21+08:00").unwrap(), t);
        assert_eq!(
            parse("2026-11-28T13:20:21.5Z").unwrap(),
            t + TimeDelta::milliseconds(500)
        );
        assert!(parse("2026-11-28").is_err());
        assert!(parse("not a time").is_err());
    }
}

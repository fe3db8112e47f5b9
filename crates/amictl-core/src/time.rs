//! Times and durations as amictl writes them: RFC 3339 to the second (`2026-11-29T21:20:56Z`),
//! and durations in the units a person writes (`90d`, `36h`), which read back as they were.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// `2026-11-29T21:20:56Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The longest duration amictl accepts anywhere: ten years. Longer ones are typos (a grace
/// period of 1,000 years) and would overflow date arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Parses `90d`, `12w`, `36h`, `1h 30m`; refuses more than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 90d, 12w or 36h: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than the 10 years amictl accepts"));
    }
    Ok(d)
}

/// A duration in the largest unit that divides it: `90d`, `36h`, `90m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// `#[serde(with = "crate::time::secs")]` for `DateTime<Utc>`.
pub mod secs {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// `#[serde(with = "crate::time::opt_secs")]` for `Option<DateTime<Utc>>`.
pub mod opt_secs {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<DateTime<Utc>>::deserialize(d)
    }
}

/// `#[serde(with = "crate::time::duration")]`: written as [`format_duration`], read with
/// [`parse_duration`] (so a config value over ten years is refused where it is read).
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::time::opt_duration")]`: an optional [`duration`].
pub mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for text in ["90d", "7d", "36h", "90m", "45s", "0s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(parse_duration("12w").unwrap()), "84d");
        assert_eq!(format_duration(parse_duration("1h 30m").unwrap()), "90m");
    }

    #[test]
    fn durations_are_bounded() {
        assert!(parse_duration("10y").is_err() || parse_duration("10y").unwrap() <= MAX_DURATION);
        let err = parse_duration("1000y").unwrap_err();
        assert!(err.contains("10 years"), "{err}");
        assert!(parse_duration("ninety").unwrap_err().contains("ninety"));
    }

    #[test]
    fn times_print_to_the_second() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T21:20:56.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(rfc3339(t), "2026-11-29T21:20:56Z");
    }
}

//! Values the unit tests of the pure analyses share: a fixed clock and a plain image.

use chrono::{DateTime, TimeZone, Utc};

use crate::inventory::Image;

/// The tests' "now".
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
}

/// An available image owned by account `1`, `days` old, with `tags`.
pub fn image(id: &str, days: i64, tags: &[(&str, &str)]) -> Image {
    Image {
        id: id.into(),
        name: format!("{id}-name"),
        owner: "1".into(),
        state: "available".into(),
        creation_date: Some(now() - chrono::Duration::days(days)),
        public: false,
        description: None,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        snapshot_ids: vec![],
        deprecation_time: None,
    }
}

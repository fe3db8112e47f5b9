//! Image families: which AMIs are versions of the same image.

use regex::Regex;
use serde::Serialize;

use crate::inventory::Image;

/// How AMIs are grouped into families. The first rule that matches wins:
/// explicit families (tag value or name pattern), then the value of the first family tag key
/// present, then the `family` group of the fallback name pattern.
#[derive(Debug, Clone)]
pub struct FamilyRules {
    pub explicit: Vec<ExplicitFamily>,
    pub tag_keys: Vec<String>,
    pub name_pattern: Option<Regex>,
}

#[derive(Debug, Clone)]
pub struct ExplicitFamily {
    pub name: String,
    pub tag: Option<(String, String)>,
    pub name_pattern: Option<Regex>,
}

/// How an image was put in its family, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyMatch {
    pub family: String,
    pub by: String,
}

impl FamilyRules {
    /// The family's name alone.
    pub fn name_of(&self, image: &Image) -> Option<String> {
        self.family_of(image).map(|m| m.family)
    }

    pub fn family_of(&self, image: &Image) -> Option<FamilyMatch> {
        for f in &self.explicit {
            let by_tag = f.tag.as_ref().is_some_and(|(k, v)| image.tags.get(k) == Some(v));
            let by_name = f.name_pattern.as_ref().is_some_and(|p| p.is_match(&image.name));
            if by_tag || by_name {
                let by = if by_tag { "family rule (tag)" } else { "family rule (name)" };
                return Some(FamilyMatch { family: f.name.clone(), by: by.into() });
            }
        }
        for key in &self.tag_keys {
            if let Some(v) = image.tags.get(key).filter(|v| !v.is_empty()) {
                return Some(FamilyMatch { family: v.clone(), by: format!("tag {key}") });
            }
        }
        let pattern = self.name_pattern.as_ref()?;
        let caps = pattern.captures(&image.name)?;
        let family = caps.name("family").or_else(|| caps.get(0))?.as_str();
        (!family.is_empty()).then(|| FamilyMatch { family: family.to_string(), by: "name pattern".into() })
    }
}

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

/// Which rule put an image in its family.
enum MatchedBy<'a> {
    RuleTag,
    RuleName,
    Tag(&'a str),
    NamePattern,
}

impl FamilyRules {
    /// The family's name alone.
    pub fn name_of(&self, image: &Image) -> Option<String> {
        self.family_name(image).map(str::to_string)
    }

    /// The family's name, borrowed from the rule or the image (the planner asks for a million
    /// of these).
    pub fn family_name<'a>(&'a self, image: &'a Image) -> Option<&'a str> {
        self.matched(image).map(|(family, _)| family)
    }

    pub fn family_of(&self, image: &Image) -> Option<FamilyMatch> {
        let (family, by) = self.matched(image)?;
        let by = match by {
            MatchedBy::RuleTag => "family rule (tag)".to_string(),
            MatchedBy::RuleName => "family rule (name)".to_string(),
            MatchedBy::Tag(key) => format!("tag {key}"),
            MatchedBy::NamePattern => "name pattern".to_string(),
        };
        Some(FamilyMatch { family: family.to_string(), by })
    }

    fn matched<'a>(&'a self, image: &'a Image) -> Option<(&'a str, MatchedBy<'a>)> {
        for f in &self.explicit {
            let by_tag = f.tag.as_ref().is_some_and(|(k, v)| image.tags.get(k) == Some(v));
            let by_name = f.name_pattern.as_ref().is_some_and(|p| p.is_match(&image.name));
            if by_tag || by_name {
                return Some((&f.name, if by_tag { MatchedBy::RuleTag } else { MatchedBy::RuleName }));
            }
        }
        for key in &self.tag_keys {
            if let Some(v) = image.tags.get(key).filter(|v| !v.is_empty()) {
                return Some((v, MatchedBy::Tag(key)));
            }
        }
        let pattern = self.name_pattern.as_ref()?;
        let caps = pattern.captures(&image.name)?;
        let family = caps.name("family").or_else(|| caps.get(0))?.as_str();
        (!family.is_empty()).then_some((family, MatchedBy::NamePattern))
    }
}

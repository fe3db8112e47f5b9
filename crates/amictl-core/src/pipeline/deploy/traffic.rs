//! Traffic between blue and green target groups, as forward actions (pure).
//!
//! Only the forward action's target groups and weights change: the other actions, a rule's
//! conditions and the forward's stickiness stay as they are. Every form is computed from the
//! route's *original* forward (journaled before the first change), so a resumed or undone run
//! never takes a half-shifted state for the original.

use crate::aws::{Forward, ForwardConfig, WeightedTargetGroup};

/// `(blue target group ARN, green target group ARN)` pairs.
pub type Twins = [(String, String)];

/// The largest weight ELBv2 takes.
const MAX_WEIGHT: i32 = 999;

/// Both colours in the forward, green carrying `green_percent` of what blue carried (0: green
/// attached at weight 0, so its targets are health checked; 100: blue still attached at weight
/// 0). Other target groups keep their share.
pub fn split(original: &Forward, twins: &Twins, green_percent: u8) -> Forward {
    let weights = original.weights();
    let max = weights.iter().map(|(_, w)| *w).max().unwrap_or(1).max(1);
    // Scale every weight up so a percentage of the smallest still has room to be split.
    let scale = (MAX_WEIGHT / max).clamp(1, 100);
    let mut groups = Vec::new();
    for (arn, w) in weights {
        let w = w * scale;
        match twins.iter().find(|(blue, _)| *blue == arn) {
            Some((blue, green)) => {
                let to_green = (w * green_percent as i32 + 50) / 100;
                groups.push(WeightedTargetGroup { arn: blue.clone(), weight: Some(w - to_green) });
                groups.push(WeightedTargetGroup { arn: green.clone(), weight: Some(to_green) });
            }
            None => groups.push(WeightedTargetGroup { arn, weight: Some(w) }),
        }
    }
    let stickiness = original.config.as_ref().and_then(|c| c.stickiness.clone());
    Forward { target_group_arn: None, config: Some(ForwardConfig { target_groups: groups, stickiness }) }
}

/// The original forward with every blue target group replaced by its green twin, in the same
/// form (plain or weighted) and with the same weights: what the route has once green serves.
pub fn switched(original: &Forward, twins: &Twins) -> Forward {
    let green = |arn: &String| twins.iter().find(|(b, _)| b == arn).map(|(_, g)| g.clone()).unwrap_or(arn.clone());
    Forward {
        target_group_arn: original.target_group_arn.as_ref().map(green),
        config: original.config.as_ref().map(|c| ForwardConfig {
            target_groups: c
                .target_groups
                .iter()
                .map(|t| WeightedTargetGroup { arn: green(&t.arn), weight: t.weight })
                .collect(),
            stickiness: c.stickiness.clone(),
        }),
    }
}

/// How many target groups the forward names once green twins are added (ELBv2 takes at most 5).
pub fn width_with_twins(original: &Forward, twins: &Twins) -> usize {
    let w = original.weights();
    w.len() + w.iter().filter(|(arn, _)| twins.iter().any(|(b, _)| b == arn)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Stickiness;

    fn plain(arn: &str) -> Forward {
        Forward {
            target_group_arn: Some(arn.into()),
            config: Some(ForwardConfig {
                target_groups: vec![WeightedTargetGroup { arn: arn.into(), weight: Some(1) }],
                stickiness: Some(Stickiness { enabled: Some(false), duration_seconds: None }),
            }),
        }
    }

    fn weights(f: &Forward) -> Vec<(String, i32)> {
        f.weights()
    }

    #[test]
    fn a_plain_forward_splits_by_percent_and_switches_to_the_same_form() {
        let twins = [("blue".to_string(), "green".to_string())];
        let f = plain("blue");
        assert_eq!(weights(&split(&f, &twins, 0)), vec![("blue".into(), 100), ("green".into(), 0)]);
        assert_eq!(weights(&split(&f, &twins, 25)), vec![("blue".into(), 75), ("green".into(), 25)]);
        assert_eq!(weights(&split(&f, &twins, 100)), vec![("blue".into(), 0), ("green".into(), 100)]);
        let s = split(&f, &twins, 25);
        assert_eq!(s.target_group_arn, None, "two target groups only in ForwardConfig");
        assert_eq!(s.config.unwrap().stickiness, f.config.as_ref().unwrap().stickiness);
        assert_eq!(switched(&f, &twins), plain("green"));
    }

    #[test]
    fn other_target_groups_keep_their_share() {
        let twins = [("blue".to_string(), "green".to_string())];
        let f = Forward {
            target_group_arn: None,
            config: Some(ForwardConfig {
                target_groups: vec![
                    WeightedTargetGroup { arn: "blue".into(), weight: Some(3) },
                    WeightedTargetGroup { arn: "other".into(), weight: Some(1) },
                ],
                stickiness: None,
            }),
        };
        let w = weights(&split(&f, &twins, 50));
        assert_eq!(w, vec![("blue".into(), 150), ("green".into(), 150), ("other".into(), 100)]);
        assert_eq!(width_with_twins(&f, &twins), 3);
        let s = switched(&f, &twins);
        assert_eq!(weights(&s), vec![("green".into(), 3), ("other".into(), 1)]);
    }

    #[test]
    fn large_weights_are_not_scaled_past_the_limit() {
        let twins = [("blue".to_string(), "green".to_string())];
        let f = Forward {
            target_group_arn: None,
            config: Some(ForwardConfig {
                target_groups: vec![WeightedTargetGroup { arn: "blue".into(), weight: Some(999) }],
                stickiness: None,
            }),
        };
        let w = weights(&split(&f, &twins, 5));
        assert_eq!(w, vec![("blue".into(), 949), ("green".into(), 50)]);
        assert!(w.iter().all(|(_, w)| *w <= MAX_WEIGHT));
    }
}

//! Settings checks shared by the stages and the daemon's configuration.
//!
//! Each stage's settings type is also its configuration section (serde, with defaults and a
//! doc comment per field) and states its ranges once, in an `issues` method that reports every
//! value out of range into an [`Issues`] collector, keyed relative to the section. The daemon's
//! configuration check calls it under the section's name (`track.iou_threshold`); the stage's
//! constructor calls it too and refuses bad settings with a [`SettingsError`], so a setting is
//! checked by the same code wherever it comes from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One setting out of range (or a rule between settings broken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingIssue {
    /// The dotted key (`track.iou_threshold`); empty for the document as a whole.
    pub key: String,
    /// What is wrong, and what would be right.
    pub reason: String,
}

impl fmt::Display for SettingIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Settings a stage refused, every problem named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError(pub Vec<SettingIssue>);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects [`SettingIssue`]s under a key prefix.
#[derive(Debug, Default)]
pub struct Issues {
    prefix: String,
    list: Vec<SettingIssue>,
}

impl Issues {
    /// Records that `field` (relative to the current section) is wrong.
    pub fn push(&mut self, field: &str, reason: impl Into<String>) {
        let key = match (self.prefix.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{field}", self.prefix),
        };
        self.list.push(SettingIssue {
            key,
            reason: reason.into(),
        });
    }

    /// Runs `check` with keys prefixed by `name`.
    pub fn section(&mut self, name: &str, check: impl FnOnce(&mut Issues)) {
        let outer = self.prefix.clone();
        self.prefix = if outer.is_empty() {
            name.to_owned()
        } else {
            format!("{outer}.{name}")
        };
        check(self);
        self.prefix = outer;
    }

    /// `min <= value <= max` (false for NaN).
    pub fn range<T: PartialOrd + fmt::Display>(&mut self, field: &str, value: T, min: T, max: T) {
        if !(value >= min && value <= max) {
            self.push(
                field,
                format!("is {value}; it must be between {min} and {max}"),
            );
        }
    }

    /// `value <= max`.
    pub fn at_most<T: PartialOrd + fmt::Display>(&mut self, field: &str, value: T, max: T) {
        use std::cmp::Ordering::{Equal, Less};
        if !matches!(value.partial_cmp(&max), Some(Less | Equal)) {
            self.push(field, format!("is {value}; at most {max}"));
        }
    }

    /// `value` is finite, above 0 and at most `max`: `(0, max]`.
    pub fn positive_up_to(&mut self, field: &str, value: f64, max: f64) {
        if !(value.is_finite() && value > 0.0 && value <= max) {
            self.push(field, format!("is {value}; it must be in (0, {max}]"));
        }
    }

    /// The issues so far.
    pub fn list(&self) -> &[SettingIssue] {
        &self.list
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The issues, keys and all.
    pub fn into_vec(self) -> Vec<SettingIssue> {
        self.list
    }
}

/// Runs a stage's `issues` check: `Ok` if it found nothing.
pub fn check(issues: impl FnOnce(&mut Issues)) -> Result<(), SettingsError> {
    let mut v = Issues::default();
    issues(&mut v);
    if v.is_empty() {
        Ok(())
    } else {
        Err(SettingsError(v.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_by_their_sections() {
        let mut v = Issues::default();
        v.section("detect", |v| {
            v.section("blaze", |v| v.range("nms_iou", 1.5, 0.0, 1.0));
            v.at_most("x", 3, 2);
        });
        v.positive_up_to("rate", f64::NAN, 60.0);
        let keys: Vec<&str> = v.list().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["detect.blaze.nms_iou", "detect.x", "rate"]);
        let err = check(|v| v.push("a", "bad")).unwrap_err();
        assert_eq!(err.to_string(), "a: bad");
        assert!(check(|_| {}).is_ok());
    }
}

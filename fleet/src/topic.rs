//! Topics of the fleet: `caer/<site>/<device>/<leaf>`, as the device names them
//! ([`caer::daemon::config::Topics`]).

use caer::daemon::config::is_topic_name;

/// The first level of every device topic.
pub const ROOT: &str = "caer";

/// A device topic taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopic {
    /// `device.site`.
    pub site: String,
    /// `device.id`.
    pub device: String,
    /// What follows: `engagement`, `status`, `stats`, `config/ack`, ...
    pub leaf: String,
}

/// Parses `caer/<site>/<device>/<leaf>`; the site and device must be valid names (the
/// device's own rule), so that nothing else is ever stored under a device's name.
pub fn parse(topic: &str) -> Result<DeviceTopic, String> {
    let mut parts = topic.splitn(4, '/');
    let (root, site, device, leaf) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(ROOT), Some(site), Some(device), Some(leaf)) = (root, site, device, leaf) else {
        return Err(format!(
            "topic {topic:?} is not caer/<site>/<device>/<leaf>"
        ));
    };
    for (what, name) in [("site", site), ("device id", device)] {
        if !is_topic_name(name) {
            return Err(format!(
                "topic {topic:?}: the {what} {name:?} is not a valid name (1 to 64 of A-Z a-z 0-9 . _ -)"
            ));
        }
    }
    Ok(DeviceTopic {
        site: site.to_string(),
        device: device.to_string(),
        leaf: leaf.to_string(),
    })
}

/// `caer/<site>/<device>/<leaf>`.
pub fn device_topic(site: &str, device: &str, leaf: &str) -> String {
    format!("{ROOT}/{site}/{device}/{leaf}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics_are_taken_apart_and_bad_names_refused() {
        let t = parse("caer/school-1/caer-0001/config/ack").unwrap();
        assert_eq!(
            (t.site.as_str(), t.device.as_str(), t.leaf.as_str()),
            ("school-1", "caer-0001", "config/ack")
        );
        assert!(parse("caer/school-1/bad id/engagement").is_err());
        assert!(parse("caer/school-1/engagement").is_err());
        assert!(parse("other/s/d/engagement").is_err());
        assert!(parse("caer//d/engagement").is_err());
    }
}

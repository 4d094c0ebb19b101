//! The MQTT sink's settings: the `[mqtt]` section of `caerd`'s configuration (checked without
//! I/O) and what it resolves to once the password and TLS files are read.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};

use super::{CONTROL_SLOTS, MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET};
use crate::daemon::config::{Topics, ValidatedConfig};
use crate::pipeline::settings::Issues;

/// The MQTT broker: the `[mqtt]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (TLS, port 8883).
    /// None: no broker; every payload is written to stdout as one JSON line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// MQTT client id; none: `caerd-<site>-<device id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name, if the broker wants credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored). Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password (instead of `password_file`). Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// PEM file of the CA certificates that sign the broker's certificate; required with
    /// `mqtts://` (e.g. `/etc/ssl/certs/ca-certificates.crt` for public CAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Keep-alive in seconds, 5 to 3600.
    pub keep_alive_secs: NonZeroU16,
    /// Engagement records published and not yet acknowledged at once, 1 to 64.
    pub max_in_flight: NonZeroU16,
    /// First reconnection delay in milliseconds; doubled after each failure (with jitter).
    pub reconnect_min_ms: NonZeroU64,
    /// Longest reconnection delay in milliseconds.
    pub reconnect_max_ms: NonZeroU64,
    /// Home Assistant MQTT discovery: publish retained sensor configurations (the headcount,
    /// the engaged ratio, the state, the temperature; aggregates only) for Home Assistant.
    pub home_assistant: bool,
    /// The discovery prefix Home Assistant listens on.
    pub home_assistant_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: None,
            username: None,
            password_file: None,
            password_env: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_secs: NonZeroU16::new(30).expect("30 is not zero"),
            max_in_flight: NonZeroU16::new(16).expect("16 is not zero"),
            reconnect_min_ms: NonZeroU64::new(500).expect("500 is not zero"),
            reconnect_max_ms: NonZeroU64::new(30_000).expect("30000 is not zero"),
            home_assistant: false,
            home_assistant_prefix: "homeassistant".into(),
        }
    }
}

impl MqttConfig {
    /// Every setting out of range or in conflict, keyed relative to the section; the broker
    /// `url` names, if it is valid.
    pub fn check(&self, v: &mut Issues) -> Option<BrokerAddress> {
        let broker = match &self.url {
            None => {
                for (key, set) in [
                    ("client_id", self.client_id.is_some()),
                    ("username", self.username.is_some()),
                    ("password_file", self.password_file.is_some()),
                    ("password_env", self.password_env.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                    ("client_cert_file", self.client_cert_file.is_some()),
                    ("client_key_file", self.client_key_file.is_some()),
                ] {
                    if set {
                        v.push(
                            key,
                            "is set but mqtt.url is not (no broker: payloads go to stdout)",
                        );
                    }
                }
                None
            }
            Some(url) => match parse_broker_url(url) {
                Ok(broker) => Some(broker),
                Err(reason) => {
                    v.push("url", reason);
                    None
                }
            },
        };
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
                v.push("client_id", "must be 1 to 128 printable characters");
            }
        }
        let has_password = self.password_file.is_some() || self.password_env.is_some();
        if self.password_file.is_some() && self.password_env.is_some() {
            v.push(
                "password_env",
                "set only one of mqtt.password_file and mqtt.password_env",
            );
        }
        if has_password && self.username.is_none() {
            v.push("username", "is required when a password is configured");
        }
        if let Some(name) = &self.password_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                v.push("password_env", "must be an environment variable name");
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            v.push(
                "client_key_file",
                "set both mqtt.client_cert_file and mqtt.client_key_file, or neither",
            );
        }
        if let Some(broker) = &broker {
            if broker.tls && self.ca_file.is_none() {
                v.push(
                    "ca_file",
                    "is required with mqtts:// (e.g. /etc/ssl/certs/ca-certificates.crt for a public CA)",
                );
            }
            if !broker.tls {
                for (key, set) in [
                    ("ca_file", self.ca_file.is_some()),
                    ("client_cert_file", self.client_cert_file.is_some()),
                ] {
                    if set {
                        v.push(key, "is set but mqtt.url is not mqtts:// (TLS)");
                    }
                }
            }
        }
        v.range("keep_alive_secs", self.keep_alive_secs.get(), 5, 3600);
        v.at_most("max_in_flight", self.max_in_flight.get(), 64);
        if self.reconnect_min_ms > self.reconnect_max_ms {
            v.push("reconnect_min_ms", "must not exceed mqtt.reconnect_max_ms");
        }
        v.at_most("reconnect_max_ms", self.reconnect_max_ms.get(), 3_600_000);
        if let Some(reason) = super::discovery::prefix_issue(&self.home_assistant_prefix) {
            v.push("home_assistant_prefix", reason);
        }
        if self.home_assistant && self.url.is_none() {
            v.push("home_assistant", "is set but mqtt.url is not (no broker)");
        }
        broker
    }
}

/// The MQTT transport named by `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`mqtts://`).
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 hosts in brackets).
pub fn parse_broker_url(url: &str) -> Result<BrokerAddress, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err(format!(
            "{url:?} must be scheme://host[:port] only (credentials go in mqtt.username and mqtt.password_file)"
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?} has port {p:?}; it must be 1 to 65535")),
        },
    };
    Ok(BrokerAddress {
        host: host.to_string(),
        port,
        tls,
    })
}

impl MqttConfig {
    /// Reads the password (file or variable) and the TLS files this section names: the
    /// credentials and the TLS material for `broker` (the only I/O of MQTT set-up; the fleet
    /// tool takes its broker settings the same way).
    #[allow(clippy::type_complexity)]
    pub fn read_secrets(
        &self,
        broker: &BrokerAddress,
    ) -> Result<(Option<(String, Secret)>, Option<TlsMaterial>), MqttSetupError> {
        let m = self;
        let read = |key: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| MqttSetupError::File {
                key,
                path: path.clone(),
                source,
            })
        };
        let password = match (&m.password_file, &m.password_env) {
            (Some(path), _) => {
                let bytes = read("mqtt.password_file", path)?;
                let text = String::from_utf8_lossy(&bytes);
                Some(Secret(text.trim_end_matches(['\n', '\r']).to_string()))
            }
            (None, Some(var)) => Some(Secret(
                std::env::var(var).map_err(|_| MqttSetupError::MissingEnv(var.clone()))?,
            )),
            (None, None) => None,
        };
        let credentials = m
            .username
            .clone()
            .map(|u| (u, password.unwrap_or(Secret(String::new()))));
        let tls = match (&m.ca_file, broker.tls) {
            (Some(ca), true) => {
                let client_auth = match (&m.client_cert_file, &m.client_key_file) {
                    (Some(cert), Some(key)) => Some((
                        read("mqtt.client_cert_file", cert)?,
                        Secret(
                            String::from_utf8_lossy(&read("mqtt.client_key_file", key)?)
                                .into_owned(),
                        ),
                    )),
                    _ => None,
                };
                Some(TlsMaterial {
                    ca: read("mqtt.ca_file", ca)?,
                    client_auth,
                })
            }
            _ => None,
        };
        Ok((credentials, tls))
    }
}

/// A password, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// PEM material for TLS, read at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificates.
    pub ca: Vec<u8>,
    /// Client certificate and key, for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_bytes", &self.ca.len())
            .field("client_auth", &self.client_auth.is_some())
            .finish()
    }
}

/// Everything the MQTT sink needs, with files and environment already read.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// TLS material, for `mqtts://`.
    pub tls: Option<TlsMaterial>,
    /// User name and password.
    pub credentials: Option<(String, Secret)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Records in flight at once.
    pub max_in_flight: usize,
    /// First reconnection delay.
    pub reconnect_min: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// The device's topics.
    pub topics: Topics,
    /// The last will: the `offline` status payload.
    pub will: Vec<u8>,
    /// Home Assistant discovery, when `mqtt.home_assistant` is on.
    pub discovery: Option<super::discovery::Discovery>,
}

/// A file or variable named by `[mqtt]` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttSetupError {
    /// A file could not be read.
    #[error("cannot read {key} {}: {source}", path.display())]
    File {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The password variable is not set (or not UTF-8).
    #[error("mqtt.password_env: environment variable {0} is not set")]
    MissingEnv(String),
    /// The configuration names no broker.
    #[error("mqtt.url is not set")]
    NoBroker,
}

impl MqttSettings {
    /// Reads the password and TLS files named by `config` (the only I/O of MQTT set-up).
    pub fn resolve(
        config: &ValidatedConfig,
        will: Vec<u8>,
    ) -> Result<MqttSettings, MqttSetupError> {
        let broker = config.broker().ok_or(MqttSetupError::NoBroker)?;
        let m = &config.config().mqtt;
        let (credentials, tls) = m.read_secrets(broker)?;
        Ok(MqttSettings {
            host: broker.host.clone(),
            port: broker.port,
            client_id: config.client_id(),
            tls,
            credentials,
            keep_alive: Duration::from_secs(u64::from(m.keep_alive_secs.get())),
            max_in_flight: usize::from(m.max_in_flight.get()),
            reconnect_min: Duration::from_millis(m.reconnect_min_ms.get()),
            reconnect_max: Duration::from_millis(m.reconnect_max_ms.get()),
            topics: config.topics().clone(),
            will,
            discovery: m.home_assistant.then(|| {
                super::discovery::Discovery::new(
                    &m.home_assistant_prefix,
                    &config.config().device,
                    config.topics(),
                    env!("CARGO_PKG_VERSION"),
                )
            }),
        })
    }

    pub(super) fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        let qos1_cap = self.max_in_flight + CONTROL_SLOTS;
        // rumqttc's limit stays above ours, so its packet ids never collide (module docs).
        options.set_inflight(u16::try_from(qos1_cap + 8).unwrap_or(u16::MAX));
        options.set_last_will(LastWill::new(
            self.topics.status(),
            self.will.clone(),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.expose().to_string());
        }
        if let Some(tls) = &self.tls {
            let client_auth = tls
                .client_auth
                .as_ref()
                .map(|(cert, key)| (cert.clone(), key.expose().as_bytes().to_vec()));
            options.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca: tls.ca.clone(),
                alpn: None,
                client_auth,
            }));
        }
        options
    }
}

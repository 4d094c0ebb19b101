//! The broker connection, configured exactly as a device takes it: the `[mqtt]` section of
//! `caerd`'s configuration (URL, user name, password file or variable, CA file, client
//! certificate), checked by the same code ([`MqttConfig::check`]) and read by the same code
//! ([`MqttConfig::read_secrets`]). The fleet tool speaks MQTT 5 (shared subscriptions,
//! session expiry, receive maximum).

use std::path::Path;
use std::time::Duration;

use caer::daemon::config::{BrokerAddress, MqttConfig};
use caer::pipeline::settings::Issues;
use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use serde::Deserialize;

use crate::error::FleetError;

/// The fleet tool's configuration file: only `[mqtt]`, with the device's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    mqtt: MqttConfig,
}

/// A checked broker configuration.
#[derive(Debug, Clone)]
pub struct Broker {
    config: MqttConfig,
    address: BrokerAddress,
}

impl Broker {
    /// Reads `file` (a TOML file with an `[mqtt]` section, as in `caerd.toml`; none: the
    /// defaults), then lets `url` override `mqtt.url`, and checks the result.
    pub fn load(file: Option<&Path>, url: Option<&str>) -> Result<Broker, FleetError> {
        let mut parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<FleetFile>(&text).map_err(|e| FleetError::Config {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
            }
            None => FleetFile::default(),
        };
        if let Some(url) = url {
            parsed.mqtt.url = Some(url.to_string());
        }
        if parsed.mqtt.url.is_none() {
            return Err(FleetError::NoBroker);
        }
        let mut issues = Issues::default();
        let mut address = None;
        issues.section("mqtt", |v| address = parsed.mqtt.check(v));
        if let (Some(address), []) = (address.clone(), issues.list()) {
            return Ok(Broker {
                config: parsed.mqtt,
                address,
            });
        }
        let reasons: Vec<String> = issues.list().iter().map(|i| i.to_string()).collect();
        Err(FleetError::Config {
            path: file.map(Path::to_path_buf).unwrap_or_default(),
            reason: reasons.join("; "),
        })
    }

    /// MQTT 5 options for `client_id`: credentials and TLS as configured, the configured
    /// keep-alive.
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, FleetError> {
        let (credentials, tls) = self.config.read_secrets(&self.address)?;
        let mut options = MqttOptions::new(client_id, self.address.host.clone(), self.address.port);
        options.set_keep_alive(Duration::from_secs(u64::from(
            self.config.keep_alive_secs.get(),
        )));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password.expose().to_string());
        }
        if let Some(tls) = tls {
            let client_auth = tls
                .client_auth
                .map(|(cert, key)| (cert, key.expose().as_bytes().to_vec()));
            options.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca: tls.ca,
                alpn: None,
                client_auth,
            }));
        }
        Ok(options)
    }

    /// `host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.address.host, self.address.port)
    }
}

//! The flags that say which broker to reach and how, shared by `send`,
//! `listen` and `retained snapshot`: Mosquitto's client flags (`-h`, `-p`,
//! `-L`, `-u`, `-P`, `-i`, `-k`, `-V`, `-c`, the will and TLS flags) and
//! this tool's own (`--connection FILE`, `--component FILE`), settled into
//! the connection configuration the connector takes.

use super::{ensure_valid_with_hint, read_object, runtime};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
use clap::Args;
use connector::url::{BrokerUrl, DEFAULT_PORT, DEFAULT_TLS_PORT};
use host_shim::flow::{ConfigKind, Problem};
use host_shim::host::Runtime;
use mqtt_topic::MqttVersion;
use serde_json::{Map, Value as Json};
use std::path::PathBuf;

/// The host when neither a flag nor a file names one.
const DEFAULT_HOST: &str = "localhost";
/// The session expiry `-c` asks for on MQTT 5.0, as `mosquitto_sub -c`:
/// the session outlives the connection for good.
const PERSISTENT_SESSION_EXPIRY: u32 = u32::MAX;

/// The flags that say which broker to reach and how.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// Broker host (mosquitto -h) [default: localhost]
    #[arg(short = 'h', long, value_name = "HOST", conflicts_with = "url")]
    pub host: Option<String>,
    /// Broker port (mosquitto -p) [default: 1883, 8883 with TLS]
    #[arg(short = 'p', long, value_name = "PORT", conflicts_with = "url")]
    pub port: Option<u16>,
    /// Broker URL: mqtt[s]://HOST:PORT, or with /TOPIC as mosquitto -L
    #[arg(short = 'L', long, value_name = "URL")]
    pub url: Option<String>,
    /// User name to authenticate with (mosquitto -u)
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    /// Password to authenticate with (mosquitto -P)
    #[arg(short = 'P', long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Client identifier (mosquitto -i) [default: the broker picks]
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub client_id: Option<String>,
    /// Keep alive in seconds, 0 for none (mosquitto -k) [default: 60]
    #[arg(short = 'k', long, value_name = "SECS")]
    pub keepalive: Option<u16>,
    /// MQTT version: 5 or 311 (also mqttv5, mqttv311, 3.1.1) [default: 5]
    #[arg(
        short = 'V',
        long,
        value_name = "VERSION",
        value_parser = mqtt_version_parser(),
        hide_possible_values = true
    )]
    pub mqtt_version: Option<MqttVersion>,
    /// Persistent session, kept after disconnecting; give -i too
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// Topic of the last will, sent when the connection drops
    #[arg(long, value_name = "TOPIC")]
    pub will_topic: Option<String>,
    /// Payload of the last will
    #[arg(long, value_name = "TEXT")]
    pub will_payload: Option<String>,
    /// QoS of the last will [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: Option<u8>,
    /// Retain the last will
    #[arg(long)]
    pub will_retain: bool,
    /// PEM file of the certificate authorities to trust; implies TLS
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// PEM file of the client certificate (mutual TLS); implies TLS
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM file of the client's private key; implies TLS
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// JSON file of connection settings; the flags override it
    #[arg(long, value_name = "FILE")]
    pub connection: Option<PathBuf>,
    /// Connector component (.wasm) to run instead of the built-in one
    #[arg(long, value_name = "FILE")]
    pub component: Option<PathBuf>,
}

/// `-V` / `--mqtt-version`: the names configurations use (`3.1.1`, `5`),
/// Mosquitto's (`mqttv311`, `mqttv5`, `311`, `5`) and `5.0`, all read by
/// [`MqttVersion`]'s own parser once Mosquitto's `mqttv` prefix is off.
fn mqtt_version_parser() -> impl clap::builder::TypedValueParser<Value = MqttVersion> {
    PossibleValuesParser::new([
        PossibleValue::new(MqttVersion::V311.as_str()).aliases(["311", "mqttv311"]),
        PossibleValue::new(MqttVersion::V5.as_str()).aliases(["5.0", "mqttv5"]),
    ])
    .try_map(|name| {
        name.strip_prefix("mqttv")
            .unwrap_or(&name)
            .parse::<MqttVersion>()
    })
}

/// The flags that set what a connection problem is about, for a user who
/// gave flags rather than a file.
fn flag_hint(problem: &Problem) -> Option<&'static str> {
    match problem.pointer.as_str() {
        "/url" if problem.message.contains("credentials") => {
            Some("on the command line: -u USER -P PASSWORD")
        }
        "/url" => Some("on the command line: -h HOST -p PORT, or -L URL"),
        "/clean_start" | "/client_id" => Some("on the command line: -i ID, with -c"),
        "/will" | "/will/topic" => Some("on the command line: --will-topic TOPIC"),
        "/tls" | "/tls/client_cert_file" | "/tls/client_key_file" | "/tls/ca_file" => {
            Some("on the command line: --cafile, --cert FILE --key FILE")
        }
        _ => None,
    }
}

/// Sets `key` of the object at `config[object]`, creating the object.
fn set_in(config: &mut Map<String, Json>, object: &str, key: &str, value: Json) {
    let entry = config
        .entry(object.to_owned())
        .or_insert_with(|| Json::Object(Map::new()));
    if !entry.is_object() {
        *entry = Json::Object(Map::new());
    }
    if let Json::Object(inner) = entry {
        inner.insert(key.to_owned(), value);
    }
}

/// Splits Mosquitto's `-L mqtt://HOST:PORT/TOPIC` into the broker's URL
/// and the topic (`None` without one; a lone final `/` is no topic).
fn split_url(url: &str) -> (&str, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url, None);
    };
    match url[scheme_end..].find('/').map(|i| scheme_end + i) {
        Some(slash) if slash + 1 < url.len() => (&url[..slash], Some(&url[slash + 1..])),
        _ => (url, None),
    }
}

impl ConnectionArgs {
    /// The topic `-L URL` names after the broker's address, as
    /// `mosquitto_pub -L` and `mosquitto_sub -L` take it.
    pub fn url_topic(&self) -> Option<&str> {
        self.url.as_deref().and_then(|url| split_url(url).1)
    }

    /// The broker's address from `-h` and `-p` over the file's URL (when
    /// it is valid): a part no flag gives comes from the file, then from the
    /// defaults, `localhost` and the port of the scheme; TLS flags or a
    /// `tls` object make it `mqtts://`.
    fn url_over(&self, file_url: Option<&str>, config: &Map<String, Json>) -> BrokerUrl {
        let file = file_url.and_then(|url| BrokerUrl::parse(url).ok());
        let tls = self.tls_flags()
            || config.get("tls").is_some_and(Json::is_object)
            || file.as_ref().is_some_and(|url| url.tls);
        let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let file_port = file
            .as_ref()
            .filter(|url| url.tls == tls)
            .map(|url| url.port);
        BrokerUrl {
            tls,
            host: self
                .host
                .clone()
                .or_else(|| file.map(|url| url.host))
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port: self.port.or(file_port).unwrap_or(default_port),
        }
    }

    /// Whether a TLS flag was given.
    fn tls_flags(&self) -> bool {
        self.cafile.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The connection configuration: the file, then the flags over it,
    /// checked by the connector. Without `-L`, `-h` or `-p`, the file's URL
    /// stays; when there is none, or `-h` / `-p` is given, the URL is made
    /// from them and their defaults (`mqtts://` with TLS).
    pub fn connection_config(&self) -> anyhow::Result<Json> {
        let mut config = match &self.connection {
            Some(path) => read_object(path)?,
            None => Map::new(),
        };
        let path_text = |p: &PathBuf| Json::from(p.to_string_lossy().into_owned());
        if let Some(path) = &self.cafile {
            set_in(&mut config, "tls", "ca_file", path_text(path));
        }
        if let Some(path) = &self.cert {
            set_in(&mut config, "tls", "client_cert_file", path_text(path));
        }
        if let Some(path) = &self.key {
            set_in(&mut config, "tls", "client_key_file", path_text(path));
        }
        if let Some(url) = &self.url {
            let (url, _topic) = split_url(url);
            config.insert("url".to_owned(), Json::from(url));
        } else if self.host.is_some() || self.port.is_some() || !config.contains_key("url") {
            let url = self.url_over(config.get("url").and_then(Json::as_str), &config);
            config.insert("url".to_owned(), Json::from(url.to_string()));
        }
        if let Some(version) = self.mqtt_version {
            config.insert("mqtt_version".to_owned(), Json::from(version.as_str()));
        }
        if let Some(username) = &self.username {
            config.insert("username".to_owned(), Json::from(username.as_str()));
        }
        if let Some(password) = &self.password {
            config.insert("password".to_owned(), Json::from(password.as_str()));
        }
        if let Some(id) = &self.client_id {
            config.insert("client_id".to_owned(), Json::from(id.as_str()));
        }
        if let Some(secs) = self.keepalive {
            config.insert("keep_alive_secs".to_owned(), Json::from(secs));
        }
        if self.persistent {
            config.insert("clean_start".to_owned(), Json::from(false));
            config
                .entry("session_expiry_secs".to_owned())
                .or_insert(Json::from(PERSISTENT_SESSION_EXPIRY));
        }
        if let Some(topic) = &self.will_topic {
            set_in(&mut config, "will", "topic", Json::from(topic.as_str()));
        }
        if let Some(payload) = &self.will_payload {
            set_in(&mut config, "will", "payload", Json::from(payload.as_str()));
        }
        if let Some(qos) = self.will_qos {
            set_in(&mut config, "will", "qos", Json::from(qos));
        }
        if self.will_retain {
            set_in(&mut config, "will", "retain", Json::from(true));
        }
        let config = Json::Object(config);
        ensure_valid_with_hint(ConfigKind::Connection, "connection", &config, flag_hint)?;
        Ok(config)
    }

    /// The connector to run: the built-in one, or `--component FILE`.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        runtime(self.component.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(disable_help_flag = true)]
    struct Cli {
        #[command(flatten)]
        connection: ConnectionArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<Json> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .connection
            .connection_config()
    }

    #[test]
    fn url_from_host_and_port_with_defaults() {
        assert_eq!(config(&[]).unwrap()["url"], "mqtt://localhost:1883");
        let c = config(&["-h", "127.0.0.1", "-p", "1999"]).unwrap();
        assert_eq!(c["url"], "mqtt://127.0.0.1:1999");
        assert_eq!(config(&["-h", "::1"]).unwrap()["url"], "mqtt://[::1]:1883");
        let c = config(&["--cafile", "ca.pem"]).unwrap();
        assert_eq!(c["url"], "mqtts://localhost:8883");
        assert_eq!(c["tls"]["ca_file"], "ca.pem");
        let c = config(&["-L", "mqtt://10.0.0.1:1"]).unwrap();
        assert_eq!(c["url"], "mqtt://10.0.0.1:1");
        assert!(config(&["-L", "mqtt://a", "-p", "1"]).is_err());
    }

    #[test]
    fn host_and_port_flags_override_the_file_url_part_by_part() {
        let dir = std::env::temp_dir().join(format!("host-shim-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("connection.json");
        std::fs::write(
            &file,
            r#"{"url": "mqtt://broker.example:1999", "username": "u"}"#,
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--connection", file]).unwrap();
        assert_eq!(
            (c["url"].as_str(), c["username"].as_str()),
            (Some("mqtt://broker.example:1999"), Some("u"))
        );
        let c = config(&["--connection", file, "-p", "2"]).unwrap();
        assert_eq!(c["url"], "mqtt://broker.example:2");
        let c = config(&["--connection", file, "-h", "10.0.0.1", "-u", "v"]).unwrap();
        assert_eq!(
            (c["url"].as_str(), c["username"].as_str()),
            (Some("mqtt://10.0.0.1:1999"), Some("v"))
        );
        // TLS flags: the file's plain port is not a TLS one.
        let c = config(&["--connection", file, "-h", "h", "--cafile", "ca.pem"]).unwrap();
        assert_eq!(c["url"], "mqtts://h:8883");
        let c = config(&["--connection", file, "-L", "mqtt://other:1"]).unwrap();
        assert_eq!(c["url"], "mqtt://other:1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_url_may_name_the_topic_as_mosquitto_l() {
        assert_eq!(split_url("mqtt://h:1/a/b"), ("mqtt://h:1", Some("a/b")));
        assert_eq!(split_url("mqtt://[::1]:1/#"), ("mqtt://[::1]:1", Some("#")));
        assert_eq!(split_url("mqtt://h:1/"), ("mqtt://h:1/", None));
        assert_eq!(split_url("mqtt://h"), ("mqtt://h", None));
        let c = config(&["-L", "mqtt://10.0.0.1:1/a/b"]).unwrap();
        assert_eq!(c["url"], "mqtt://10.0.0.1:1");
    }

    #[test]
    fn mosquitto_flags_set_their_keys() {
        let c = config(&[
            "-u", "user", "-P", "pw", "-i", "me", "-k", "5", "-V", "mqttv311", "-c",
        ])
        .unwrap();
        assert_eq!(c["username"], "user");
        assert_eq!(c["password"], "pw");
        assert_eq!(c["client_id"], "me");
        assert_eq!(c["keep_alive_secs"], 5);
        assert_eq!(c["mqtt_version"], "3.1.1");
        assert_eq!(c["clean_start"], false);
        for (flag, version) in [
            ("5", "5"),
            ("311", "3.1.1"),
            ("mqttv5", "5"),
            ("3.1.1", "3.1.1"),
        ] {
            assert_eq!(config(&["-V", flag]).unwrap()["mqtt_version"], version);
        }
        assert!(config(&["-V", "4"]).is_err());
        let c = config(&[
            "--will-topic",
            "w",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ])
        .unwrap();
        assert_eq!(
            c["will"],
            serde_json::json!({"topic": "w", "payload": "gone", "qos": 1, "retain": true})
        );
    }

    #[test]
    fn problems_point_to_the_flags() {
        let err = format!("{:#}", config(&["-L", "mqtt://u:p@h:1"]).unwrap_err());
        assert!(err.contains("-u USER -P PASSWORD"), "{err}");
        let err = format!("{:#}", config(&["-V", "311", "-c"]).unwrap_err());
        assert!(
            err.contains("/clean_start: ") && err.contains("-i ID"),
            "{err}"
        );
        let err = format!("{:#}", config(&["--will-payload", "x"]).unwrap_err());
        assert!(
            err.contains("/will/topic: ") && err.contains("--will-topic"),
            "{err}"
        );
    }
}

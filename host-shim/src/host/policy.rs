//! What a guest may reach through the host: which brokers, which files
//! (the TLS certificate and key files a connection names, which the host
//! opens), and how many clients and table elements it may hold.
//!
//! A [`Policy`] is closed by default. A [`Runtime`](super::Runtime)
//! without one from its embedder gives each operation the policy of the
//! connection configuration it was opened with ([`Policy::for_connection`]):
//! exactly that broker URL and those TLS files, so a guest cannot connect
//! elsewhere or make the host read other files, whatever it asks.

use connector::model::ConnectOptions;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// MQTT clients one instance may hold at once, by default. The connector
/// opens one per operation.
pub const DEFAULT_MAX_CLIENTS: usize = 4;

/// Elements of all WebAssembly tables of one instance, by default: far
/// more than the connector's few hundred, far less than what would let a
/// guest grow host memory.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;

/// Which brokers a guest may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Brokers {
    /// Any broker.
    Any,
    /// Exactly these URLs, as the connector writes them.
    Only(BTreeSet<String>),
}

/// What a guest may reach through the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    brokers: Brokers,
    files: BTreeSet<PathBuf>,
    max_clients: usize,
    max_table_elements: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::closed()
    }
}

impl Policy {
    /// No broker, no file; the default limits.
    pub fn closed() -> Policy {
        Policy {
            brokers: Brokers::Only(BTreeSet::new()),
            files: BTreeSet::new(),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
        }
    }

    /// Exactly the broker and the TLS files of `connection`, a connection
    /// configuration as JSON, read as the connector reads it; closed when
    /// it is not valid (the connector then refuses it anyway).
    pub fn for_connection(connection: &str) -> Policy {
        match connector::validate::parse_connection(connection) {
            Ok(config) => Policy::closed().allow_connection(&config.connect_options()),
            Err(_) => Policy::closed(),
        }
    }

    /// Also the broker and the TLS files of `options`.
    pub fn allow_connection(mut self, options: &ConnectOptions) -> Policy {
        self = self.allow_broker(&options.url);
        if let Some(tls) = &options.tls {
            let files = [&tls.ca_file, &tls.client_cert_file, &tls.client_key_file];
            for file in files.into_iter().flatten() {
                self = self.allow_file(file);
            }
        }
        self
    }

    /// Also the broker at `url` (as the connector writes it, for example
    /// `mqtt://localhost:1883`).
    pub fn allow_broker(mut self, url: &str) -> Policy {
        if let Brokers::Only(urls) = &mut self.brokers {
            urls.insert(url.to_owned());
        }
        self
    }

    /// Any broker.
    pub fn allow_any_broker(mut self) -> Policy {
        self.brokers = Brokers::Any;
        self
    }

    /// Also the file at `path`, for TLS.
    pub fn allow_file(mut self, path: impl AsRef<Path>) -> Policy {
        self.files.insert(normalize(path.as_ref()));
        self
    }

    /// At most `n` MQTT clients at once per instance.
    pub fn max_clients(mut self, n: usize) -> Policy {
        self.max_clients = n;
        self
    }

    /// At most `n` elements in the WebAssembly tables of an instance.
    pub fn max_table_elements(mut self, n: usize) -> Policy {
        self.max_table_elements = n;
        self
    }

    /// Whether a guest may connect to `url`.
    pub fn permits_broker(&self, url: &str) -> bool {
        match &self.brokers {
            Brokers::Any => true,
            Brokers::Only(urls) => urls.contains(url),
        }
    }

    /// Whether a guest may have the host open `path`.
    pub fn permits_file(&self, path: &str) -> bool {
        self.files.contains(&normalize(Path::new(path)))
    }

    /// The first thing `options` asks for that this policy does not allow,
    /// as a message for the guest.
    pub fn refusal(&self, options: &ConnectOptions) -> Option<String> {
        if !self.permits_broker(&options.url) {
            return Some(format!(
                "the host does not allow connecting to {}",
                options.url
            ));
        }
        let tls = options.tls.as_ref()?;
        [&tls.ca_file, &tls.client_cert_file, &tls.client_key_file]
            .into_iter()
            .flatten()
            .find(|file| !self.permits_file(file))
            .map(|file| format!("the host does not allow reading the file {file}"))
    }

    /// The most MQTT clients at once per instance.
    pub fn clients_limit(&self) -> usize {
        self.max_clients
    }

    /// The most WebAssembly table elements per instance.
    pub fn table_elements_limit(&self) -> usize {
        self.max_table_elements
    }
}

/// `path` made absolute against the current directory and without `.` and
/// `..` (without touching the file system, so a missing file is judged by
/// its name and the host's own error later names it).
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector::config::ConnectionConfig;
    use connector::model::TlsOptions;

    fn options(url: &str, ca_file: Option<&str>) -> ConnectOptions {
        let mut config = ConnectionConfig::new(url).connect_options();
        config.tls = ca_file.map(|f| TlsOptions {
            ca_file: Some(f.to_owned()),
            ..TlsOptions::default()
        });
        config
    }

    #[test]
    fn closed_allows_nothing() {
        let policy = Policy::closed();
        assert!(!policy.permits_broker("mqtt://localhost:1883"));
        assert!(!policy.permits_file("/etc/passwd"));
        assert!(policy
            .refusal(&options("mqtt://localhost:1883", None))
            .is_some_and(|m| m.contains("mqtt://localhost:1883")));
    }

    #[test]
    fn a_connection_allows_its_broker_and_files_only() {
        let policy = Policy::for_connection(
            r#"{"url": "mqtts://broker.example:8883", "tls": {"ca_file": "certs/./ca.pem"}}"#,
        );
        let url = ConnectionConfig::new("mqtts://broker.example:8883")
            .connect_options()
            .url;
        assert!(policy.permits_broker(&url));
        assert!(!policy.permits_broker("mqtts://other.example:8883"));
        assert!(policy.permits_file("certs/ca.pem"));
        assert!(policy.permits_file("certs/sub/../ca.pem"));
        assert!(!policy.permits_file("certs/key.pem"));
        assert_eq!(policy.refusal(&options(&url, Some("certs/ca.pem"))), None);
        assert!(policy
            .refusal(&options(&url, Some("/home/user/.ssh/id_rsa")))
            .is_some_and(|m| m.contains("/home/user/.ssh/id_rsa")));
    }

    #[test]
    fn an_unparsable_connection_is_closed() {
        assert_eq!(Policy::for_connection("{"), Policy::closed());
    }

    #[test]
    fn any_broker_still_names_its_files() {
        let policy = Policy::closed().allow_any_broker();
        assert!(policy.permits_broker("mqtt://anything:1"));
        assert!(!policy.permits_file("/etc/passwd"));
    }
}

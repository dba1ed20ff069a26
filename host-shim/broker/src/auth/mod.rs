//! Who may connect, and where they may publish and subscribe: the accounts
//! of `users` and `password_file` checked against a CONNECT's user name and
//! password, and the rules of `acl_file`.
//!
//! # Layout
//!
//! - this file: [`Auth`], the accounts, the rule of `allow_anonymous`, and
//!   the ACL resolved per client;
//! - `secret`: one password as kept (a digest) and checked (constant time);
//! - `acl`: the rules of an ACL file and how they grant access.

mod acl;
mod secret;

pub(crate) use acl::{Access, Acl, Grants, Rule};
pub use secret::HashError;
pub(crate) use secret::Secret;

use crate::config::{self, BrokerConfig, ConfigError};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Login};
use std::collections::HashMap;
use std::sync::Arc;

/// The accounts the broker accepts, and whether it accepts clients without
/// a user name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Auth {
    allow_anonymous: bool,
    accounts: HashMap<String, Secret>,
    /// Accounts of `password_file` whose password is in plain text.
    plain_in_file: usize,
    /// The rules of `acl_file`; without one every client may do anything.
    acl: Option<Acl>,
}

impl Auth {
    /// The inline `users` only (no file is read).
    pub(crate) fn inline(config: &BrokerConfig) -> Auth {
        Auth {
            allow_anonymous: config.allow_anonymous,
            accounts: config
                .users
                .iter()
                .map(|u| (u.username.clone(), Secret::plain(&u.password)))
                .collect(),
            plain_in_file: 0,
            acl: None,
        }
    }

    /// The inline `users`, the accounts of `password_file` and the rules of
    /// `acl_file`.
    ///
    /// # Errors
    ///
    /// The errors of the password file and of the ACL file: unreadable, or a
    /// line that cannot be used.
    pub(crate) fn load(config: &BrokerConfig) -> Result<Auth, ConfigError> {
        let mut auth = Auth::inline(config);
        if let Some(path) = &config.password_file {
            for account in config::read_password_file(path, &config.users)? {
                if matches!(account.secret, Secret::Plain(_)) {
                    auth.plain_in_file += 1;
                }
                auth.accounts.insert(account.username, account.secret);
            }
        }
        if let Some(path) = &config.acl_file {
            auth.acl = Some(config::read_acl_file(path)?);
        }
        Ok(auth)
    }

    /// Logs what a user should know about this set-up at start: that nobody
    /// can connect, or that the password file holds plain-text passwords.
    pub(crate) fn warn_at_start(&self, config: &BrokerConfig) {
        if !self.allow_anonymous && self.accounts.is_empty() {
            tracing::warn!(
                "allow_anonymous is false and no account is configured (users, password_file): \
                 every client will be refused"
            );
        }
        if self.plain_in_file > 0 {
            if let Some(path) = &config.password_file {
                tracing::warn!(
                    "password_file {}: {} account(s) with a plain-text password; \
                     hash them with `mosquitto_passwd -U {}`",
                    path.display(),
                    self.plain_in_file,
                    path.display()
                );
            }
        }
    }

    /// The access rules of a client, or `None` when there is no ACL (it may
    /// do anything).
    pub(crate) fn grants(&self, client_id: &str, username: Option<&str>) -> Option<Arc<Grants>> {
        self.acl
            .as_ref()
            .map(|acl| Arc::new(acl.grants(client_id, username)))
    }

    /// Checks a CONNECT's credentials: `None` lets it in, else the CONNACK
    /// code that refuses it.
    ///
    /// As in Mosquitto: a client without a user name needs
    /// `allow_anonymous`; one with a user name needs a matching account,
    /// except when no account is configured at all and anonymous clients
    /// are allowed (then credentials are not checked). With no accounts and
    /// no anonymous access nobody gets in.
    pub(crate) fn authenticate(&self, login: Option<&Login>) -> Option<ConnectReturnCode> {
        match login {
            None if self.allow_anonymous => None,
            None => Some(ConnectReturnCode::NotAuthorized),
            Some(_) if self.accounts.is_empty() && self.allow_anonymous => None,
            Some(login) => {
                let known = self
                    .accounts
                    .get(&login.username)
                    .is_some_and(|secret| secret.verify(login.password.as_bytes()));
                (!known).then_some(ConnectReturnCode::BadUserNamePassword)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;

    fn login(username: &str, password: &str) -> Login {
        Login {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn no_accounts_and_no_anonymous_lets_nobody_in() {
        let config = BrokerConfig {
            allow_anonymous: false,
            ..BrokerConfig::default()
        };
        let auth = Auth::inline(&config);
        assert_eq!(
            auth.authenticate(Some(&login("any", "thing"))),
            Some(ConnectReturnCode::BadUserNamePassword)
        );
        assert_eq!(
            auth.authenticate(None),
            Some(ConnectReturnCode::NotAuthorized)
        );
    }

    #[test]
    fn anonymous_without_accounts_checks_nothing() {
        let auth = Auth::inline(&BrokerConfig::default());
        assert_eq!(auth.authenticate(Some(&login("any", "thing"))), None);
        assert_eq!(auth.authenticate(None), None);

        let config = BrokerConfig {
            users: vec![User {
                username: "alice".to_owned(),
                password: "pw".to_owned(),
            }],
            ..BrokerConfig::default()
        };
        let auth = Auth::inline(&config);
        assert_eq!(auth.authenticate(None), None);
        assert_eq!(auth.authenticate(Some(&login("alice", "pw"))), None);
        assert_eq!(
            auth.authenticate(Some(&login("mallory", "pw"))),
            Some(ConnectReturnCode::BadUserNamePassword)
        );
    }
}

//! Who may publish and subscribe where: the rules of an `acl_file`, in
//! Mosquitto's model.
//!
//! - `topic` rules written before any `user` line apply to clients without
//!   a user name; those after `user NAME` to clients connected as NAME.
//! - `pattern` rules apply to every client, wherever they are written, with
//!   `%c` replaced by the client identifier and `%u` by the user name. A
//!   pattern with `%u` does not apply to a client without a user name, and
//!   one whose replacement contains `/`, `+` or `#` does not apply at all,
//!   so a client cannot widen a rule by its choice of name.
//! - Access is `read`, `write`, `readwrite` (the default) or `deny`; a `deny`
//!   rule wins over any rule that grants.
//! - Nothing is allowed that no rule grants.

use std::collections::HashMap;

/// What a rule grants, or that it denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Subscribe, and receive messages.
    Read,
    /// Publish (wills included).
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other rules grant.
    Deny,
}

impl Access {
    /// The access keyword of an ACL line.
    pub(crate) fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// What it grants or denies.
    pub access: Access,
    /// The topic filter; in a pattern, with `%c` and `%u` still in it.
    pub filter: String,
}

/// The rules of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acl {
    /// `topic` rules before any `user` line: clients without a user name.
    pub anonymous: Vec<Rule>,
    /// `topic` rules by user name.
    pub users: HashMap<String, Vec<Rule>>,
    /// `pattern` rules: every client.
    pub patterns: Vec<Rule>,
}

impl Acl {
    /// The rules that apply to one client, patterns resolved.
    pub(crate) fn grants(&self, client_id: &str, username: Option<&str>) -> Grants {
        let mut rules = match username {
            None => self.anonymous.clone(),
            Some(name) => self.users.get(name).cloned().unwrap_or_default(),
        };
        for pattern in &self.patterns {
            if let Some(filter) = substitute(&pattern.filter, client_id, username) {
                rules.push(Rule {
                    access: pattern.access,
                    filter,
                });
            }
        }
        Grants { rules }
    }
}

/// A pattern's filter for one client, or `None` when it does not apply.
fn substitute(pattern: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['/', '+', '#']);
    let mut filter = pattern.to_owned();
    if filter.contains("%c") {
        if unsafe_value(client_id) {
            return None;
        }
        filter = filter.replace("%c", client_id);
    }
    if pattern.contains("%u") {
        let name = username?;
        if unsafe_value(name) {
            return None;
        }
        filter = filter.replace("%u", name);
    }
    Some(filter)
}

/// The rules of one client: what it may publish, subscribe to and receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    rules: Vec<Rule>,
}

impl Grants {
    /// Whether the client may receive a message on `topic`.
    pub(crate) fn may_read(&self, topic: &str) -> bool {
        self.allows(topic, Access::reads)
    }

    /// Whether the client may publish to `topic`.
    pub(crate) fn may_write(&self, topic: &str) -> bool {
        self.allows(topic, Access::writes)
    }

    fn allows(&self, topic: &str, grants: fn(Access) -> bool) -> bool {
        let matching = |r: &&Rule| mqtt_topic::matches(&r.filter, topic);
        !self
            .rules
            .iter()
            .filter(|r| r.access == Access::Deny)
            .any(|r| matching(&r))
            && self
                .rules
                .iter()
                .filter(|r| grants(r.access))
                .any(|r| matching(&r))
    }

    /// Whether the client may subscribe to `filter` (without any
    /// `$share/{group}/` prefix): a readable rule's filter must cover every
    /// topic it matches, and no deny rule may cover it. Messages on topics
    /// a subscription matches but a deny rule names are held back at
    /// delivery by [`Grants::may_read`].
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        !self
            .rules
            .iter()
            .any(|r| r.access == Access::Deny && covers(&r.filter, filter))
            && self
                .rules
                .iter()
                .any(|r| r.access.reads() && covers(&r.filter, filter))
    }
}

/// Whether every topic `filter` matches is matched by `rule` too.
fn covers(rule: &str, filter: &str) -> bool {
    // MQTT-4.7.2-1: a leading wildcard never reaches `$` topics.
    if filter.starts_with('$') && rule.starts_with(['+', '#']) {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(f)) if r == f && f != "+" && f != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(access: Access, filter: &str) -> Rule {
        Rule {
            access,
            filter: filter.to_owned(),
        }
    }

    #[test]
    fn filters_cover_narrower_filters() {
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn deny_wins_and_nothing_is_granted_by_default() {
        let grants = Grants {
            rules: vec![
                rule(Access::ReadWrite, "a/#"),
                rule(Access::Deny, "a/secret/#"),
                rule(Access::Read, "r/+"),
            ],
        };
        assert!(grants.may_write("a/x") && grants.may_read("a/x"));
        assert!(!grants.may_read("a/secret/x") && !grants.may_write("a/secret"));
        assert!(grants.may_read("r/x") && !grants.may_write("r/x"));
        assert!(!grants.may_read("b") && !grants.may_write("b"));
        assert!(grants.may_subscribe("a/#") && grants.may_subscribe("r/x"));
        assert!(!grants.may_subscribe("a/secret/+"));
        assert!(!grants.may_subscribe("#"));
        assert!(Grants::default().rules.is_empty() && !Grants::default().may_read("a"));
    }

    #[test]
    fn patterns_resolve_per_client() {
        let acl = Acl {
            anonymous: vec![rule(Access::Read, "public/#")],
            users: HashMap::from([("alice".to_owned(), vec![rule(Access::Write, "alice/#")])]),
            patterns: vec![
                rule(Access::ReadWrite, "clients/%c/#"),
                rule(Access::Read, "users/%u"),
            ],
        };
        let anon = acl.grants("dev1", None);
        assert!(anon.may_read("public/x") && anon.may_write("clients/dev1/x"));
        assert!(!anon.may_read("users/%u") && !anon.may_write("alice/x"));
        let alice = acl.grants("dev2", Some("alice"));
        assert!(alice.may_write("alice/x") && alice.may_read("users/alice"));
        assert!(!alice.may_read("public/x") && !alice.may_write("clients/dev1/x"));
        // A name with a wildcard or a separator does not widen a pattern.
        let sneaky = acl.grants("+", Some("a/b"));
        assert!(!sneaky.may_write("clients/x/y") && !sneaky.may_read("users/a/b"));
    }
}

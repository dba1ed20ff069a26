//! Checks a configuration and reports every problem at once, each with a
//! JSON pointer to where it is and a sentence a user understands.
//!
//! Three passes, all run on every input:
//!
//! 1. **Syntax**: the text must be JSON; the problem says the line and
//!    column.
//! 2. **Structure**: the value is walked along the JSON Schema generated
//!    from the config types ([`crate::schema`]), so the schema users see and
//!    the checks made here cannot drift apart. The walker knows the subset
//!    of JSON Schema that schemars emits (`type`, `properties`, `required`,
//!    `additionalProperties`, `enum`/`const`, `oneOf`/`anyOf`, `$ref`,
//!    `items`, `minItems`, `minLength`, `minimum`/`maximum`) and words each
//!    failure for a person: unknown fields suggest the closest known one,
//!    enums list their values.
//! 3. **Meaning**: topic rules ([`mqtt_topic`]), the broker URL, and rules
//!    that tie fields together (TLS with `mqtts://`, a 3.1.1 session without
//!    a client id, shared subscriptions and retained messages, ...). This
//!    pass reads the JSON value tolerantly, so it reports its problems even
//!    when the structure has others.
//!
//! [`parse_connection`], [`parse_send`] and [`parse_listen`] validate and
//! then deserialize, into configurations whose topics are already parsed
//! ([`TopicName`](crate::model::TopicName),
//! [`TopicFilter`](crate::model::TopicFilter)).
//!
//! [`Problem`] is the one problem type of the workspace: the component
//! returns it through the WIT `problem` record, and the host lists flow
//! files' problems with it.

use std::cmp::Ordering;
use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::config::{decode_base64, ConnectionConfig, ListenConfig, SendConfig};
use crate::model::{Error, ErrorCode, MqttVersion};
use crate::schema;
use crate::url::BrokerUrl;
use mqtt_topic as topic;

/// Which configuration a JSON text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A connection configuration ([`ConnectionConfig`]).
    Connection,
    /// A Send configuration ([`SendConfig`]).
    Send,
    /// A Listen configuration ([`ListenConfig`]).
    Listen,
}

impl Kind {
    /// The configuration's name in messages: "connection", "send", "listen".
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Send => "send",
            Kind::Listen => "listen",
        }
    }

    /// The JSON Schema of this kind, generated once.
    fn schema(self) -> &'static Value {
        static CONNECTION: OnceLock<Value> = OnceLock::new();
        static SEND: OnceLock<Value> = OnceLock::new();
        static LISTEN: OnceLock<Value> = OnceLock::new();
        match self {
            Kind::Connection => CONNECTION.get_or_init(schema::connection_schema),
            Kind::Send => SEND.get_or_init(schema::send_schema),
            Kind::Listen => LISTEN.get_or_init(schema::listen_schema),
        }
    }
}

/// One problem with a configuration; mirrors the WIT `problem`.
///
/// Its [`Display`](fmt::Display) fits in a sentence (`POINTER: message`,
/// the bare message for the whole document); [`Problem::line`] is the form
/// for listings, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// JSON pointer to where the problem is, `""` for the whole document.
    pub pointer: String,
    /// What is wrong, lowercase, without a final period.
    pub message: String,
}

impl Problem {
    /// A problem at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

impl Problem {
    /// The problem as a line of a listing: `POINTER: message`, with
    /// `(root)` standing for the whole document so every line starts with
    /// where.
    pub fn line(&self) -> ProblemLine<'_> {
        ProblemLine(self)
    }
}

/// A [`Problem`] displayed as a line of a listing (see [`Problem::line`]).
#[derive(Debug, Clone, Copy)]
pub struct ProblemLine<'a>(&'a Problem);

impl fmt::Display for ProblemLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.0.pointer.is_empty() {
            "(root)"
        } else {
            &self.0.pointer
        };
        write!(f, "{pointer}: {}", self.0.message)
    }
}

/// Every problem of the configuration `json` of `kind`; empty when valid.
///
/// Problems are ordered by pointer (list indexes numerically), and never
/// repeated.
pub fn validate(kind: Kind, json: &str) -> Vec<Problem> {
    match parse_json(json) {
        Ok(value) => validate_value(kind, &value),
        Err(problem) => vec![problem],
    }
}

/// `text` as a JSON value, or the problem that it is not JSON, with the
/// line and column.
pub fn parse_json(text: &str) -> Result<Value, Problem> {
    serde_json::from_str(text).map_err(|e| json_problem(&e))
}

/// Every problem of `value` against `schema`, a JSON Schema that schemars
/// generated: the structure pass alone, worded as for the connector's own
/// configurations (unknown keys suggest the closest known one, enums list
/// their values). For configurations the connector does not own, such as
/// the built-in broker's.
pub fn schema_problems(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    Walker {
        root: schema,
        out: &mut problems,
    }
    .check(schema, value, "", 0);
    in_order(problems)
}

/// Every problem of an already parsed configuration of `kind`.
pub fn validate_value(kind: Kind, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let root = kind.schema();
    Walker {
        root,
        out: &mut problems,
    }
    .check(root, value, "", 0);
    if let Some(object) = value.as_object() {
        match kind {
            Kind::Connection => check_connection(object, &mut problems),
            Kind::Send => check_send(object, &mut problems),
            Kind::Listen => check_listen(object, &mut problems),
        }
    }
    in_order(problems)
}

/// Problems ordered by pointer (list indexes numerically), each once.
fn in_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|a, b| compare_pointers(&a.pointer, &b.pointer));
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems
}

/// Validates and deserializes a connection configuration.
pub fn parse_connection(json: &str) -> Result<ConnectionConfig, Vec<Problem>> {
    parse(Kind::Connection, json)
}

/// Validates and deserializes a Send configuration.
pub fn parse_send(json: &str) -> Result<SendConfig, Vec<Problem>> {
    parse(Kind::Send, json)
}

/// Validates and deserializes a Listen configuration.
pub fn parse_listen(json: &str) -> Result<ListenConfig, Vec<Problem>> {
    parse(Kind::Listen, json)
}

fn parse<T: DeserializeOwned>(kind: Kind, json: &str) -> Result<T, Vec<Problem>> {
    let problems = validate(kind, json);
    if !problems.is_empty() {
        return Err(problems);
    }
    // Validation covers what serde checks, except what a `Value` hides,
    // such as a key written twice; report that rather than fail silently.
    serde_json::from_str(json).map_err(|e| vec![Problem::new("", e.to_string())])
}

/// One `invalid-config` error listing every problem, for an operation that
/// cannot open: "invalid send configuration: /topic: ...; /qos: ...".
pub fn config_error(kind: Kind, problems: &[Problem]) -> Error {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Error::new(
        ErrorCode::InvalidConfig,
        format!("invalid {} configuration: {}", kind.name(), list.join("; ")),
    )
}

// ---------------------------------------------------------------------------
// Syntax

fn json_problem(e: &serde_json::Error) -> Problem {
    let text = e.to_string();
    // serde_json appends " at line L column C"; say it our way instead.
    let what = match text.rfind(" at line ") {
        Some(cut) => &text[..cut],
        None => text.as_str(),
    };
    let what = what.replace("EOF while parsing", "the text ends inside");
    Problem::new(
        "",
        format!(
            "invalid JSON at line {}, column {}: {what}",
            e.line(),
            e.column()
        ),
    )
}

// ---------------------------------------------------------------------------
// Structure: a walk along the generated schema

/// Deeper than any schema of ours; stops a malformed `$ref` cycle.
const MAX_DEPTH: usize = 32;

struct Walker<'a> {
    root: &'a Value,
    out: &'a mut Vec<Problem>,
}

impl<'a> Walker<'a> {
    fn problem(&mut self, pointer: &str, message: String) {
        self.out.push(Problem::new(pointer, message));
    }

    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let root: &'a Value = self.root;
        reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
    }

    fn check(&mut self, schema: &Value, value: &Value, ptr: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                self.problem(ptr, "no value is allowed here".to_owned());
                return;
            }
            Value::Object(schema) => schema,
            _ => return,
        };
        if let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
        {
            self.check(target, value, ptr, depth + 1);
        }
        if let Some(allowed) = enum_values(self.root, schema, depth) {
            if !allowed.contains(value) {
                let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                let hint = match value.as_str() {
                    Some(text) => {
                        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                        did_you_mean(text, &names)
                    }
                    None => String::new(),
                };
                self.problem(
                    ptr,
                    format!(
                        "expected one of {}, found {}{hint}",
                        list.join(", "),
                        describe(value)
                    ),
                );
            }
            return;
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(keyword).and_then(Value::as_array) {
                self.check_branches(branches, value, ptr, depth);
                return;
            }
        }
        let types = types_of(schema);
        if types.is_empty() {
            return;
        }
        if value.is_null() && types.contains(&"null") {
            return;
        }
        if !types.iter().any(|t| has_type(value, t)) {
            let expected: Vec<&str> = types
                .iter()
                .filter(|t| **t != "null")
                .map(|t| type_name(t))
                .collect();
            self.problem(
                ptr,
                format!(
                    "expected {}, found {}",
                    expected.join(" or "),
                    describe(value)
                ),
            );
            return;
        }
        match value {
            Value::Number(_) => self.check_number(schema, value, ptr),
            Value::String(text) => {
                let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                if (text.chars().count() as u64) < min {
                    let message = if min == 1 {
                        "must not be empty".to_owned()
                    } else {
                        format!("must be at least {min} characters long")
                    };
                    self.problem(ptr, message);
                }
            }
            Value::Array(items) => {
                let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                if (items.len() as u64) < min {
                    let noun = if min == 1 { "item" } else { "items" };
                    self.problem(ptr, format!("must have at least {min} {noun}"));
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{ptr}/{i}"), depth + 1);
                    }
                }
            }
            Value::Object(object) => self.check_object(schema, object, ptr, depth),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_branches(&mut self, branches: &[Value], value: &Value, ptr: &str, depth: usize) {
        let is_null_branch = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
        if value.is_null() && branches.iter().any(is_null_branch) {
            return;
        }
        let candidates: Vec<&Value> = branches.iter().filter(|b| !is_null_branch(b)).collect();
        if let [only] = candidates.as_slice() {
            self.check(only, value, ptr, depth + 1);
            return;
        }
        // Several real alternatives (the broker's `"memory"` or
        // `{"disk": PATH}`): accept the first that fits. When the value
        // itself fits none, say every alternative; when it fits one in
        // shape but not inside, report the closest one.
        let mut best: Option<Vec<Problem>> = None;
        let mut only_the_value_is_wrong = true;
        for branch in &candidates {
            let mut found = Vec::new();
            Walker {
                root: self.root,
                out: &mut found,
            }
            .check(branch, value, ptr, depth + 1);
            if found.is_empty() {
                return;
            }
            only_the_value_is_wrong &= matches!(found.as_slice(), [p] if p.pointer == ptr);
            if best.as_ref().is_none_or(|b| found.len() < b.len()) {
                best = Some(found);
            }
        }
        let alternatives: Option<Vec<String>> = candidates
            .iter()
            .map(|branch| self.alternative(branch, depth))
            .collect();
        match alternatives {
            Some(alternatives) if only_the_value_is_wrong => self.problem(
                ptr,
                format!(
                    "expected {}, found {}",
                    alternatives.join(" or "),
                    describe(value)
                ),
            ),
            _ => self.out.extend(best.unwrap_or_default()),
        }
    }

    /// One alternative of a `oneOf` / `anyOf` in words: its constants, an
    /// object with its required keys, or its type.
    fn alternative(&self, branch: &Value, depth: usize) -> Option<String> {
        let mut branch = branch.as_object()?;
        if let Some(target) = branch
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
        {
            branch = target.as_object()?;
        }
        if let Some(values) = enum_values(self.root, branch, depth) {
            let list: Vec<String> = values.iter().map(ToString::to_string).collect();
            return Some(list.join(" or "));
        }
        let types = types_of(branch);
        if types == ["object"] {
            let required: Vec<String> = branch
                .get("required")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(Value::as_str)
                .map(|key| format!("\"{key}\": ..."))
                .collect();
            return Some(format!("{{{}}}", required.join(", ")));
        }
        let names: Vec<&str> = types.iter().map(|t| type_name(t)).collect();
        (!names.is_empty()).then(|| names.join(" or "))
    }

    fn check_number(&mut self, schema: &Map<String, Value>, value: &Value, ptr: &str) {
        let Some(number) = as_integer(value) else {
            return;
        };
        let (format_min, format_max) = match schema.get("format").and_then(Value::as_str) {
            Some("uint8") => (Some(0), Some(i128::from(u8::MAX))),
            Some("uint16") => (Some(0), Some(i128::from(u16::MAX))),
            Some("uint32") => (Some(0), Some(i128::from(u32::MAX))),
            Some("uint64") => (Some(0), Some(i128::from(u64::MAX))),
            _ => (None, None),
        };
        let bound = |key: &str| schema.get(key).and_then(as_integer);
        if let Some(min) = bound("minimum").or(format_min) {
            if number < min {
                self.problem(ptr, format!("must be at least {min}, got {number}"));
                return;
            }
        }
        if let Some(max) = bound("maximum").or(format_max) {
            if number > max {
                self.problem(ptr, format!("must be at most {max}, got {number}"));
            }
        }
    }

    fn check_object(
        &mut self,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        ptr: &str,
        depth: usize,
    ) {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for (key, value) in object {
            let here = format!("{ptr}/{}", escape_pointer(key));
            match properties.get(key) {
                Some(property) => self.check(property, value, &here, depth + 1),
                None if closed => {
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    let hint = did_you_mean(key, &known);
                    let message = if hint.is_empty() {
                        format!(
                            "unknown field {}; the fields here are {}",
                            quote(key),
                            known.join(", ")
                        )
                    } else {
                        format!("unknown field {}{hint}", quote(key))
                    };
                    self.problem(&here, message);
                }
                None => {}
            }
        }
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                self.problem(
                    &format!("{ptr}/{}", escape_pointer(name)),
                    format!("missing required field {}", quote(name)),
                );
            }
        }
    }
}

/// The allowed values when `schema` is an enumeration: `enum`, `const`, or
/// `oneOf`/`anyOf` whose branches are all constants (schemars writes
/// documented enum variants that way). `$ref`s are followed.
fn enum_values(root: &Value, schema: &Map<String, Value>, depth: usize) -> Option<Vec<Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.clone());
    }
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    let branches = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)?;
    let mut all = Vec::new();
    for branch in branches {
        let mut branch = branch.as_object()?;
        if let Some(reference) = branch.get("$ref").and_then(Value::as_str) {
            branch = root.pointer(reference.strip_prefix('#')?)?.as_object()?;
        }
        all.extend(enum_values(root, branch, depth + 1)?);
    }
    Some(all)
}

fn types_of(schema: &Map<String, Value>) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        // Only what serde reads as an integer: `1.0` or `1e3` is not.
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

fn as_integer(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

fn type_name(ty: &str) -> &'static str {
    match ty {
        "boolean" => "true or false",
        "string" => "text",
        "array" => "a list",
        "object" => "an object",
        "number" => "a number",
        "integer" => "a whole number",
        _ => "null",
    }
}

/// A value as a user would name it: `text "abc"`, `the number 1.5`, ...
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("text {}", quote(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A user's string in double quotes, escaped, shortened when long.
fn quote(text: &str) -> String {
    const LIMIT: usize = 60;
    match text.char_indices().nth(LIMIT) {
        None => format!("\"{}\"", text.escape_debug()),
        Some((cut, _)) => format!("\"{}\"...", text[..cut].escape_debug()),
    }
}

/// `~` and `/` escaped as RFC 6901 asks.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Common names from other MQTT clients, mapped to ours, for suggestions
/// that edit distance alone would miss.
const ALIASES: &[(&str, &str)] = &[
    ("clean_session", "clean_start"),
    ("cleansession", "clean_start"),
    ("keepalive", "keep_alive_secs"),
    ("keep_alive", "keep_alive_secs"),
    ("protocol", "mqtt_version"),
    ("version", "mqtt_version"),
    ("clientid", "client_id"),
    ("last_will", "will"),
    ("lwt", "will"),
    ("user", "username"),
    ("topics", "subscriptions"),
    ("filters", "subscriptions"),
    ("retain", "retained"),
];

/// `; did you mean "x"` for the candidate closest to `input` within edit
/// distance 2 (or a known alias), else an empty string.
fn did_you_mean(input: &str, candidates: &[&str]) -> String {
    let lower = input.to_lowercase();
    let alias = ALIASES
        .iter()
        .find(|(from, to)| *from == lower && candidates.contains(to))
        .map(|(_, to)| *to);
    // Long inputs cannot be close to our short names.
    let short = input.chars().count() <= 64;
    let closest = alias
        .or_else(|| {
            candidates
                .iter()
                .filter(|_| short)
                .map(|c| (edit_distance(&lower, &c.to_lowercase()), *c))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, c)| c)
        })
        .or_else(|| {
            // A name with a word left out and another misspelt
            // (`max_mesages` for `max_queued_messages`) is far in edits
            // but close in words.
            candidates
                .iter()
                .filter(|c| short && words_within(&lower, &c.to_lowercase()))
                .min_by_key(|c| c.len())
                .copied()
        });
    match closest {
        Some(c) if c != input => format!("; did you mean {}", quote(c)),
        _ => String::new(),
    }
}

/// Whether every `_`-separated word of `input` (two or more) is a word of
/// `candidate`, in order, the longer ones allowing one edit.
fn words_within(input: &str, candidate: &str) -> bool {
    let words: Vec<&str> = input.split('_').collect();
    if words.len() < 2 || words.iter().any(|w| w.is_empty()) {
        return false;
    }
    let mut rest = candidate.split('_');
    words.iter().all(|word| {
        let allowed = usize::from(word.chars().count() >= 5);
        rest.any(|c| edit_distance(word, c) <= allowed)
    })
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Orders pointers segment by segment, list indexes as numbers.
fn compare_pointers(a: &str, b: &str) -> Ordering {
    let mut a_parts = a.split('/');
    let mut b_parts = b.split('/');
    loop {
        match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Meaning

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn flag(object: &Map<String, Value>, key: &str) -> Option<bool> {
    object.get(key).and_then(Value::as_bool)
}

fn check_topic_name(name: &str, pointer: &str, out: &mut Vec<Problem>) {
    if let Err(e) = topic::validate_name(name) {
        out.push(Problem::new(pointer, e.to_string()));
    }
}

fn check_connection(c: &Map<String, Value>, out: &mut Vec<Problem>) {
    let url = text(c, "url").map(BrokerUrl::parse);
    if let Some(Err(e)) = &url {
        out.push(Problem::new("/url", e.to_string()));
    }
    if let Some(tls) = c.get("tls").and_then(Value::as_object) {
        if let Some(Ok(url)) = &url {
            if !url.tls {
                out.push(Problem::new(
                    "/tls",
                    "tls settings need an mqtts:// URL; with mqtt:// the connection does not use TLS",
                ));
            }
        }
        let has = |key| tls.get(key).is_some_and(|v| !v.is_null());
        match (has("client_cert_file"), has("client_key_file")) {
            (true, false) => out.push(Problem::new(
                "/tls/client_key_file",
                "client_cert_file needs client_key_file: a client certificate is used with its private key",
            )),
            (false, true) => out.push(Problem::new(
                "/tls/client_cert_file",
                "client_key_file needs client_cert_file: a private key is used with its client certificate",
            )),
            _ => {}
        }
    }
    let v311 = text(c, "mqtt_version") == Some(MqttVersion::V311.as_str());
    let no_client_id = text(c, "client_id").is_none_or(str::is_empty);
    if v311 && no_client_id && flag(c, "clean_start") == Some(false) {
        out.push(Problem::new(
            "/clean_start",
            "on MQTT 3.1.1 a session can only be resumed with a client_id: set client_id, or set clean_start to true",
        ));
    }
    if let Some(reconnect) = c.get("reconnect").and_then(Value::as_object) {
        let get = |key| reconnect.get(key).and_then(Value::as_u64);
        let min = get("min_delay_ms").unwrap_or(100);
        let max = get("max_delay_ms").unwrap_or(30_000);
        if min > max {
            out.push(Problem::new(
                "/reconnect/min_delay_ms",
                format!("min_delay_ms ({min}) must not be greater than max_delay_ms ({max})"),
            ));
        }
    }
    if let Some(will) = c.get("will").and_then(Value::as_object) {
        if let Some(topic) = text(will, "topic") {
            check_topic_name(topic, "/will/topic", out);
        }
        let payload = will.get("payload").is_some_and(|v| !v.is_null());
        if let Some(b64) = text(will, "payload_base64") {
            if payload {
                out.push(Problem::new(
                    "/will/payload_base64",
                    "set payload or payload_base64, not both",
                ));
            } else if let Err(e) = decode_base64(b64) {
                out.push(Problem::new(
                    "/will/payload_base64",
                    format!("not valid base64: {e}"),
                ));
            }
        }
    }
}

fn check_send(s: &Map<String, Value>, out: &mut Vec<Problem>) {
    if let Some(topic) = text(s, "topic") {
        check_topic_name(topic, "/topic", out);
    }
    if let Some(response) = s
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|p| text(p, "response_topic"))
    {
        check_topic_name(response, "/properties/response_topic", out);
    }
}

fn check_listen(l: &Map<String, Value>, out: &mut Vec<Problem>) {
    let group = text(l, "shared_group");
    if let Some(group) = group {
        if group.is_empty() {
            out.push(Problem::new(
                "/shared_group",
                "the share name must be at least one character long",
            ));
        } else if let Some(c) = group.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
            out.push(Problem::new(
                "/shared_group",
                format!("the share name cannot contain '{}'", c.escape_debug()),
            ));
        }
    }
    let only = text(l, "retained") == Some("only");
    if only && group.is_some() {
        out.push(Problem::new(
            "/shared_group",
            "shared subscriptions receive no retained messages, so retained \"only\" would never receive anything",
        ));
    }
    let Some(subscriptions) = l.get("subscriptions").and_then(Value::as_array) else {
        return;
    };
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (i, sub) in subscriptions.iter().enumerate() {
        let Some(sub) = sub.as_object() else { continue };
        let at = |field: &str| format!("/subscriptions/{i}/{field}");
        let filter = text(sub, "filter");
        let already_shared = filter.is_some_and(|f| f.starts_with("$share/"));
        if let Some(filter) = filter {
            if let Err(e) = topic::validate_filter(filter) {
                out.push(Problem::new(at("filter"), e.to_string()));
            }
            if already_shared && group.is_some() {
                out.push(Problem::new(
                    at("filter"),
                    "this filter is already a shared subscription: remove its $share/ prefix or shared_group",
                ));
            }
            if only && already_shared {
                out.push(Problem::new(
                    at("filter"),
                    "shared subscriptions receive no retained messages, so retained \"only\" would never receive anything",
                ));
            }
            match seen.iter().find(|(f, _)| *f == filter) {
                Some((_, first)) => out.push(Problem::new(
                    at("filter"),
                    format!(
                        "the filter {} is already at /subscriptions/{first}/filter; the broker would keep only one of them",
                        quote(filter)
                    ),
                )),
                None => seen.push((filter, i)),
            }
        }
        if flag(sub, "no_local") == Some(true) && (group.is_some() || already_shared) {
            out.push(Problem::new(
                at("no_local"),
                "no_local cannot be used with a shared subscription (MQTT-3.8.3-4)",
            ));
        }
        if only && sub.get("retain_handling").and_then(Value::as_u64) == Some(2) {
            out.push(Problem::new(
                at("retain_handling"),
                "retain_handling 2 tells the broker never to send retained messages, so retained \"only\" would never receive anything",
            ));
        }
        if only && flag(sub, "retain_as_published") == Some(true) {
            out.push(Problem::new(
                at("retain_as_published"),
                "with retained \"only\", retain_as_published would make live messages look retained",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("retain", "retained"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn a_name_close_in_words_is_suggested() {
        let keys = ["max_queued_messages", "max_inflight", "max_packet_size"];
        assert_eq!(
            did_you_mean("max_mesages", &keys),
            "; did you mean \"max_queued_messages\""
        );
        assert_eq!(
            did_you_mean("max_infligt", &keys),
            "; did you mean \"max_inflight\""
        );
        assert_eq!(did_you_mean("min_size", &keys), "");
        assert_eq!(did_you_mean("max", &keys), "");
    }

    #[test]
    fn problems_display_in_a_sentence_or_as_a_line() {
        let root = Problem::new("", "invalid JSON");
        let field = Problem::new("/topic", "must not be empty");
        assert_eq!(root.to_string(), "invalid JSON");
        assert_eq!(root.line().to_string(), "(root): invalid JSON");
        assert_eq!(field.to_string(), "/topic: must not be empty");
        assert_eq!(field.line().to_string(), "/topic: must not be empty");
    }

    #[test]
    fn pointers_sort_numerically() {
        let mut v = vec!["/subscriptions/10", "/subscriptions/2", "", "/a"];
        v.sort_by(|a, b| compare_pointers(a, b));
        assert_eq!(v, ["", "/a", "/subscriptions/2", "/subscriptions/10"]);
    }
}

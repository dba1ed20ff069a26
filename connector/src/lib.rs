//! The MQTT connector: configuration types, topic rules, and the Send and
//! Listen operations of an integration pipeline.
//!
//! # Layout
//!
//! - [`topic`]: topic names and topic filters, validated by every rule of
//!   MQTT 3.1.1 and 5.0, and matching a name against a filter.
#![warn(missing_docs)]

pub mod topic;

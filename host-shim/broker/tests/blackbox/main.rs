//! Black-box tests of the built-in MQTT 3.1.1 + 5.0 broker
//! (`mqtt_broker`).
//!
//! Each test starts its own broker in-process on 127.0.0.1, port 0, talks to
//! it with rumqttc clients (over TCP or TLS), raw bytes over TCP, or Mosquitto's own command
//! line clients, and shuts it down at the end. Test names and comments cite
//! the normative statements they check: `MQTT-x.y.z-n` ids from the 3.1.1
//! ("v311") and 5.0 ("v5") specifications.

mod acl;
mod admin;
mod admin_http;
mod auth;
mod connection;
mod faults;
mod flow;
mod interop;
mod limits;
mod malformed;
mod properties;
mod qos;
mod retained;
mod retained_delivery;
mod retainer;
mod session;
mod session_store;
mod shared;
mod tls;
mod will;

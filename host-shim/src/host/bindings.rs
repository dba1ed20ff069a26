//! Rust types and traits generated from the connector's WIT world.

wasmtime::component::bindgen!({
    world: "connector",
    path: "../connector/wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
    with: {
        "mqtt-connector:connector/mqtt.client": crate::mqtt::MqttClient,
    },
});

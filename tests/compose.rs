//! docker-compose.yml cannot run here (no Docker engine); this keeps it consistent with the
//! code: every kaudit service runs a role that exists, with a pipeline file that parses under
//! the service's environment, for both buses; the image it builds ships what those need.

mod common;

use kaudit::config::PipelineConfig;
use serde_json::Value;
use std::collections::HashMap;

fn compose() -> Value {
    let text = std::fs::read_to_string(common::repo().join("docker-compose.yml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn env_of(service: &Value) -> HashMap<String, String> {
    service["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("KAUDIT__"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_kaudit_service_has_a_valid_pipeline_for_both_buses() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for broker in ["kafka", "nats"] {
        assert!(services.contains_key(broker), "missing the {broker} service");
    }
    let kaudit: Vec<(&String, &Value)> = services.iter().filter(|(_, s)| s["image"] == "kaudit:local").collect();
    let roles: Vec<&str> = kaudit.iter().map(|(_, s)| s["command"][0].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "shim").count(), 1, "{roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "detect").count(), 2, "{roles:?}");
    for (name, service) in &kaudit {
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(command[1], "--pipeline", "{name}");
        let env = env_of(service);
        for bus in ["kafka", "nats"] {
            let file = command[2].replace("${KAUDIT_BUS:-kafka}", bus);
            let config = PipelineConfig::load_with_env(Some(&common::repo().join(&file)), Some(env.clone()))
                .unwrap_or_else(|e| panic!("{name} with {file}: {e}"));
            assert_eq!(format!("{:?}", config.bus.kind).to_lowercase(), bus, "{name}");
            assert_eq!(config.bus.kafka.brokers, "kafka:9092");
            assert_eq!(config.bus.nats.url, "nats://nats:4222");
            if command[0] == "shim" {
                assert_eq!(config.shim.listen, "0.0.0.0:8765");
                let published = service["ports"][0].as_str().unwrap();
                assert!(published.ends_with(":8765"), "{published}");
            } else {
                assert!(
                    config.bus.kafka.group_instance_id.is_some(),
                    "{name} needs a static member id"
                );
            }
        }
    }
    let ids: Vec<String> = kaudit
        .iter()
        .filter_map(|(_, s)| env_of(s).get("KAUDIT__BUS__KAFKA__GROUP_INSTANCE_ID").cloned())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(
        ids[0], ids[1],
        "two detectors with one static member id would fence each other"
    );
}

#[test]
fn the_image_ships_what_the_services_use() {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    for needed in [
        "COPY rules rules",
        "COPY pipelines pipelines",
        "--bin kaudit",
        "ENTRYPOINT [\"kaudit\"]",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
    // Every path the build copies exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for path in line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            assert!(
                common::repo().join(path).exists(),
                "Dockerfile copies {path}, which does not exist"
            );
        }
    }
}

/// The compose file runs the Apache Kafka the broker tests run (`integration/kafka/pom.xml`).
#[test]
fn the_kafka_image_is_the_version_the_tests_proved() {
    let pom = std::fs::read_to_string(common::repo().join("integration/kafka/pom.xml")).unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .unwrap();
    let compose = compose();
    assert_eq!(compose["services"]["kafka"]["image"], format!("apache/kafka:{version}"));
}

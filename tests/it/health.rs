//! Both servers answer gRPC health checks and reflection, behind the same
//! mutual TLS as everything else.

use casebridge::daemon::tls::{ClientTls, Identity};
use casebridge::protocol::ids::Role;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;

use crate::support::*;

fn channel(
    fed: &Fed,
    cert: &std::path::Path,
    key: &std::path::Path,
    addr: String,
    role: Role,
) -> tonic::transport::Channel {
    let id = Identity::load(cert, key).unwrap();
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .unwrap()
        .remove(0);
    ClientTls::new(&id, &root, &fed.broker_config.federation)
        .unwrap()
        .channel(&addr, role)
        .unwrap()
}

#[tokio::test]
async fn broker_and_node_report_serving_and_list_their_services() {
    let fed = start(&["HR"]).await;
    let node_cfg = &fed.node_configs[&cc("HR")];
    let to_broker = channel(
        &fed,
        &node_cfg.tls.cert,
        &node_cfg.tls.key,
        fed.broker_addr.to_string(),
        Role::Broker,
    );
    let health = HealthClient::new(to_broker.clone())
        .check(HealthCheckRequest {
            service: "casebridge.v1.Exchange".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    assert!(
        listed_services(ServerReflectionClient::new(to_broker))
            .await
            .contains(&"casebridge.v1.Exchange".to_string())
    );

    let agency = fed.fed.dir.join("agencies/HR/police");
    let to_node = channel(
        &fed,
        &agency.join("agency.crt"),
        &agency.join("agency.key"),
        fed.node_addr(cc("HR")).unwrap().to_string(),
        Role::Node(cc("HR")),
    );
    let health = HealthClient::new(to_node.clone())
        .check(HealthCheckRequest {
            service: "casebridge.v1.Agency".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    assert!(
        listed_services(ServerReflectionClient::new(to_node))
            .await
            .contains(&"casebridge.v1.Agency".to_string())
    );
}

/// Runs `casebridge health` as a readiness probe would.
fn probe(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casebridge"))
        .arg("health")
        .args(args)
        .output()
        .expect("run casebridge health");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_health_command_asks_each_daemon_with_its_own_certificate() {
    let mut fed = start(&["HR"]).await;
    let broker_cfg = fed.fed.broker_config.display().to_string();
    let node_cfg = fed.fed.node_config(cc("HR")).unwrap().display().to_string();
    let broker = format!("localhost:{}", fed.broker_addr.port());
    let node = format!("localhost:{}", fed.node_addr(cc("HR")).unwrap().port());

    let (ok, text) = tokio::task::spawn_blocking({
        let (c, a) = (broker_cfg.clone(), broker.clone());
        move || {
            probe(&[
                "--config",
                &c,
                "--address",
                &a,
                "--service",
                "casebridge.v1.Exchange",
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("casebridge.v1.Exchange is SERVING"), "{text}");

    let (ok, text) = tokio::task::spawn_blocking({
        let (c, a) = (node_cfg.clone(), node.clone());
        move || probe(&["--config", &c, "--node", "--address", &a])
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("the server is SERVING"), "{text}");

    // A service the daemon does not serve is not ready.
    let (ok, text) = tokio::task::spawn_blocking({
        let (c, a) = (node_cfg.clone(), node.clone());
        move || {
            probe(&[
                "--config",
                &c,
                "--node",
                "--address",
                &a,
                "--service",
                "casebridge.v1.Exchange",
            ])
        }
    })
    .await
    .unwrap();
    assert!(!ok, "{text}");

    // Asking the node's port for the broker is refused by the identity check.
    let (ok, text) = tokio::task::spawn_blocking({
        let (c, a) = (broker_cfg.clone(), node.clone());
        move || probe(&["--config", &c, "--address", &a])
    })
    .await
    .unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains(&node), "names the address: {text}");

    // A stopped daemon: a failure within the timeout, never a hang.
    fed.stop_broker().await.unwrap();
    let (ok, text) = tokio::task::spawn_blocking({
        let (c, a) = (broker_cfg, broker);
        move || probe(&["--config", &c, "--address", &a, "--timeout-secs", "3"])
    })
    .await
    .unwrap();
    assert!(!ok, "{text}");
}

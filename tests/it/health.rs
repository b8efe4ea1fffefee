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

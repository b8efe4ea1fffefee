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

/// Defines `$name`: what a reflection client of generation `$generation`
/// learns of a daemon: the services it lists, and for each name in `ask`
/// whether the daemon describes it (the file holding the symbol) or answers
/// NOT_FOUND. The two generations' messages are alike but distinct types.
macro_rules! reflection_client {
    ($name:ident, $generation:ident) => {
        async fn $name(
            channel: tonic::transport::Channel,
            ask: &[&str],
        ) -> (Vec<String>, Vec<bool>) {
            use tonic_reflection::pb::$generation::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$generation::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$generation::{
                ServerReflectionRequest, server_reflection_client,
            };
            let generation = stringify!($generation);
            let mut client = server_reflection_client::ServerReflectionClient::new(channel);
            let mut listed = Vec::new();
            let list = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = client
                .server_reflection_info(tokio_stream::iter(vec![list]))
                .await
                .unwrap()
                .into_inner();
            match stream.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(l)) => {
                    listed.extend(l.service.into_iter().map(|s| s.name));
                }
                _ => panic!("{generation} reflection did not answer ListServices with a list"),
            }
            let mut described = Vec::new();
            for symbol in ask {
                let req = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::FileContainingSymbol(
                        symbol.to_string(),
                    )),
                };
                let mut stream = client
                    .server_reflection_info(tokio_stream::iter(vec![req]))
                    .await
                    .unwrap()
                    .into_inner();
                described.push(match stream.message().await {
                    Ok(Some(r)) => matches!(
                        r.message_response,
                        Some(MessageResponse::FileDescriptorResponse(f))
                            if !f.file_descriptor_proto.is_empty()
                    ),
                    Err(s) if s.code() == tonic::Code::NotFound => false,
                    Ok(None) => panic!("{generation} reflection ended without an answer for {symbol}"),
                    Err(s) => panic!("{generation} reflection of {symbol}: {}", s.message()),
                });
            }
            (listed, described)
        }
    };
}

reflection_client!(reflect_v1, v1);
reflection_client!(reflect_v1alpha, v1alpha);

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn reflection_of_both_generations_lists_exactly_what_each_daemon_serves() {
    let fed = start(&["HR"]).await;
    let node_cfg = &fed.node_configs[&cc("HR")];
    let to_broker = channel(
        &fed,
        &node_cfg.tls.cert,
        &node_cfg.tls.key,
        fed.broker_addr.to_string(),
        Role::Broker,
    );
    let agency = fed.fed.dir.join("agencies/HR/police");
    let to_node = channel(
        &fed,
        &agency.join("agency.crt"),
        &agency.join("agency.key"),
        fed.node_addr(cc("HR")).unwrap().to_string(),
        Role::Node(cc("HR")),
    );
    let common = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let broker_lists: Vec<String> = ["casebridge.v1.Audit", "casebridge.v1.Exchange"]
        .iter()
        .chain(&common)
        .map(ToString::to_string)
        .collect();
    let node_lists: Vec<String> = ["casebridge.v1.Agency"]
        .iter()
        .chain(&common)
        .map(ToString::to_string)
        .collect();
    // What each describes: its own services, a message they use, and not
    // the other daemon's services.
    let ask = [
        "casebridge.v1.Exchange",
        "casebridge.v1.Audit",
        "casebridge.v1.Agency",
        "casebridge.v1.Envelope",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
        "casebridge.v1.NoSuchService",
    ];
    let broker_describes = vec![true, true, false, true, true, true, true, false];
    let node_describes = vec![false, false, true, true, true, true, true, false];

    for (generation, (listed, described)) in [
        ("v1", reflect_v1(to_broker.clone(), &ask).await),
        ("v1alpha", reflect_v1alpha(to_broker.clone(), &ask).await),
    ] {
        assert_eq!(
            sorted(listed),
            sorted(broker_lists.clone()),
            "broker, {generation}"
        );
        assert_eq!(described, broker_describes, "broker, {generation}");
    }
    for (generation, (listed, described)) in [
        ("v1", reflect_v1(to_node.clone(), &ask).await),
        ("v1alpha", reflect_v1alpha(to_node.clone(), &ask).await),
    ] {
        assert_eq!(
            sorted(listed),
            sorted(node_lists.clone()),
            "node, {generation}"
        );
        assert_eq!(described, node_describes, "node, {generation}");
    }
}

/// Asks a daemon's health service about `service`: its serving status, or
/// the gRPC code it answered with.
async fn health_of(channel: tonic::transport::Channel, service: &str) -> Result<i32, tonic::Code> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test]
async fn health_is_reported_per_served_service_and_not_found_for_others() {
    let fed = start(&["HR"]).await;
    let node_cfg = &fed.node_configs[&cc("HR")];
    let to_broker = channel(
        &fed,
        &node_cfg.tls.cert,
        &node_cfg.tls.key,
        fed.broker_addr.to_string(),
        Role::Broker,
    );
    let agency = fed.fed.dir.join("agencies/HR/police");
    let to_node = channel(
        &fed,
        &agency.join("agency.crt"),
        &agency.join("agency.key"),
        fed.node_addr(cc("HR")).unwrap().to_string(),
        Role::Node(cc("HR")),
    );
    let serving = Ok(ServingStatus::Serving as i32);
    for service in ["", "casebridge.v1.Exchange", "casebridge.v1.Audit"] {
        assert_eq!(
            health_of(to_broker.clone(), service).await,
            serving,
            "broker: {service}"
        );
    }
    for service in ["casebridge.v1.Agency", "casebridge.v1.Nope"] {
        assert_eq!(
            health_of(to_broker.clone(), service).await,
            Err(tonic::Code::NotFound),
            "broker: {service}"
        );
    }
    for service in ["", "casebridge.v1.Agency"] {
        assert_eq!(
            health_of(to_node.clone(), service).await,
            serving,
            "node: {service}"
        );
    }
    for service in ["casebridge.v1.Exchange", "casebridge.v1.Audit"] {
        assert_eq!(
            health_of(to_node.clone(), service).await,
            Err(tonic::Code::NotFound),
            "node: {service}"
        );
    }
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

//! The command line's error paths, run as a person runs them: the real
//! binary, and the text it prints checked. Errors are sentences that name
//! what went wrong and where, each cause said once, with no Rust debug
//! formatting.

use std::path::Path;

use crate::cli_commands::{Run, casebridge, own_profile, profile_file};
use crate::support::*;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// The run failed, and what it printed reads as sentences: no Rust debug
/// formatting, and no cause repeated.
fn failed_in_sentences(run: &Run) {
    assert!(!run.ok, "{run}");
    assert!(
        run.stderr.starts_with("error: ") || run.stderr.contains("\nerror: "),
        "{run}"
    );
    for debug in ["Os {", "Ok(", "Err(", "Some(", "kind: ", "code: ", "\\\""] {
        assert!(!run.stderr.contains(debug), "{debug} in: {run}");
    }
    for line in run.stderr.lines() {
        for cause in ["os error", "No such file", "Connection refused"] {
            assert!(line.matches(cause).count() <= 1, "{cause} twice: {run}");
        }
    }
}

#[tokio::test]
async fn a_profile_that_names_another_agency_than_its_certificate_is_refused() {
    let fed = start(&["RS"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let node = fed.node_addr(cc("RS")).unwrap().to_string();
    // The border police's certificate under a profile that says police.
    let profile = profile_file(&fed, tmp.path(), "RS/police", "RS/border-police", &node);
    let run = casebridge(&["inbox", "--profile", p(&profile)]).await;
    failed_in_sentences(&run);
    assert!(
        run.stderr.contains("the profile names agency RS/police")
            && run
                .stderr
                .contains("spiffe://casebridge.test/agency/RS/border-police"),
        "{run}"
    );
    // Nothing was listed, under either name.
    assert!(run.stdout.is_empty(), "{run}");
}

#[tokio::test]
async fn a_missing_profile_is_named_with_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere/profile.toml");
    let run = casebridge(&["inbox", "--profile", p(&missing)]).await;
    failed_in_sentences(&run);
    assert!(
        run.stderr.contains(p(&missing)) && run.stderr.matches("os error 2").count() == 1,
        "{run}"
    );
}

#[tokio::test]
async fn unknown_kinds_and_labels_list_the_valid_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let record = format!(
        "{}/examples/records/missing_person_trace.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let profile = tmp.path().join("profile.toml");
    let send = |kind: &'static str, purpose: &'static str| {
        let record = record.clone();
        let profile = profile.clone();
        async move {
            casebridge(&[
                "send",
                "--profile",
                p(&profile),
                "--to",
                "BA/missing-persons",
                "--kind",
                kind,
                "--record",
                &record,
                "--purpose",
                purpose,
                "--legal-basis",
                "humanitarian-agreement",
            ])
            .await
        }
    };
    let run = send("missing-persn-trace", "missing-persons").await;
    failed_in_sentences(&run);
    assert!(
        run.stderr
            .contains("unknown record kind \"missing-persn-trace\"; the kinds are mla-request, ")
            && run.stderr.contains("missing-person-trace")
            && run.stderr.contains("permission-grant"),
        "{run}"
    );
    // A kind that is not the record's says both, in the printed spelling.
    let run = send("wanted_alert", "missing-persons").await;
    failed_in_sentences(&run);
    assert!(
        run.stderr
            .contains("--kind is wanted-alert but the record is a missing-person-trace"),
        "{run}"
    );
    let run = send("missing_person_trace", "missing-people").await;
    failed_in_sentences(&run);
    assert!(
        run.stderr
            .contains("unknown purpose \"missing-people\"; one of: ")
            && run.stderr.contains("missing-persons"),
        "{run}"
    );
}

#[tokio::test]
async fn a_second_node_on_the_same_data_directory_says_it_is_in_use() {
    let fed = start(&["HR"]).await;
    let config = &fed
        .fed
        .node_configs
        .iter()
        .find(|(c, _)| *c == cc("HR"))
        .unwrap()
        .1;
    let data_dir = fed.node_configs[&cc("HR")].data_dir.display().to_string();
    let run = casebridge(&["node", "--config", p(config)]).await;
    failed_in_sentences(&run);
    assert!(
        run.stderr.contains(&format!(
            "the data directory {data_dir} is in use by another running broker or node"
        )) && run.stderr.matches(&data_dir).count() == 1,
        "{run}"
    );
}

#[tokio::test]
async fn a_node_that_does_not_answer_is_named_by_its_address() {
    let fed = start(&["HR"]).await;
    let tmp = tempfile::tempdir().unwrap();
    // A port bound but not listening: connections to it are refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let profile = profile_file(&fed, tmp.path(), "HR/police", "HR/police", &addr);
    let run = casebridge(&["inbox", "--profile", p(&profile)]).await;
    failed_in_sentences(&run);
    assert!(
        run.stderr.contains(&format!(
            "unavailable: cannot connect to {addr}: Connection refused"
        )),
        "{run}"
    );
    // The profile that goes to the node that runs works.
    let profile = own_profile(&fed, tmp.path(), "HR/police");
    let run = casebridge(&["inbox", "--profile", p(&profile)]).await;
    assert!(
        run.ok && run.stdout.contains("inbox of HR/police is empty"),
        "{run}"
    );
}

#[tokio::test]
async fn config_check_names_every_problem_of_a_config_and_passes_a_good_one() {
    let fed = create(&["HR"]).await;
    let node_config = fed.fed.node_configs[0].1.clone();
    let run = casebridge(&["config", "check", p(&node_config)]).await;
    assert!(
        run.ok && run.stdout.lines().count() == 1 && run.stdout.contains("a valid node config"),
        "{run}"
    );
    let broker_config = fed.fed.broker_config.clone();
    let run = casebridge(&["config", "check", p(&broker_config), "--broker"]).await;
    assert!(
        run.ok && run.stdout.lines().count() == 1 && run.stdout.contains("a valid broker config"),
        "{run}"
    );
    // Nothing was started: no data directory was made.
    assert!(!fed.broker_config.data_dir.exists());

    // A certificate that is no certificate and a log key that is not the
    // directory's: one sentence each.
    std::fs::write(&fed.broker_config.tls.cert, "not a certificate\n").unwrap();
    let hr_key = &fed.node_configs[&cc("HR")].keys.signing;
    std::fs::copy(hr_key, &fed.broker_config.log_key).unwrap();
    let run = casebridge(&["config", "check", p(&broker_config), "--broker"]).await;
    failed_in_sentences(&run);
    let problems: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(problems.len(), 2, "{run}");
    assert!(
        problems[0].contains("TLS certificate and key")
            && problems[0].contains(p(&fed.broker_config.tls.cert)),
        "{run}"
    );
    assert!(problems[1].starts_with("error: log key: "), "{run}");

    // A file that is not a config at all.
    let bad = fed.fed.dir.join("bad.toml");
    std::fs::write(&bad, "listen = [").unwrap();
    let run = casebridge(&["config", "check", p(&bad), "--node"]).await;
    failed_in_sentences(&run);
    assert!(run.stderr.contains(p(&bad)), "{run}");
}

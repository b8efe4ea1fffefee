//! Policy bundles changed while the broker and the nodes run: a valid new
//! set takes effect without a restart; an invalid, unsigned or overreaching
//! one is refused with file, line and reason, and the set in force stays.
//! Every change is an audit event.

use casebridge::protocol::policy::Owner;
use casebridge::protocol::proto::v1;
use casebridge::storage::files::policy::Reload;
use tonic::Code;
use v1::audit_event::Event;

use crate::support::*;

const FORBID_BA: &str = r#"
@id("no-more-to-ba")
@reason("HR/police stopped sending to BA pending a review")
forbid (
  principal == Casebridge::Agency::"HR/police",
  action == Casebridge::Action::"transfer",
  resource == Casebridge::Agency::"BA/police"
);
"#;

/// The HR/police bundle directory of `fed`.
fn hr_police(fed: &Fed) -> std::path::PathBuf {
    fed.broker_config.policies.join("agencies/HR/police")
}

fn bump_version(dir: &std::path::Path) {
    let path = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("version = 1", "version = 2")).unwrap();
}

fn sign(fed: &Fed, dir: &std::path::Path) {
    let signer = casebridge::storage::files::policy::signer_from_federation(
        &fed.fed.dir,
        &Owner::Agency("HR/police".parse().unwrap()),
    )
    .unwrap();
    casebridge::storage::files::policy::sign_bundle(dir, &signer).unwrap();
}

async fn policy_events(fed: &Fed) -> Vec<v1::PolicyChanged> {
    audit(fed)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::PolicyChanged(p)) => Some(p),
            _ => None,
        })
        .collect()
}

async fn hr_to_ba(fed: &Fed) -> Result<v1::SendResponse, tonic::Status> {
    try_send(
        fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await
}

#[tokio::test]
async fn a_new_signed_bundle_takes_effect_without_a_restart() {
    let fed = start(&["HR", "BA"]).await;
    assert_eq!(
        hr_to_ba(&fed).await.unwrap().state,
        v1::SendState::Accepted as i32
    );
    let before = fed.broker().unwrap().policies().hash().to_string();

    let dir = hr_police(&fed);
    std::fs::write(dir.join("review.cedar"), FORBID_BA).unwrap();
    bump_version(&dir);
    sign(&fed, &dir);

    let outcome = fed.broker().unwrap().reload_policies().await.unwrap();
    let Reload::Replaced {
        hash,
        bundles,
        previous,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(previous, before);
    assert!(bundles.contains("HR/police v2"), "{bundles}");
    assert!(matches!(
        fed.node(cc("HR")).unwrap().reload_policies().await,
        Reload::Replaced { .. }
    ));

    // The node now refuses before sealing, naming the new policy.
    let err = hr_to_ba(&fed).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("no-more-to-ba") && err.message().contains("review.cedar"),
        "{}",
        err.message()
    );

    let events = policy_events(&fed).await;
    let last = events.last().unwrap();
    assert_eq!(last.bundle_hash, hash);
    assert!(last.detail.contains("HR/police v2"), "{}", last.detail);
    // Reloading the same bundles again changes nothing and logs nothing.
    assert_eq!(
        fed.broker().unwrap().reload_policies().await.unwrap(),
        Reload::Unchanged
    );
    assert_eq!(policy_events(&fed).await.len(), events.len());
}

#[tokio::test]
async fn an_unchanged_tree_is_not_compiled_again_and_a_change_is_seen_at_once() {
    let fed = start(&["HR", "BA"]).await;
    let broker = fed.broker().unwrap();
    let checks = broker.policy_full_checks();
    assert!(checks >= 1, "the set in force was checked at start");
    for _ in 0..3 {
        assert_eq!(broker.reload_policies().await.unwrap(), Reload::Unchanged);
    }
    assert_eq!(broker.policy_full_checks(), checks, "nothing changed");

    // A new file, a manifest of the same length and a new signature.
    let dir = hr_police(&fed);
    std::fs::write(dir.join("review.cedar"), FORBID_BA).unwrap();
    bump_version(&dir);
    sign(&fed, &dir);
    assert!(matches!(
        broker.reload_policies().await.unwrap(),
        Reload::Replaced { .. }
    ));
    let after = broker.policy_full_checks();
    assert!(after > checks);
    assert_eq!(broker.reload_policies().await.unwrap(), Reload::Unchanged);
    assert_eq!(broker.policy_full_checks(), after);
}

async fn assert_refused_at_reload(fed: &Fed, says: &[&str]) {
    let broker = fed.broker().unwrap();
    let in_force = broker.policies().hash().to_string();
    let before = policy_events(fed).await.len();
    let outcome = broker.reload_policies().await.unwrap();
    let Reload::Refused {
        reason,
        first: true,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    for s in says {
        assert!(reason.contains(s), "{reason:?} lacks {s:?}");
    }
    assert_eq!(broker.policies().hash(), in_force, "the set in force stays");
    let events = policy_events(fed).await;
    assert_eq!(events.len(), before + 1, "the refusal is an audit event");
    assert_eq!(events.last().unwrap().bundle_hash, in_force);
    assert!(events.last().unwrap().detail.starts_with("refused"));
    // The same refusal is not logged twice.
    assert!(matches!(
        broker.reload_policies().await.unwrap(),
        Reload::Refused { first: false, .. }
    ));
    assert_eq!(policy_events(fed).await.len(), before + 1);
    // And transfers go on under the previous set.
    assert_eq!(
        hr_to_ba(fed).await.unwrap().state,
        v1::SendState::Accepted as i32
    );
}

#[tokio::test]
async fn a_bundle_with_a_syntax_error_is_refused_with_file_and_line() {
    let fed = start(&["HR", "BA"]).await;
    let dir = hr_police(&fed);
    std::fs::write(
        dir.join("broken.cedar"),
        "\n\npermit (principal, action, resource) when { context.;\n",
    )
    .unwrap();
    bump_version(&dir);
    sign_best_effort(&fed, &dir);
    assert_refused_at_reload(&fed, &["broken.cedar:3"]).await;
}

/// Signing validates first; a broken bundle cannot be signed, which is
/// itself a refusal worth checking.
fn sign_best_effort(fed: &Fed, dir: &std::path::Path) {
    let signer = casebridge::storage::files::policy::signer_from_federation(
        &fed.fed.dir,
        &Owner::Agency("HR/police".parse().unwrap()),
    )
    .unwrap();
    assert!(
        casebridge::storage::files::policy::sign_bundle(dir, &signer).is_err(),
        "a broken bundle must not be signable"
    );
}

#[tokio::test]
async fn an_unsigned_change_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let dir = hr_police(&fed);
    std::fs::write(dir.join("review.cedar"), FORBID_BA).unwrap();
    bump_version(&dir);
    // Not signed again: the old signature no longer matches.
    assert_refused_at_reload(&fed, &["agencies/HR/police", "signature"]).await;
}

#[tokio::test]
async fn a_bundle_that_speaks_for_another_agency_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let dir = hr_police(&fed);
    let overreach = r#"
@id("grant-for-ba")
permit (
  principal == Casebridge::Agency::"BA/police",
  action == Casebridge::Action::"transfer",
  resource
);
"#;
    std::fs::write(dir.join("overreach.cedar"), overreach).unwrap();
    bump_version(&dir);
    sign_best_effort(&fed, &dir);
    assert_refused_at_reload(&fed, &["overreach.cedar", "other agencies"]).await;
}

#[tokio::test]
async fn a_rolled_back_bundle_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let dir = hr_police(&fed);
    std::fs::write(dir.join("review.cedar"), "// nothing yet\n").unwrap();
    // Same version, different content.
    sign(&fed, &dir);
    assert_refused_at_reload(&fed, &["HR/police", "without a new version"]).await;
}

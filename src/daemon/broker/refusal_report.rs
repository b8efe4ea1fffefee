//! ReportRefusal: a node records in the audit log a transfer its own policy
//! refused before sealing. The report is checked field by field (the node
//! speaks only for its own active agencies, names only what the directory
//! and the vocabulary know, and claims nothing a sealed envelope would
//! have) before its event is appended.

use tonic::{Response, Status};

use super::BrokerState;
use crate::daemon::status::broker_storage;
use crate::protocol::bounds::{MAX_BUNDLE_HASH, MAX_CASE_REFERENCE, MAX_REFUSAL_EXPLANATION};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;

/// Checks node `node`'s refusal report and appends its audit event.
pub(super) async fn report(
    state: &BrokerState,
    node: Country,
    r: v1::RefusalReport,
) -> Result<Response<v1::AcknowledgeResponse>, Status> {
    let r = check_refusal_report(node, r, &state.directory())?;
    let event = v1::AuditEvent {
        at_ms: state.now_ms(),
        event: Some(v1::audit_event::Event::SubmissionRefused(
            v1::SubmissionRefused {
                submitting_node: node.to_string(),
                code: v1::RefusalCode::Policy as i32,
                reason: format!("refused by node {node} before sealing"),
                envelope: Some(r.transfer),
                policy_bundle_hash: r.policy_bundle_hash,
                policy_explanation: r.policy_explanation,
                unverified_header_sha256: Vec::new(),
            },
        )),
    };
    let index = state.store.append(event).await.map_err(broker_storage)?;
    Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
}

/// A short, quoted prefix of something a peer sent, for error messages.
fn quoted(s: &str) -> String {
    crate::protocol::bounds::quoted(s)
}

/// A refusal report a node may make: for an active agency of its own, with
/// labels that name only what the directory and the vocabulary know, and
/// nothing a sealed envelope would have (nothing was sealed). Each error
/// names the field and the limit it broke.
struct RefusalReport {
    transfer: v1::EnvelopeSummary,
    policy_bundle_hash: String,
    policy_explanation: String,
}

fn check_refusal_report(
    node: Country,
    r: v1::RefusalReport,
    dir: &crate::protocol::directory::Directory,
) -> Result<RefusalReport, Status> {
    let invalid = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    let denied = |field: &str, why: String| Status::permission_denied(format!("{field}: {why}"));
    let t = r
        .transfer
        .ok_or_else(|| invalid("transfer", "missing".into()))?;
    // Who: only the reporting node's own agencies that the directory lists.
    if t.sender_node != node.as_str() {
        return Err(denied(
            "transfer.sender_node",
            format!(
                "node {node} reports only its own refusals, not {}",
                quoted(&t.sender_node)
            ),
        ));
    }
    let sender: crate::protocol::ids::AgencyId = t.sender_agency.parse().map_err(|_| {
        invalid(
            "transfer.sender_agency",
            format!("{} is not an agency id (CC/name)", quoted(&t.sender_agency)),
        )
    })?;
    if sender.country() != node {
        return Err(denied(
            "transfer.sender_agency",
            format!("node {node} cannot report for {sender}"),
        ));
    }
    match dir.agency(&sender) {
        Some(a) if !a.revoked => {}
        Some(_) => {
            return Err(denied(
                "transfer.sender_agency",
                format!("{sender} is revoked"),
            ));
        }
        None => {
            return Err(denied(
                "transfer.sender_agency",
                format!("{sender} is not in the directory"),
            ));
        }
    }
    // Nothing was sealed, so nothing a sealed envelope has may be claimed.
    for (field, given) in [
        ("transfer.envelope_id", !t.envelope_id.is_empty()),
        ("transfer.header_sha256", !t.header_sha256.is_empty()),
        (
            "transfer.ciphertext_sha256",
            !t.ciphertext_sha256.is_empty(),
        ),
        ("transfer.ciphertext_len", t.ciphertext_len != 0),
    ] {
        if given {
            return Err(invalid(
                field,
                "must be empty: a refusal before sealing has no envelope".into(),
            ));
        }
    }
    // Recipients: agencies the directory lists, each once, so at most as
    // many as it lists.
    let listed = dir.agencies().count();
    if t.recipients.is_empty() || t.recipients.len() > listed {
        return Err(invalid(
            "transfer.recipients",
            format!(
                "{} given; between 1 and {listed} (the agencies in the directory)",
                t.recipients.len()
            ),
        ));
    }
    let mut recipients = std::collections::BTreeSet::new();
    for (i, a) in t.recipients.iter().enumerate() {
        let field = format!("transfer.recipients[{i}]");
        let id: crate::protocol::ids::AgencyId = a
            .parse()
            .map_err(|_| invalid(&field, format!("{} is not an agency id", quoted(a))))?;
        if dir.agency(&id).is_none() {
            return Err(invalid(&field, format!("{id} is not in the directory")));
        }
        if !recipients.insert(id) {
            return Err(invalid(&field, format!("{a} is listed twice")));
        }
    }
    // Labels: values of the vocabulary, each category once.
    let mut categories = std::collections::BTreeSet::new();
    for (i, c) in t.declared_categories.iter().enumerate() {
        let field = format!("transfer.declared_categories[{i}]");
        if !matches!(v1::DataCategory::try_from(*c), Ok(d) if d != v1::DataCategory::Unspecified) {
            return Err(invalid(&field, format!("{c} is not a data category")));
        }
        if !categories.insert(*c) {
            return Err(invalid(&field, format!("{c} is listed twice")));
        }
    }
    let known = [
        (
            "transfer.kind",
            v1::RecordKind::try_from(t.kind).is_ok_and(|k| k != v1::RecordKind::Unspecified),
        ),
        (
            "transfer.purpose",
            v1::Purpose::try_from(t.purpose).is_ok_and(|p| p != v1::Purpose::Unspecified),
        ),
        (
            "transfer.legal_basis",
            v1::LegalBasis::try_from(t.legal_basis).is_ok_and(|b| b != v1::LegalBasis::Unspecified),
        ),
        (
            "transfer.transfer_ground",
            v1::TransferGround::try_from(t.transfer_ground).is_ok(),
        ),
        (
            "transfer.handling",
            v1::HandlingCode::try_from(t.handling)
                .is_ok_and(|h| h != v1::HandlingCode::Unspecified),
        ),
        (
            "transfer.classification",
            v1::Classification::try_from(t.classification).is_ok(),
        ),
        (
            "transfer.priority",
            v1::Priority::try_from(t.priority).is_ok(),
        ),
    ];
    for (field, ok) in known {
        if !ok {
            return Err(invalid(field, "missing or not a known value".into()));
        }
    }
    if t.case_reference.len() > MAX_CASE_REFERENCE {
        return Err(invalid(
            "transfer.case_reference",
            format!(
                "{} bytes; the limit is {MAX_CASE_REFERENCE}",
                t.case_reference.len()
            ),
        ));
    }
    if !t.in_reply_to.is_empty() && t.in_reply_to.parse::<EnvelopeId>().is_err() {
        return Err(invalid(
            "transfer.in_reply_to",
            format!("{} is not an envelope id", quoted(&t.in_reply_to)),
        ));
    }
    if r.policy_bundle_hash.len() > MAX_BUNDLE_HASH
        || !r.policy_bundle_hash.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "policy_bundle_hash",
            format!(
                "{} bytes; at most {MAX_BUNDLE_HASH} printable ASCII",
                r.policy_bundle_hash.len()
            ),
        ));
    }
    if r.policy_explanation.len() > MAX_REFUSAL_EXPLANATION {
        return Err(invalid(
            "policy_explanation",
            format!(
                "{} bytes; the limit is {MAX_REFUSAL_EXPLANATION}",
                r.policy_explanation.len()
            ),
        ));
    }
    Ok(RefusalReport {
        transfer: t,
        policy_bundle_hash: r.policy_bundle_hash,
        policy_explanation: r.policy_explanation,
    })
}

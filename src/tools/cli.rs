//! The person-facing commands of an agency (`send`, `inbox`, `fetch`,
//! `status`, `sent`, `forward`, `request-permission`, `grant-permission`),
//! and the human rendering of records, labels and receipts that the demo
//! and the audit tools share.
//!
//! Names print in one convention, lower case with hyphens
//! (`missing-person-trace`, `identity-document`, `missing-persons`); every
//! command accepts the snake_case spelling (`missing_person_trace`) as well.
//! The wire and the policies keep their own spellings.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::protocol::categories;
use crate::protocol::proto::v1;
use crate::tools::client::AgencyClient;

pub use crate::tools::names::*;

/// One line per label, for people.
pub fn labels_text(l: &v1::Labels) -> String {
    let mut s = format!(
        "purpose {}, legal basis {}",
        purpose_name(l.purpose),
        basis_name(l.legal_basis)
    );
    if !l.legal_basis_reference.is_empty() {
        let _ = write!(s, " ({})", l.legal_basis_reference);
    }
    if l.transfer_ground != v1::TransferGround::None as i32 {
        let _ = write!(s, ", transfer ground {}", ground_name(l.transfer_ground));
    }
    let _ = write!(s, ", {}", handling_name(l.handling));
    if !l.handling_restriction.is_empty() {
        let _ = write!(s, " \"{}\"", l.handling_restriction);
    }
    if let Some(e) = &l.evaluation {
        let src = v1::SourceReliability::try_from(e.source)
            .map(|x| short(x.as_str_name(), "SOURCE_RELIABILITY_").to_uppercase())
            .unwrap_or_default();
        let acc = v1::InformationAccuracy::try_from(e.accuracy)
            .map(|x| short(x.as_str_name(), "INFORMATION_ACCURACY_"))
            .unwrap_or_default();
        if !src.is_empty() && src != "UNSPECIFIED" {
            let _ = write!(s, ", evaluation {src}{acc}");
        }
    }
    if let Ok(c) = v1::Classification::try_from(l.classification) {
        if c != v1::Classification::Unspecified {
            let _ = write!(s, ", {}", short(c.as_str_name(), "CLASSIFICATION_"));
        }
    }
    if let Ok(p) = v1::Priority::try_from(l.priority) {
        if p != v1::Priority::Unspecified {
            let _ = write!(s, ", priority {}", short(p.as_str_name(), "PRIORITY_"));
        }
    }
    if !l.case_reference.is_empty() {
        let _ = write!(s, ", case {}", l.case_reference);
    }
    s
}

/// Labels as given on the command line.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LabelArgs {
    /// Purpose, e.g. missing-persons, prosecution, immediate-threat,
    /// investigation-migrant-smuggling, statistics.
    #[arg(long)]
    pub purpose: String,
    /// Legal basis, e.g. humanitarian-agreement, european-mla-convention,
    /// regional-police-convention, bilateral-agreement, appropriate-safeguards.
    #[arg(long)]
    pub legal_basis: String,
    /// The named agreement or ground.
    #[arg(long, default_value = "")]
    pub legal_basis_ref: String,
    /// Third-country transfer ground, needed when an EU member's agency
    /// sends personal data to a non-member: none, adequacy-decision,
    /// appropriate-safeguards or specific-situation-derogation.
    #[arg(long, default_value = "none")]
    pub transfer_ground: String,
    /// Handling code: H0, H1, H2 or H3.
    #[arg(long, default_value = "H0")]
    pub handling: String,
    /// The provider's restriction text, required with H3.
    #[arg(long, default_value = "")]
    pub restriction: String,
    /// 4x4 evaluation, e.g. B2.
    #[arg(long)]
    pub evaluation: Option<String>,
    /// unclassified, restricted or confidential.
    #[arg(long, default_value = "restricted")]
    pub classification: String,
    /// routine, urgent or immediate.
    #[arg(long, default_value = "routine")]
    pub priority: String,
    /// Pseudonymous case reference.
    #[arg(long, default_value = "")]
    pub case_ref: String,
    /// Envelope id of the record this one answers.
    #[arg(long, default_value = "")]
    pub in_reply_to: String,
    /// Days until every copy is purged; the node's default if unset.
    #[arg(long)]
    pub expires_in_days: Option<u32>,
}

impl LabelArgs {
    pub fn to_labels(&self, now_ms: i64) -> anyhow::Result<v1::Labels> {
        use v1::{
            Classification as C, HandlingCode as H, LegalBasis as L, Priority as P, Purpose as U,
        };
        let purposes: Vec<String> = (1..=12)
            .filter_map(|i| U::try_from(i).ok())
            .map(|p| short(p.as_str_name(), "PURPOSE_"))
            .collect();
        let bases: Vec<String> = (1..=8)
            .filter_map(|i| L::try_from(i).ok())
            .map(|p| short(p.as_str_name(), "LEGAL_BASIS_"))
            .collect();
        let pr: Vec<&str> = purposes.iter().map(String::as_str).collect();
        let br: Vec<&str> = bases.iter().map(String::as_str).collect();
        let purpose = parse_label("purpose", "PURPOSE_", &self.purpose, U::from_str_name, &pr)?;
        let legal_basis = parse_label(
            "legal basis",
            "LEGAL_BASIS_",
            &self.legal_basis,
            L::from_str_name,
            &br,
        )?;
        let handling = parse_label(
            "handling code",
            "HANDLING_CODE_",
            &self.handling,
            H::from_str_name,
            &["H0", "H1", "H2", "H3"],
        )?;
        let classification = parse_label(
            "classification",
            "CLASSIFICATION_",
            &self.classification,
            C::from_str_name,
            &["unclassified", "restricted", "confidential"],
        )?;
        let priority = parse_label(
            "priority",
            "PRIORITY_",
            &self.priority,
            P::from_str_name,
            &["routine", "urgent", "immediate"],
        )?;
        let transfer_ground = parse_transfer_ground(&self.transfer_ground)?;
        let evaluation = match &self.evaluation {
            None => None,
            Some(e) => Some(parse_evaluation(e)?),
        };
        Ok(v1::Labels {
            purpose: purpose as i32,
            legal_basis: legal_basis as i32,
            legal_basis_reference: self.legal_basis_ref.clone(),
            handling: handling as i32,
            handling_restriction: self.restriction.clone(),
            evaluation,
            classification: classification as i32,
            priority: priority as i32,
            case_reference: self.case_ref.clone(),
            expires_at_ms: self
                .expires_in_days
                .map_or(0, |d| now_ms + i64::from(d) * 86_400_000),
            in_reply_to: self.in_reply_to.clone(),
            provider: String::new(),
            transfer_ground: transfer_ground as i32,
        })
    }
}

/// Parses a third-country transfer ground: `none`, `adequacy-decision`,
/// `appropriate-safeguards` or `specific-situation-derogation`.
pub fn parse_transfer_ground(g: &str) -> anyhow::Result<v1::TransferGround> {
    let names: Vec<String> = (0..=3)
        .filter_map(|i| v1::TransferGround::try_from(i).ok())
        .map(|g| short(g.as_str_name(), "TRANSFER_GROUND_"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    parse_label(
        "transfer ground",
        "TRANSFER_GROUND_",
        g,
        v1::TransferGround::from_str_name,
        &names,
    )
}

/// A transfer ground's short name, e.g. `appropriate-safeguards`.
pub fn ground_name(g: i32) -> String {
    v1::TransferGround::try_from(g)
        .map(|g| short(g.as_str_name(), "TRANSFER_GROUND_"))
        .unwrap_or_else(|_| g.to_string())
}

/// Parses a 4x4 evaluation such as "B2".
pub fn parse_evaluation(e: &str) -> anyhow::Result<v1::Evaluation> {
    let e = e.trim().to_ascii_uppercase();
    let shown = crate::protocol::bounds::quoted(&e);
    let mut chars = e.chars();
    let (Some(s), Some(a), None) = (chars.next(), chars.next(), chars.next()) else {
        bail!("evaluation {shown}: expected source A/B/C/X and accuracy 1-4, e.g. B2");
    };
    let source = v1::SourceReliability::from_str_name(&format!("SOURCE_RELIABILITY_{s}"))
        .ok_or_else(|| anyhow::anyhow!("evaluation {shown}: source must be A, B, C or X"))?;
    let accuracy = v1::InformationAccuracy::from_str_name(&format!("INFORMATION_ACCURACY_{a}"))
        .ok_or_else(|| anyhow::anyhow!("evaluation {shown}: accuracy must be 1, 2, 3 or 4"))?;
    Ok(v1::Evaluation {
        source: source as i32,
        accuracy: accuracy as i32,
    })
}

/// Reads a record in canonical proto3 JSON.
pub fn read_record(path: &Path) -> anyhow::Result<v1::CaseRecord> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a casebridge.v1.CaseRecord in proto3 JSON",
            path.display()
        )
    })
}

/// Turns a gRPC error into one readable line.
pub fn status_line(s: &tonic::Status) -> String {
    let code = match s.code() {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unauthenticated => "unauthenticated",
        _ => "error",
    };
    let msg = s.message().lines().next().unwrap_or("");
    format!("{code}: {msg}")
}

/// An error and its causes as one line, each said once: a cause whose
/// text the line already holds (an error that prints its source in its own
/// message) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        let s = s.trim();
        if s.is_empty() || text.contains(s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(s);
    }
    text
}

fn grpc<T>(r: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!(status_line(&s)))
}

pub fn state_name(s: i32) -> String {
    v1::SendState::try_from(s)
        .map(|s| short(s.as_str_name(), "SEND_STATE_"))
        .unwrap_or_default()
}

/// How many times `casebridge send` calls the node in all when the node
/// cannot be reached or the connection breaks before the answer.
pub const SEND_ATTEMPTS: u32 = 5;

/// How long one attempt waits for the node's answer. The node answers Send
/// within its own wait for the broker (10 s), queued if need be.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a failed call may not have reached the node, or may have lost
/// its answer on the way back: worth making again under the same
/// idempotency key. Unavailable (no connection, or the node's store asked
/// for a retry), a deadline passed, or an error of the transport itself
/// (with an underlying cause, which an answer from the node never has).
pub fn retryable(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            s.source().is_some()
        }
        _ => false,
    }
}

/// Makes `call` until it answers, fails for good, or `attempts` calls
/// failed in a way [`retryable`] allows, waiting 250 ms, 500 ms, 1 s, ...
/// between them. `call` must make the same request each time: with an
/// idempotency key, the node makes one record of them all.
pub async fn with_retries<T, Fut>(
    attempts: u32,
    mut call: impl FnMut() -> Fut,
) -> Result<T, tonic::Status>
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(s) if retryable(&s) && attempt < attempts => {
                tracing::warn!(attempt, status = %status_line(&s), "the node did not answer; calling again with the same idempotency key");
                tokio::time::sleep(std::time::Duration::from_millis(
                    250 << (attempt - 1).min(6),
                ))
                .await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// A fresh idempotency key: a UUIDv7, so that keys sort by when they were
/// made.
pub fn new_idempotency_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Makes a call that creates an envelope under an idempotency key,
/// `idempotency_key` or a fresh one printed on stderr first, with the
/// retries of [`with_retries`]; `what` names the content a person must
/// repeat to make it at most once.
async fn keyed_call<Fut>(
    idempotency_key: Option<String>,
    what: &str,
    call: impl Fn(String) -> Fut,
) -> anyhow::Result<v1::SendResponse>
where
    Fut: std::future::Future<Output = Result<tonic::Response<v1::SendResponse>, tonic::Status>>,
{
    let key = match idempotency_key {
        Some(k) => k,
        None => {
            let k = new_idempotency_key();
            eprintln!("idempotency key {k}");
            k
        }
    };
    with_retries(SEND_ATTEMPTS, || {
        let call = call(key.clone());
        async move { call.await.map(tonic::Response::into_inner) }
    })
    .await
    .map_err(|s| {
        // An answer that settles it needs no second run; one that may not
        // have reached the node, or lost its way back, does.
        if retryable(&s) {
            anyhow::anyhow!(
                "{}\nrun again with --idempotency-key {key} and the same {what} to make it at most once",
                status_line(&s)
            )
        } else {
            anyhow::anyhow!(status_line(&s))
        }
    })
}

/// A request with the time limit of one attempt.
fn attempt<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(ATTEMPT_TIMEOUT);
    req
}

/// Prints the node's answer to a call that made an envelope; true unless
/// it was refused.
fn print_made(resp: &v1::SendResponse, json: bool) -> anyhow::Result<bool> {
    if json {
        println!("{}", serde_json::to_string_pretty(resp)?);
    } else {
        println!("{}", resp.envelope_id);
        if resp.repeat {
            println!("made earlier under this idempotency key; nothing new was sent");
        }
        println!("{}: {}", state_name(resp.state), resp.detail);
        if resp.state == v1::SendState::Accepted as i32 {
            println!("audit log index {}", resp.log_index);
        }
        println!("categories: {}", categories_text(&resp.categories));
    }
    Ok(resp.state != v1::SendState::Refused as i32)
}

/// `casebridge send`. Every call is made under an idempotency key,
/// `idempotency_key` or a fresh one, printed on stderr before the call: a
/// call that fails without an answer is made again with it, and a person
/// who runs the command again with `--idempotency-key` and the same record
/// and labels gets the same envelope rather than a second one.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    profile: &Path,
    to: &[String],
    kind: &str,
    record: &Path,
    labels: &LabelArgs,
    idempotency_key: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let record = read_record(record)?;
    let want = parse_kind(kind)?;
    let found = categories::record_kind(&record)
        .ok_or_else(|| anyhow::anyhow!("the record has no body, so it is of no kind"))?;
    if want != found {
        bail!(
            "--kind is {} but the record is a {}",
            kebab(categories::kind_short_name(want)),
            kebab(categories::kind_short_name(found))
        );
    }
    let labels = labels.to_labels(crate::daemon::clock::now_ms())?;
    let client = AgencyClient::from_profile(profile)?;
    let req = v1::SendRequest {
        recipients: to.to_vec(),
        record: Some(record),
        labels: Some(labels),
        idempotency_key: String::new(),
    };
    let resp = keyed_call(idempotency_key, "record and labels", |key| {
        let mut api = client.api.clone();
        let req = v1::SendRequest {
            idempotency_key: key,
            ..req.clone()
        };
        async move { api.send(attempt(req)).await }
    })
    .await?;
    print_made(&resp, json)
}

/// One inbox entry as a line.
pub fn entry_line(e: &v1::InboxEntry) -> String {
    let labels = e.labels.as_ref().map(labels_text).unwrap_or_default();
    let reply = e
        .labels
        .as_ref()
        .filter(|l| !l.in_reply_to.is_empty())
        .map(|l| format!(" in reply to {}", l.in_reply_to))
        .unwrap_or_default();
    let mut s = format!(
        "{}  {}  from {}  {}{}\n    categories: {}\n    labels: {}",
        e.envelope_id,
        crate::protocol::time::format_ms(e.received_at_ms),
        e.sender_agency,
        kind_name(e.kind),
        reply,
        categories_text(&e.categories),
        labels
    );
    if !e.onward_of.is_empty() {
        let _ = write!(s, "\n    passes on record {}", e.onward_of);
    }
    if let Some(p) = &e.permission {
        let _ = write!(s, "\n    permission: {}", permission_text(p));
    }
    for notice in e.restrictions.iter().flat_map(|r| &r.notices) {
        let _ = write!(s, "\n    notice: {notice}");
    }
    s
}

/// What a permission request or grant is about, in words.
pub fn permission_text(p: &v1::PermissionScope) -> String {
    let original = crate::protocol::ids::EnvelopeId::from_bytes(&p.original_envelope_id)
        .map(|id| id.to_string())
        .unwrap_or_else(|_| crate::protocol::bounds::quote_hex(&p.original_envelope_id));
    format!(
        "{} to pass record {original} on to {}",
        p.grantee,
        p.third_agencies.join(", ")
    )
}

/// `casebridge inbox`.
pub async fn inbox(profile: &Path, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut client = AgencyClient::from_profile(profile)?;
    let print = |e: &v1::InboxEntry| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{}", entry_line(e));
        }
        Ok(())
    };
    if follow {
        let mut stream = grpc(client.api.watch_inbox(v1::WatchInboxRequest {}).await)?;
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(e)) => print(&e)?,
                    Ok(None) => bail!("the node closed the stream"),
                    Err(s) => bail!(status_line(&s)),
                },
                _ = crate::daemon::shutdown::shutdown_signal() => return Ok(()),
            }
        }
    }
    let resp = grpc(client.api.list_inbox(v1::ListInboxRequest::default()).await)?;
    if resp.entries.is_empty() && !json {
        println!("inbox of {} is empty", client.agency);
    }
    for e in &resp.entries {
        print(e)?;
    }
    Ok(())
}

/// Per-recipient delivery lines of a sent record.
pub fn status_lines(s: &v1::SendStatus) -> Vec<String> {
    s.recipient_status
        .iter()
        .map(|r| {
            let state = v1::DeliveryState::try_from(r.state)
                .map(|d| short(d.as_str_name(), "DELIVERY_STATE_"))
                .unwrap_or_default();
            let mut line = format!("{} ({}): {state}", r.node, r.agencies.join(", "));
            if let Some(b) = &r.receipt {
                let _ = write!(
                    line,
                    " at {}, receipt signed by node {}",
                    crate::protocol::time::format_ms(b.at_ms),
                    b.recipient_node
                );
                if !b.reason.is_empty() {
                    let _ = write!(line, ": {}", b.reason);
                }
            }
            line
        })
        .collect()
}

/// `casebridge status`.
pub async fn status(profile: &Path, id: &str, json: bool) -> anyhow::Result<()> {
    let mut client = AgencyClient::from_profile(profile)?;
    let s = grpc(
        client
            .api
            .status(v1::StatusRequest {
                envelope_id: id.to_string(),
            })
            .await,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{}  {}  to {}",
        s.envelope_id,
        kind_name(s.kind),
        s.recipients.join(", ")
    );
    println!("{}: {}", state_name(s.state), s.detail);
    if s.state == v1::SendState::Accepted as i32 {
        println!("audit log index {}", s.log_index);
    }
    println!("categories: {}", categories_text(&s.categories));
    if let Some(l) = &s.labels {
        println!("labels: {}", labels_text(l));
    }
    for line in status_lines(&s) {
        println!("  {line}");
    }
    Ok(())
}

/// The restrictions a received record comes with, one line each: handling
/// code, purpose, legal basis, expiry, and under which condition it may be
/// passed on.
pub fn restriction_lines(e: &v1::InboxEntry) -> Vec<String> {
    let mut lines = Vec::new();
    let labels = e.labels.clone().unwrap_or_default();
    // The provider's permission is what counts for a record passed on.
    let provider = if labels.provider.is_empty() {
        e.sender_agency.clone()
    } else {
        labels.provider.clone()
    };
    lines.push(format!("handling code: {}", handling_name(labels.handling)));
    lines.push(format!("purpose: {}", purpose_name(labels.purpose)));
    let mut basis = format!("legal basis: {}", basis_name(labels.legal_basis));
    if !labels.legal_basis_reference.is_empty() {
        let _ = write!(basis, " ({})", labels.legal_basis_reference);
    }
    lines.push(basis);
    let expires = if e.expires_at_ms > 0 {
        e.expires_at_ms
    } else {
        labels.expires_at_ms
    };
    if expires > 0 {
        lines.push(format!(
            "expires: {} (every copy is purged then)",
            crate::protocol::time::format_ms(expires)
        ));
    }
    let r = e.restrictions.clone().unwrap_or_default();
    let onward = if r.no_onward_transfer {
        format!(
            "onward transfer: only with the permission of {provider} \
             (ask with `casebridge request-permission`)"
        )
    } else if !r.provider_restriction.is_empty() {
        format!(
            "onward transfer: as the restriction of {provider} allows: {}",
            r.provider_restriction
        )
    } else {
        "onward transfer: where the policies allow it, under these labels".to_string()
    };
    lines.push(onward);
    for notice in &r.notices {
        lines.push(format!("notice: {notice}"));
    }
    lines
}

/// A JSON value as indented "name: value" lines, for people.
fn content_lines(v: &serde_json::Value, indent: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(indent);
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        out.push(format!("{pad}{}:", field_name(k)));
                        content_lines(v, indent + 1, out);
                    }
                    _ => out.push(format!("{pad}{}: {}", field_name(k), scalar(v))),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                match v {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        out.push(format!("{pad}-"));
                        content_lines(v, indent + 1, out);
                    }
                    _ => out.push(format!("{pad}- {}", scalar(v))),
                }
            }
        }
        other => out.push(format!("{pad}{}", scalar(other))),
    }
}

/// A proto3 JSON field name (lowerCamelCase) in the printed spelling:
/// `familyName` is `family-name`.
fn field_name(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 4);
    for c in json.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    kebab(&out)
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `casebridge fetch`: one record of the agency's inbox, with its content
/// and its restrictions.
pub async fn fetch(profile: &Path, id: &str, json: bool) -> anyhow::Result<()> {
    let mut client = AgencyClient::from_profile(profile)?;
    let got = grpc(
        client
            .api
            .fetch(v1::FetchRequest {
                envelope_id: id.to_string(),
            })
            .await,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&got)?);
        return Ok(());
    }
    let entry = got.entry.unwrap_or_default();
    println!("{}", entry_line(&entry));
    println!("restrictions:");
    for line in restriction_lines(&entry) {
        println!("    {line}");
    }
    println!("content:");
    match &got.record {
        Some(r) => {
            let mut lines = Vec::new();
            content_lines(&serde_json::to_value(r)?, 2, &mut lines);
            for line in lines {
                println!("{line}");
            }
        }
        None => println!("    (none)"),
    }
    Ok(())
}

/// One sent record as lines: the record, its state, and each recipient's.
pub fn sent_lines(s: &v1::SendStatus) -> Vec<String> {
    let mut lines = vec![format!(
        "{}  {}  {}  to {}",
        s.envelope_id,
        crate::protocol::time::format_ms(s.created_at_ms),
        kind_name(s.kind),
        s.recipients.join(", ")
    )];
    let mut state = format!("    {}", state_name(s.state));
    if !s.detail.is_empty() {
        let _ = write!(state, ": {}", s.detail);
    }
    if s.state == v1::SendState::Accepted as i32 {
        let _ = write!(state, " (audit log index {})", s.log_index);
    }
    lines.push(state);
    lines.extend(status_lines(s).into_iter().map(|l| format!("    {l}")));
    lines
}

/// `casebridge sent`: everything the agency sent, oldest first, with its
/// state and each recipient's.
pub async fn sent(profile: &Path, json: bool) -> anyhow::Result<()> {
    let mut client = AgencyClient::from_profile(profile)?;
    let resp = grpc(client.api.list_sent(v1::ListSentRequest {}).await)?;
    if resp.sent.is_empty() && !json {
        println!("{} has sent nothing", client.agency);
    }
    for s in &resp.sent {
        if json {
            println!("{}", serde_json::to_string(s)?);
        } else {
            for line in sent_lines(s) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Labels of an onward transfer as given on the command line: each one not
/// given is the original's; the handling code can only stay or become
/// stricter.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct OnwardLabelArgs {
    /// Purpose of the onward transfer, e.g. prosecution; default the
    /// original's.
    #[arg(long)]
    pub purpose: Option<String>,
    /// Legal basis of the onward transfer, e.g. regional-police-convention;
    /// default the original's.
    #[arg(long)]
    pub legal_basis: Option<String>,
    /// The named agreement or ground; default the original's.
    #[arg(long)]
    pub legal_basis_ref: Option<String>,
    /// Handling code H0 to H3, as strict as the original's or stricter;
    /// default the original's.
    #[arg(long)]
    pub handling: Option<String>,
}

impl OnwardLabelArgs {
    /// The labels to send: zero (the original's) where nothing was given.
    pub fn to_labels(&self) -> anyhow::Result<Option<v1::Labels>> {
        use v1::{HandlingCode as H, LegalBasis as L, Purpose as U};
        if self.purpose.is_none()
            && self.legal_basis.is_none()
            && self.legal_basis_ref.is_none()
            && self.handling.is_none()
        {
            return Ok(None);
        }
        let mut l = v1::Labels::default();
        if let Some(p) = &self.purpose {
            let names = enum_names(|i| U::try_from(i).ok().map(|u| u.as_str_name()), "PURPOSE_");
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            l.purpose = parse_label("purpose", "PURPOSE_", p, U::from_str_name, &names)? as i32;
        }
        if let Some(b) = &self.legal_basis {
            let names = enum_names(
                |i| L::try_from(i).ok().map(|b| b.as_str_name()),
                "LEGAL_BASIS_",
            );
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            l.legal_basis =
                parse_label("legal basis", "LEGAL_BASIS_", b, L::from_str_name, &names)? as i32;
        }
        if let Some(r) = &self.legal_basis_ref {
            l.legal_basis_reference = r.clone();
        }
        if let Some(h) = &self.handling {
            l.handling = parse_label(
                "handling code",
                "HANDLING_CODE_",
                h,
                H::from_str_name,
                &["H0", "H1", "H2", "H3"],
            )? as i32;
        }
        Ok(Some(l))
    }
}

/// The printed names of an enum's values 1 to 63 without `prefix`.
fn enum_names(name: impl Fn(i32) -> Option<&'static str>, prefix: &str) -> Vec<String> {
    (1..64).filter_map(name).map(|n| short(n, prefix)).collect()
}

/// `casebridge forward`: pass a record of the agency's inbox on, with the
/// restrictions it came with. An H2 record needs its provider's permission
/// first (`request-permission`, then the provider's `grant-permission`).
pub async fn forward(
    profile: &Path,
    envelope_id: &str,
    to: &[String],
    labels: &OnwardLabelArgs,
    idempotency_key: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let labels = labels.to_labels()?;
    let client = AgencyClient::from_profile(profile)?;
    let req = v1::ForwardRequest {
        envelope_id: envelope_id.to_string(),
        recipients: to.to_vec(),
        labels,
        idempotency_key: String::new(),
    };
    let resp = keyed_call(idempotency_key, "record, recipients and labels", |key| {
        let mut api = client.api.clone();
        let req = v1::ForwardRequest {
            idempotency_key: key,
            ..req.clone()
        };
        async move { api.forward(attempt(req)).await }
    })
    .await?;
    print_made(&resp, json)
}

/// `casebridge request-permission`: ask the provider of a record in the
/// agency's inbox for permission to pass it on to `third_agencies`.
pub async fn request_permission(
    profile: &Path,
    envelope_id: &str,
    third_agencies: &[String],
    justification: &str,
    idempotency_key: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let client = AgencyClient::from_profile(profile)?;
    let req = v1::RequestPermissionRequest {
        envelope_id: envelope_id.to_string(),
        third_agencies: third_agencies.to_vec(),
        justification: justification.to_string(),
        idempotency_key: String::new(),
    };
    let resp = keyed_call(
        idempotency_key,
        "record, agencies and justification",
        |key| {
            let mut api = client.api.clone();
            let req = v1::RequestPermissionRequest {
                idempotency_key: key,
                ..req.clone()
            };
            async move { api.request_permission(attempt(req)).await }
        },
    )
    .await?;
    print_made(&resp, json)
}

/// `casebridge grant-permission`: as a record's provider, grant a
/// permission request received in the agency's inbox.
pub async fn grant_permission(
    profile: &Path,
    request_envelope_id: &str,
    conditions: &str,
    idempotency_key: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let client = AgencyClient::from_profile(profile)?;
    let req = v1::GrantPermissionRequest {
        request_envelope_id: request_envelope_id.to_string(),
        conditions: conditions.to_string(),
        idempotency_key: String::new(),
    };
    let resp = keyed_call(idempotency_key, "request and conditions", |key| {
        let mut api = client.api.clone();
        let req = v1::GrantPermissionRequest {
            idempotency_key: key,
            ..req.clone()
        };
        async move { api.grant_permission(attempt(req)).await }
    })
    .await?;
    print_made(&resp, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_categories_print_with_hyphens_and_parse_in_either_spelling() {
        assert!(kind_names().contains(&"missing-person-trace".to_string()));
        assert!(kind_names().iter().all(|k| !k.contains('_')));
        assert!(category_names().contains(&"identity-document".to_string()));
        for input in [
            "missing-person-trace",
            "missing_person_trace",
            " Missing-Person-Trace ",
        ] {
            assert_eq!(
                parse_kind(input).unwrap(),
                v1::RecordKind::MissingPersonTrace
            );
        }
        assert_eq!(
            parse_category("travel_movement").unwrap(),
            v1::DataCategory::TravelMovement
        );
        assert_eq!(
            kind_name(v1::RecordKind::TraceResult as i32),
            "trace-result"
        );
        assert_eq!(
            categories_text(&[v1::DataCategory::IdentityDocument as i32]),
            "identity-document"
        );
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = parse_kind("wanted").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown record kind \"wanted\"; the kinds are mla-request, ")
                && e.ends_with("permission-grant"),
            "{e}"
        );
        let e = parse_category("dna").unwrap_err().to_string();
        assert!(
            e.contains("unknown data category \"dna\"") && e.contains("genetic"),
            "{e}"
        );
        let e = LabelArgs {
            purpose: "missing-people".into(),
            legal_basis: "humanitarian-agreement".into(),
            ..LabelArgs::default()
        }
        .to_labels(0)
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("unknown purpose \"missing-people\"; one of: ")
                && e.contains("missing-persons"),
            "{e}"
        );
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        // An error that prints its source in its own message.
        let e = anyhow::Error::new(crate::daemon::config::ConfigError::Read {
            file: "profile.toml".into(),
            source: io,
        })
        .context("agency profile profile.toml");
        assert_eq!(
            error_text(&e),
            "agency profile profile.toml: profile.toml: No such file (os error 2)"
        );
        let e = anyhow::anyhow!("the cause").context("what was done");
        assert_eq!(error_text(&e), "what was done: the cause");
    }

    #[test]
    fn restrictions_of_an_h2_record_say_who_permits_onward_transfer() {
        let entry = v1::InboxEntry {
            sender_agency: "RS/police".into(),
            labels: Some(v1::Labels {
                handling: v1::HandlingCode::H2 as i32,
                purpose: v1::Purpose::InvestigationMigrantSmuggling as i32,
                legal_basis: v1::LegalBasis::RegionalPoliceConvention as i32,
                provider: "MK/police".into(),
                ..Default::default()
            }),
            expires_at_ms: 1_800_000_000_000,
            restrictions: Some(v1::UsageRestrictions {
                no_onward_transfer: true,
                notices: vec!["H2: not to be passed on without the permission of MK/police".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let lines = restriction_lines(&entry);
        assert_eq!(lines[0], "handling code: H2");
        assert_eq!(lines[1], "purpose: investigation-migrant-smuggling");
        assert_eq!(lines[2], "legal basis: regional-police-convention");
        assert!(lines[3].starts_with("expires: 2027-01-15T"), "{lines:?}");
        assert!(
            lines[4].starts_with("onward transfer: only with the permission of MK/police"),
            "{lines:?}"
        );
        assert!(entry_line(&entry).contains("notice: H2: not to be passed on"));
        assert_eq!(field_name("registrationCountry"), "registration-country");
    }
}

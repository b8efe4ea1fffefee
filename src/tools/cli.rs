//! The person-facing commands: `send`, `inbox` and `status`, and the human
//! rendering of records, labels and receipts that the demo shares.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::protocol::categories;
use crate::protocol::proto::v1;
use crate::tools::client::AgencyClient;

/// Parses a label value given on the command line, e.g. "missing-persons" for
/// `PURPOSE_MISSING_PERSONS` or "h2" for `HANDLING_CODE_H2`.
pub fn parse_label<E>(
    what: &str,
    prefix: &str,
    value: &str,
    from_name: fn(&str) -> Option<E>,
    names: &[&str],
) -> anyhow::Result<E> {
    let key = format!(
        "{prefix}{}",
        value.trim().to_ascii_uppercase().replace(['-', ' '], "_")
    );
    from_name(&key)
        .ok_or_else(|| anyhow::anyhow!("unknown {what} {value:?}; one of: {}", names.join(", ")))
}

/// The short, lower-case form of an enum name without its prefix.
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub fn purpose_name(p: i32) -> String {
    v1::Purpose::try_from(p)
        .map(|p| short(p.as_str_name(), "PURPOSE_"))
        .unwrap_or_else(|_| p.to_string())
}
pub fn basis_name(b: i32) -> String {
    v1::LegalBasis::try_from(b)
        .map(|b| short(b.as_str_name(), "LEGAL_BASIS_"))
        .unwrap_or_else(|_| b.to_string())
}
pub fn handling_name(h: i32) -> String {
    v1::HandlingCode::try_from(h)
        .map(|h| short(h.as_str_name(), "HANDLING_CODE_").to_uppercase())
        .unwrap_or_else(|_| h.to_string())
}
pub fn kind_name(k: i32) -> String {
    v1::RecordKind::try_from(k)
        .map(|k| categories::kind_short_name(k).to_string())
        .unwrap_or_else(|_| k.to_string())
}
pub fn categories_text(cats: &[i32]) -> String {
    let v: Vec<&str> = cats
        .iter()
        .filter_map(|c| v1::DataCategory::try_from(*c).ok())
        .map(categories::short_name)
        .collect();
    if v.is_empty() {
        "none (no personal data)".into()
    } else {
        v.join(", ")
    }
}

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
    let mut chars = e.chars();
    let (Some(s), Some(a), None) = (chars.next(), chars.next(), chars.next()) else {
        bail!("evaluation {e:?}: expected source A/B/C/X and accuracy 1-4, e.g. B2");
    };
    let source = v1::SourceReliability::from_str_name(&format!("SOURCE_RELIABILITY_{s}"))
        .ok_or_else(|| anyhow::anyhow!("evaluation {e:?}: source must be A, B, C or X"))?;
    let accuracy = v1::InformationAccuracy::from_str_name(&format!("INFORMATION_ACCURACY_{a}"))
        .ok_or_else(|| anyhow::anyhow!("evaluation {e:?}: accuracy must be 1, 2, 3 or 4"))?;
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
    let want = categories::parse_kind_short_name(kind)
        .ok_or_else(|| anyhow::anyhow!("unknown kind {kind:?}"))?;
    let found =
        categories::record_kind(&record).ok_or_else(|| anyhow::anyhow!("record has no body"))?;
    if want != found {
        bail!(
            "--kind {kind} but the record is a {}",
            categories::kind_short_name(found)
        );
    }
    let labels = labels.to_labels(crate::daemon::clock::now_ms())?;
    let key = match idempotency_key {
        Some(k) => k,
        None => {
            let k = new_idempotency_key();
            eprintln!("idempotency key {k}");
            k
        }
    };
    let client = AgencyClient::from_profile(profile)?;
    let req = v1::SendRequest {
        recipients: to.to_vec(),
        record: Some(record),
        labels: Some(labels),
        idempotency_key: key.clone(),
    };
    let resp = with_retries(SEND_ATTEMPTS, || {
        let mut api = client.api.clone();
        let mut req = tonic::Request::new(req.clone());
        req.set_timeout(ATTEMPT_TIMEOUT);
        async move { api.send(req).await.map(tonic::Response::into_inner) }
    })
    .await
    .map_err(|s| {
        anyhow::anyhow!(
            "{}\nrun again with --idempotency-key {key} and the same record and labels to send it at most once",
            status_line(&s)
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
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

/// One inbox entry as a line.
pub fn entry_line(e: &v1::InboxEntry) -> String {
    let labels = e.labels.as_ref().map(labels_text).unwrap_or_default();
    let reply = e
        .labels
        .as_ref()
        .filter(|l| !l.in_reply_to.is_empty())
        .map(|l| format!(" in reply to {}", l.in_reply_to))
        .unwrap_or_default();
    format!(
        "{}  {}  from {}  {}{}\n    categories: {}\n    labels: {}",
        e.envelope_id,
        crate::protocol::time::format_ms(e.received_at_ms),
        e.sender_agency,
        kind_name(e.kind),
        reply,
        categories_text(&e.categories),
        labels
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

//! Rows: one entry as fields, and CSV and HTML escaping.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::protocol::ids::EnvelopeId;
use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;
use crate::tools::cli::{basis_name, categories_text, ground_name, kind_name, purpose_name, short};

// ---- rows: one entry as fields --------------------------------------------------

/// One entry as flat fields, for text, CSV and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub index: u64,
    pub at_ms: i64,
    /// submission-accepted, submission-refused, receipt, content-violation,
    /// records-purged, directory-changed, policy-changed, or unknown.
    pub event: &'static str,
    /// The query vocabulary: accepted, refused, delivered, rejected,
    /// violation, purged, directory, policy (or unknown).
    pub decision: &'static str,
    /// The refusal or rejection code.
    pub code: String,
    pub reason: String,
    pub envelope_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub kind: String,
    pub categories: Vec<String>,
    pub purpose: String,
    pub legal_basis: String,
    /// The third-country transfer ground; empty where none was given.
    pub transfer_ground: String,
    pub policy_bundle_hash: String,
}

/// The CSV header, in the order of [`Row::csv_fields`].
pub const ROW_COLUMNS: &[&str] = &[
    "index",
    "time",
    "event",
    "decision",
    "code",
    "reason",
    "envelope_id",
    "sender",
    "recipients",
    "kind",
    "categories",
    "purpose",
    "legal_basis",
    "transfer_ground",
    "policy_bundle_hash",
];

fn envelope_text(id: &[u8]) -> String {
    if id.is_empty() {
        return String::new();
    }
    EnvelopeId::from_bytes(id)
        .map(|e| e.to_string())
        .unwrap_or_else(|_| hex::encode(id))
}

fn category_names(cats: &[i32]) -> Vec<String> {
    cats.iter()
        .map(|c| match v1::DataCategory::try_from(*c) {
            Ok(c) => crate::tools::cli::kebab(crate::protocol::categories::short_name(c)),
            Err(_) => c.to_string(),
        })
        .collect()
}

fn refusal_code(c: i32) -> String {
    v1::RefusalCode::try_from(c)
        .map(|c| short(c.as_str_name(), "REFUSAL_CODE_"))
        .unwrap_or_else(|_| c.to_string())
}

fn rejection_code(c: i32) -> String {
    v1::RejectionCode::try_from(c)
        .map(|c| short(c.as_str_name(), "REJECTION_CODE_"))
        .unwrap_or_else(|_| c.to_string())
}

fn with_envelope(r: &mut Row, e: &v1::EnvelopeSummary) {
    r.envelope_id = envelope_text(&e.envelope_id);
    r.sender = if e.sender_agency.is_empty() {
        format!("node {}", e.sender_node)
    } else {
        e.sender_agency.clone()
    };
    r.recipients = e.recipients.clone();
    r.kind = kind_name(e.kind);
    r.categories = category_names(&e.declared_categories);
    r.purpose = purpose_name(e.purpose);
    r.legal_basis = basis_name(e.legal_basis);
    if e.transfer_ground != v1::TransferGround::None as i32 {
        r.transfer_ground = ground_name(e.transfer_ground);
    }
}

/// The fields of entry `index`.
pub fn row(index: u64, event: &v1::AuditEvent) -> Row {
    let mut r = Row {
        index,
        at_ms: event.at_ms,
        event: "unknown",
        decision: "unknown",
        ..Row::default()
    };
    match &event.event {
        Some(Event::SubmissionAccepted(a)) => {
            r.event = "submission-accepted";
            r.decision = "accepted";
            if let Some(e) = &a.envelope {
                with_envelope(&mut r, e);
            }
            r.policy_bundle_hash = a.policy_bundle_hash.clone();
        }
        Some(Event::SubmissionRefused(x)) => {
            r.event = "submission-refused";
            r.decision = "refused";
            // A refusal is the submitting node's; the header's labels show
            // only when they are that node's own.
            match crate::protocol::audit::attributed(x) {
                Some(e) => with_envelope(&mut r, e),
                None => r.sender = format!("node {}", x.submitting_node),
            }
            r.code = refusal_code(x.code);
            // A node's own refusal states its explanation once, apart.
            r.reason =
                if x.policy_explanation.is_empty() || x.reason.contains(&x.policy_explanation) {
                    x.reason.clone()
                } else {
                    format!("{}: {}", x.reason, x.policy_explanation)
                };
            r.policy_bundle_hash = x.policy_bundle_hash.clone();
        }
        Some(Event::ReceiptRecorded(x)) => {
            r.event = "receipt";
            let rejected = x.status == v1::ReceiptStatus::Rejected as i32;
            r.decision = if rejected { "rejected" } else { "delivered" };
            r.envelope_id = envelope_text(&x.envelope_id);
            r.sender = format!("node {}", x.recipient_node);
            r.recipients = x.delivered_to.clone();
            if rejected || x.code != 0 {
                r.code = rejection_code(x.code);
            }
            r.reason = x.reason.clone();
        }
        Some(Event::ContentViolation(x)) => {
            r.event = "content-violation";
            r.decision = "violation";
            r.envelope_id = envelope_text(&x.envelope_id);
            r.sender = if x.sender_agency.is_empty() {
                format!("node {}", x.sender_node)
            } else {
                x.sender_agency.clone()
            };
            r.recipients = vec![format!("node {}", x.reporting_node)];
            r.code = rejection_code(x.code);
            r.reason = x.detail.clone();
        }
        Some(Event::RecordsPurged(x)) => {
            r.event = "records-purged";
            r.decision = "purged";
            r.sender = format!("node {}", x.node);
            r.reason = format!("{} records purged", x.envelope_ids.len());
        }
        Some(Event::DirectoryChanged(x)) => {
            r.event = "directory-changed";
            r.decision = "directory";
            r.reason = format!(
                "directory version {}, sha256 {}",
                x.version,
                hex::encode(&x.directory_sha256)
            );
        }
        Some(Event::DirectoryRefused(x)) => {
            r.event = "directory-refused";
            r.decision = "directory";
            r.reason = format!(
                "directory version {} refused, version {} stays in force: {}",
                x.version, x.version_in_force, x.reason
            );
        }
        Some(Event::PolicyChanged(x)) => {
            r.event = "policy-changed";
            r.decision = "policy";
            r.reason = x.detail.clone();
            r.policy_bundle_hash = x.bundle_hash.clone();
        }
        None => {}
    }
    r
}

impl Row {
    /// The fields in [`ROW_COLUMNS`] order.
    pub fn csv_fields(&self) -> Vec<String> {
        vec![
            self.index.to_string(),
            crate::protocol::time::format_ms(self.at_ms),
            self.event.to_string(),
            self.decision.to_string(),
            self.code.clone(),
            self.reason.clone(),
            self.envelope_id.clone(),
            self.sender.clone(),
            self.recipients.join(";"),
            self.kind.clone(),
            self.categories.join(";"),
            self.purpose.clone(),
            self.legal_basis.clone(),
            self.transfer_ground.clone(),
            self.policy_bundle_hash.clone(),
        ]
    }

    /// One line for people.
    pub fn text_line(&self) -> String {
        let mut s = format!(
            "{:>6}  {}  {}",
            self.index,
            crate::protocol::time::format_ms(self.at_ms),
            self.event
        );
        if !self.sender.is_empty() || !self.recipients.is_empty() {
            let to = if self.recipients.is_empty() {
                "-".to_string()
            } else {
                self.recipients.join(", ")
            };
            let _ = write!(s, "  {} → {to}", self.sender);
        }
        if !self.kind.is_empty() {
            let _ = write!(s, "  {}", self.kind);
        }
        if matches!(self.event, "submission-accepted" | "submission-refused") {
            let cats = if self.categories.is_empty() {
                "no personal data".to_string()
            } else {
                self.categories.join(", ")
            };
            let _ = write!(s, "  [{cats}]");
        }
        if !self.purpose.is_empty() {
            let _ = write!(s, "  {} / {}", self.purpose, self.legal_basis);
            if !self.transfer_ground.is_empty() {
                let _ = write!(s, " + {}", self.transfer_ground);
            }
        }
        let _ = write!(s, "  {}", self.decision);
        if !self.code.is_empty() {
            let _ = write!(s, " ({})", self.code);
        }
        if !self.reason.is_empty() {
            let _ = write!(s, ": {}", one_line(&self.reason));
        }
        s
    }
}

pub(super) fn one_line(s: &str) -> Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        Cow::Owned(
            s.split(['\n', '\r'])
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" / "),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// Labelled details of an event, for `prove`.
pub fn event_details(event: &v1::AuditEvent) -> Vec<(&'static str, String)> {
    let r = row(0, event);
    let mut d = vec![
        ("event", r.event.to_string()),
        ("time", crate::protocol::time::format_ms(r.at_ms)),
    ];
    if !r.sender.is_empty() {
        d.push(("sender", r.sender.clone()));
    }
    if !r.recipients.is_empty() {
        d.push(("recipients", r.recipients.join(", ")));
    }
    if !r.kind.is_empty() {
        d.push(("kind", r.kind.clone()));
    }
    if let Some(Event::SubmissionAccepted(x)) = &event.event {
        if let Some(e) = &x.envelope {
            d.push(("categories", categories_text(&e.declared_categories)));
        }
    }
    if let Some(Event::SubmissionRefused(x)) = &event.event {
        if let Some(e) = crate::protocol::audit::attributed(x) {
            d.push(("categories", categories_text(&e.declared_categories)));
        }
    }
    if !r.purpose.is_empty() {
        d.push(("purpose", r.purpose.clone()));
        d.push(("legal basis", r.legal_basis.clone()));
        if !r.transfer_ground.is_empty() {
            d.push(("transfer ground", r.transfer_ground.clone()));
        }
    }
    let mut decision = r.decision.to_string();
    if !r.code.is_empty() {
        let _ = write!(decision, " ({})", r.code);
    }
    if !r.reason.is_empty() {
        let _ = write!(decision, ": {}", r.reason);
    }
    d.push(("decision", decision));
    if !r.policy_bundle_hash.is_empty() {
        d.push(("policy bundle", r.policy_bundle_hash.clone()));
    }
    let explanation = match &event.event {
        Some(Event::SubmissionAccepted(x)) => x.policy_explanation.as_str(),
        Some(Event::SubmissionRefused(x)) => x.policy_explanation.as_str(),
        _ => "",
    };
    if !explanation.is_empty() {
        d.push(("policy explanation", one_line(explanation).into_owned()));
    }
    d
}

// ---- CSV and HTML escaping ------------------------------------------------------

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line
/// break or leading/trailing space, quotes doubled. A field that a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab
/// or carriage return) gets a leading `'` and is quoted; no value casebridge
/// writes itself starts so, only text from peers could.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let needs_quotes =
        formula || s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if !needs_quotes {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// A CSV record of `fields`, without the line ending.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Text escaped for HTML and XML content and quoted attribute values.
pub fn html_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::event_envelope_id;
    use crate::tools::audit::test_support::*;

    #[test]
    fn rows_of_each_event_type() {
        let log = synthetic_log();
        let r = row(1, &log[1]);
        assert_eq!(r.event, "submission-accepted");
        assert_eq!(r.decision, "accepted");
        assert_eq!(r.sender, "HR/police");
        assert_eq!(r.kind, "wanted-alert");
        assert_eq!(r.envelope_id, "01010101-0101-0101-0101-010101010101");
        assert_eq!(r.policy_bundle_hash, "sha256:1234");
        let line = r.text_line();
        assert!(
            line.contains("HR/police → RS/police, RS/prosecutor, BA/police"),
            "{line}"
        );
        assert!(line.contains("[identity]"), "{line}");
        let r = row(2, &log[2]);
        assert_eq!((r.decision, r.code.as_str()), ("refused", "policy"));
        let r = row(4, &log[4]);
        assert_eq!(
            (r.decision, r.code.as_str()),
            ("rejected", "undeclared-categories")
        );
        assert_eq!(row(5, &log[5]).decision, "violation");
        assert_eq!(row(6, &log[6]).sender, "node ME");
        assert_eq!(row(0, &log[0]).decision, "directory");
        assert_eq!(row(9, &v1::AuditEvent::default()).event, "unknown");
        assert_eq!(event_envelope_id(&log[3]), Some([1u8; 16].as_slice()));
        assert!(
            event_details(&log[1])
                .iter()
                .any(|(k, v)| *k == "policy explanation" && v.contains("framework"))
        );
        assert_eq!(ROW_COLUMNS.len(), r.csv_fields().len());
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"no\""), "\"say \"\"no\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@cmd"), "\"'@cmd\"");
        assert_eq!(csv_field("-1"), "\"'-1\"");
        assert_eq!(csv_field("2025-01-01T00:00:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(csv_line(&["1", "a,b", "c"]), "1,\"a,b\",c");
        let log = synthetic_log();
        let line = csv_line(&row(2, &log[2]).csv_fields());
        assert!(
            line.contains("\"forbidden by <framework> & \"\"H3\"\", 'quoted'\""),
            "{line}"
        );
        assert!(line.contains(",HR/police,"), "{line}");
    }

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(html_escape("plain text"), "plain text");
        assert_eq!(
            html_escape("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(html_escape("&amp;"), "&amp;amp;");
    }
}

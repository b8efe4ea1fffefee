//! Report aggregation: counts per agency and flows between countries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;
use crate::tools::cli::{kind_name, purpose_name};

use super::*;

// ---- report: aggregation --------------------------------------------------------

/// One agency's transfers of one kind or purpose, by how far they went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted by the broker, with this agency as sender.
    pub sent: u64,
    /// Refused by the agency's own node before sealing: nothing left the
    /// country.
    pub refused_at_node: u64,
    /// Sealed and submitted, refused by the broker.
    pub refused_by_broker: u64,
    /// Delivered to this agency: a receipt of its node says so.
    pub received: u64,
}

/// The column headings of [`Counts`], in [`Counts::cells`] order.
pub const COUNT_COLUMNS: [&str; 4] = ["sent", "refused at node", "refused by broker", "received"];

impl Counts {
    /// The counts in [`COUNT_COLUMNS`] order.
    pub fn cells(&self) -> [u64; 4] {
        [
            self.sent,
            self.refused_at_node,
            self.refused_by_broker,
            self.received,
        ]
    }
}

/// Counts of one agency's activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyStats {
    pub by_kind: BTreeMap<String, Counts>,
    pub by_purpose: BTreeMap<String, Counts>,
    /// accepted, refused, delivered, rejected, violation: `[as sender, as
    /// recipient]`, where a recipient is one the entry names (a refused
    /// submission names recipients it never reached).
    pub by_decision: BTreeMap<&'static str, [u64; 2]>,
    /// Its transfers the broker accepted, with their envelope ids.
    pub accepted: Vec<Row>,
    /// Submissions it sent that were refused, at its node or by the broker.
    pub refusals: Vec<Row>,
    /// Its records that a receiving node rejected.
    pub rejections: Vec<Row>,
    /// Content violations reported against its records.
    pub violations: Vec<Row>,
}

const SENT: usize = 0;
const RECEIVED: usize = 1;

/// Where a submission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    RefusedAtNode,
    RefusedByBroker,
}

/// What an accepted envelope was, to attribute and describe its receipts.
#[derive(Debug, Clone)]
struct Accepted {
    sender: String,
    kind: String,
    purpose: String,
    legal_basis: String,
    transfer_ground: String,
}

/// What a report shows, accumulated entry by entry.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub entries: u64,
    pub first_at_ms: Option<i64>,
    pub last_at_ms: Option<i64>,
    /// Entries per decision (accepted, refused, ...).
    pub by_decision: BTreeMap<&'static str, u64>,
    /// Accepted envelopes per (sender country, recipient country); an
    /// envelope to several agencies of one country counts once for it.
    pub accepted_flows: BTreeMap<(String, String), u64>,
    /// Refused submissions, counted the same way.
    pub refused_flows: BTreeMap<(String, String), u64>,
    pub agencies: BTreeMap<String, AgencyStats>,
    /// Refusals whose header could not be parsed, and receipts for unknown
    /// envelopes.
    pub unattributed: Vec<Row>,
    /// Directory and policy changes, purges.
    pub federation_events: Vec<Row>,
    /// Envelope id → what was accepted, to attribute receipts.
    senders: HashMap<Vec<u8>, Accepted>,
}

fn country_of(party: &str) -> String {
    party.split('/').next().unwrap_or(party).to_string()
}

impl LogSummary {
    fn agency(&mut self, id: &str) -> &mut AgencyStats {
        self.agencies.entry(id.to_string()).or_default()
    }

    fn count_submission(&mut self, e: &v1::EnvelopeSummary, outcome: Outcome) {
        let kind = kind_name(e.kind);
        let purpose = purpose_name(e.purpose);
        let sender = e.sender_agency.clone();
        let decision = if outcome == Outcome::Accepted {
            "accepted"
        } else {
            "refused"
        };
        let bump = |c: &mut Counts| match outcome {
            Outcome::Accepted => c.sent += 1,
            Outcome::RefusedAtNode => c.refused_at_node += 1,
            Outcome::RefusedByBroker => c.refused_by_broker += 1,
        };
        let s = self.agency(&sender);
        bump(s.by_kind.entry(kind.clone()).or_default());
        bump(s.by_purpose.entry(purpose.clone()).or_default());
        s.by_decision.entry(decision).or_default()[SENT] += 1;
        let mut to: BTreeSet<String> = BTreeSet::new();
        for r in &e.recipients {
            self.agency(r).by_decision.entry(decision).or_default()[RECEIVED] += 1;
            to.insert(country_of(r));
        }
        let from = if sender.is_empty() {
            e.sender_node.clone()
        } else {
            country_of(&sender)
        };
        let flows = if outcome == Outcome::Accepted {
            &mut self.accepted_flows
        } else {
            &mut self.refused_flows
        };
        for cc in to {
            *flows.entry((from.clone(), cc)).or_default() += 1;
        }
    }

    /// Gives a row about an accepted envelope (a receipt, a violation) the
    /// kind, purpose and grounds its submission's entry holds.
    fn describe(&self, r: &mut Row, envelope_id: &[u8]) {
        if let Some(a) = self.senders.get(envelope_id) {
            if r.kind.is_empty() {
                r.kind.clone_from(&a.kind);
            }
            if r.purpose.is_empty() {
                r.purpose.clone_from(&a.purpose);
                r.legal_basis.clone_from(&a.legal_basis);
                r.transfer_ground.clone_from(&a.transfer_ground);
            }
        }
    }

    /// Adds entry `index`.
    pub fn add(&mut self, index: u64, event: &v1::AuditEvent) {
        self.entries += 1;
        if event.at_ms != 0 {
            self.first_at_ms = Some(self.first_at_ms.map_or(event.at_ms, |t| t.min(event.at_ms)));
            self.last_at_ms = Some(self.last_at_ms.map_or(event.at_ms, |t| t.max(event.at_ms)));
        }
        let mut r = row(index, event);
        *self.by_decision.entry(r.decision).or_default() += 1;
        match &event.event {
            Some(Event::SubmissionAccepted(a)) => match &a.envelope {
                Some(e) if !e.sender_agency.is_empty() => {
                    self.count_submission(e, Outcome::Accepted);
                    self.senders.insert(
                        e.envelope_id.clone(),
                        Accepted {
                            sender: e.sender_agency.clone(),
                            kind: r.kind.clone(),
                            purpose: r.purpose.clone(),
                            legal_basis: r.legal_basis.clone(),
                            transfer_ground: r.transfer_ground.clone(),
                        },
                    );
                    self.agency(&e.sender_agency).accepted.push(r);
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::SubmissionRefused(x)) => match crate::protocol::audit::attributed(x) {
                Some(e) if !e.sender_agency.is_empty() => {
                    // A node's report of its own refusal carries the labels
                    // it refused but no envelope id: nothing was sealed.
                    let outcome = if e.envelope_id.is_empty() {
                        Outcome::RefusedAtNode
                    } else {
                        Outcome::RefusedByBroker
                    };
                    self.count_submission(e, outcome);
                    self.agency(&e.sender_agency).refusals.push(r);
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::ReceiptRecorded(x)) => {
                self.describe(&mut r, &x.envelope_id);
                let accepted = self.senders.get(&x.envelope_id).cloned();
                let rejected = x.status == v1::ReceiptStatus::Rejected as i32;
                let decision = if rejected { "rejected" } else { "delivered" };
                for a in &x.delivered_to {
                    let st = self.agency(a);
                    st.by_decision.entry(decision).or_default()[RECEIVED] += 1;
                    if let (false, Some(acc)) = (rejected, &accepted) {
                        st.by_kind.entry(acc.kind.clone()).or_default().received += 1;
                        st.by_purpose
                            .entry(acc.purpose.clone())
                            .or_default()
                            .received += 1;
                    }
                }
                match accepted {
                    Some(acc) => {
                        let st = self.agency(&acc.sender);
                        st.by_decision.entry(decision).or_default()[SENT] += 1;
                        if rejected {
                            st.rejections.push(r);
                        }
                    }
                    None => self.unattributed.push(r),
                }
            }
            Some(Event::ContentViolation(x)) => {
                self.describe(&mut r, &x.envelope_id);
                let sender = if x.sender_agency.is_empty() {
                    self.senders.get(&x.envelope_id).map(|a| a.sender.clone())
                } else {
                    Some(x.sender_agency.clone())
                };
                match sender {
                    Some(s) => {
                        let st = self.agency(&s);
                        st.by_decision.entry("violation").or_default()[SENT] += 1;
                        st.violations.push(r);
                    }
                    None => self.unattributed.push(r),
                }
            }
            Some(
                Event::RecordsPurged(_)
                | Event::DirectoryChanged(_)
                | Event::DirectoryRefused(_)
                | Event::PolicyChanged(_),
            )
            | None => self.federation_events.push(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::test_support::*;

    #[test]
    fn summary_attributes_every_event() {
        let (s, _) = report_of(&synthetic_log());
        assert_eq!(s.entries, 9);
        assert_eq!(s.by_decision["accepted"], 2);
        assert_eq!(s.by_decision["refused"], 3);
        // One envelope to two RS agencies and one BA agency: RS once, BA once.
        assert_eq!(s.accepted_flows[&("HR".to_string(), "RS".to_string())], 2);
        assert_eq!(s.accepted_flows[&("HR".to_string(), "BA".to_string())], 1);
        assert_eq!(s.refused_flows[&("RS".to_string(), "HR".to_string())], 1);
        assert_eq!(s.refused_flows[&("HR".to_string(), "BA".to_string())], 1);
        let hr = &s.agencies["HR/police"];
        assert_eq!(hr.by_decision["accepted"], [1, 0]);
        assert_eq!(hr.by_decision["refused"], [1, 1]);
        assert_eq!(hr.by_decision["delivered"], [1, 0]);
        assert_eq!(hr.by_decision["rejected"], [1, 0]);
        assert_eq!(hr.by_decision["violation"], [1, 0]);
        assert_eq!(hr.rejections.len(), 1);
        assert_eq!(hr.violations.len(), 1);
        assert_eq!(hr.refusals.len(), 1);
        // Sent once, refused once at its node; a refusal addressed to it
        // is not something it received.
        assert_eq!(
            hr.by_kind["wanted-alert"],
            Counts {
                sent: 1,
                refused_at_node: 1,
                refused_by_broker: 0,
                received: 0
            }
        );
        assert_eq!(hr.accepted.len(), 1);
        assert_eq!(
            hr.accepted[0].envelope_id,
            "01010101-0101-0101-0101-010101010101"
        );
        let rs = &s.agencies["RS/police"];
        assert_eq!(rs.refusals.len(), 1);
        assert_eq!(rs.by_decision["delivered"], [0, 1]);
        assert_eq!(
            rs.by_kind["wanted-alert"],
            Counts {
                sent: 0,
                refused_at_node: 0,
                refused_by_broker: 1,
                received: 1
            }
        );
        // Accepted for RS/prosecutor but never delivered: not received.
        assert!(
            !s.agencies["RS/prosecutor"]
                .by_kind
                .contains_key("mla-request")
        );
        assert_eq!(
            s.agencies["RS/prosecutor"].by_kind["wanted-alert"].received,
            1
        );
        // Rejected by BA's node: BA/police received nothing.
        assert!(s.agencies["BA/police"].by_kind.is_empty());
        // A receipt's row is described by its submission's entry.
        let rejected = &hr.rejections[0];
        assert_eq!(rejected.kind, "wanted-alert");
        assert_eq!(rejected.purpose, "prosecution");
        assert_eq!(s.unattributed.len(), 1);
        assert_eq!(s.federation_events.len(), 1);
        assert_eq!(s.first_at_ms, Some(1_700_000_000_000));
        assert_eq!(s.last_at_ms, Some(1_700_000_008_000));
    }
}

//! Report aggregation: counts per agency and flows between countries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;
use crate::tools::cli::{kind_name, purpose_name};

use super::*;

// ---- report: aggregation --------------------------------------------------------

/// Counts of one agency's activity. `[as sender, as recipient]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyStats {
    pub by_kind: BTreeMap<String, [u64; 2]>,
    pub by_purpose: BTreeMap<String, [u64; 2]>,
    /// accepted, refused, delivered, rejected, violation.
    pub by_decision: BTreeMap<&'static str, [u64; 2]>,
    /// Submissions it sent that were refused.
    pub refusals: Vec<Row>,
    /// Its records that a receiving node rejected.
    pub rejections: Vec<Row>,
    /// Content violations reported against its records.
    pub violations: Vec<Row>,
}

const SENT: usize = 0;
const RECEIVED: usize = 1;

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
    /// Envelope id → sending agency, to attribute receipts.
    senders: HashMap<Vec<u8>, String>,
}

fn country_of(party: &str) -> String {
    party.split('/').next().unwrap_or(party).to_string()
}

impl LogSummary {
    fn agency(&mut self, id: &str) -> &mut AgencyStats {
        self.agencies.entry(id.to_string()).or_default()
    }

    fn count_submission(&mut self, e: &v1::EnvelopeSummary, decision: &'static str, refused: bool) {
        let kind = kind_name(e.kind);
        let purpose = purpose_name(e.purpose);
        let sender = e.sender_agency.clone();
        let s = self.agency(&sender);
        s.by_kind.entry(kind.clone()).or_default()[SENT] += 1;
        s.by_purpose.entry(purpose.clone()).or_default()[SENT] += 1;
        s.by_decision.entry(decision).or_default()[SENT] += 1;
        let mut to: BTreeSet<String> = BTreeSet::new();
        for r in &e.recipients {
            let a = self.agency(r);
            a.by_kind.entry(kind.clone()).or_default()[RECEIVED] += 1;
            a.by_purpose.entry(purpose.clone()).or_default()[RECEIVED] += 1;
            a.by_decision.entry(decision).or_default()[RECEIVED] += 1;
            to.insert(country_of(r));
        }
        let from = if sender.is_empty() {
            e.sender_node.clone()
        } else {
            country_of(&sender)
        };
        let flows = if refused {
            &mut self.refused_flows
        } else {
            &mut self.accepted_flows
        };
        for cc in to {
            *flows.entry((from.clone(), cc)).or_default() += 1;
        }
    }

    /// Adds entry `index`.
    pub fn add(&mut self, index: u64, event: &v1::AuditEvent) {
        self.entries += 1;
        if event.at_ms != 0 {
            self.first_at_ms = Some(self.first_at_ms.map_or(event.at_ms, |t| t.min(event.at_ms)));
            self.last_at_ms = Some(self.last_at_ms.map_or(event.at_ms, |t| t.max(event.at_ms)));
        }
        let r = row(index, event);
        *self.by_decision.entry(r.decision).or_default() += 1;
        match &event.event {
            Some(Event::SubmissionAccepted(a)) => match &a.envelope {
                Some(e) if !e.sender_agency.is_empty() => {
                    self.count_submission(e, "accepted", false);
                    self.senders
                        .insert(e.envelope_id.clone(), e.sender_agency.clone());
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::SubmissionRefused(x)) => match crate::protocol::audit::attributed(x) {
                Some(e) if !e.sender_agency.is_empty() => {
                    self.count_submission(e, "refused", true);
                    self.agency(&e.sender_agency).refusals.push(r);
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::ReceiptRecorded(x)) => {
                let sender = self.senders.get(&x.envelope_id).cloned();
                let rejected = x.status == v1::ReceiptStatus::Rejected as i32;
                let decision = if rejected { "rejected" } else { "delivered" };
                for a in &x.delivered_to {
                    self.agency(a).by_decision.entry(decision).or_default()[RECEIVED] += 1;
                }
                match sender {
                    Some(s) => {
                        let st = self.agency(&s);
                        st.by_decision.entry(decision).or_default()[SENT] += 1;
                        if rejected {
                            st.rejections.push(r);
                        }
                    }
                    None => self.unattributed.push(r),
                }
            }
            Some(Event::ContentViolation(x)) => {
                let sender = if x.sender_agency.is_empty() {
                    self.senders.get(&x.envelope_id).cloned()
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
    use crate::tools::audit::test_support::*;

    #[test]
    fn summary_attributes_every_event() {
        let (s, _) = report_of(&synthetic_log());
        assert_eq!(s.entries, 8);
        assert_eq!(s.by_decision["accepted"], 2);
        assert_eq!(s.by_decision["refused"], 2);
        // One envelope to two RS agencies and one BA agency: RS once, BA once.
        assert_eq!(s.accepted_flows[&("HR".to_string(), "RS".to_string())], 2);
        assert_eq!(s.accepted_flows[&("HR".to_string(), "BA".to_string())], 1);
        assert_eq!(s.refused_flows[&("RS".to_string(), "HR".to_string())], 1);
        let hr = &s.agencies["HR/police"];
        assert_eq!(hr.by_decision["accepted"], [1, 0]);
        assert_eq!(hr.by_decision["refused"], [0, 1]);
        assert_eq!(hr.by_decision["delivered"], [1, 0]);
        assert_eq!(hr.by_decision["rejected"], [1, 0]);
        assert_eq!(hr.by_decision["violation"], [1, 0]);
        assert_eq!(hr.rejections.len(), 1);
        assert_eq!(hr.violations.len(), 1);
        assert_eq!(hr.by_kind["wanted-alert"], [1, 1]);
        let rs = &s.agencies["RS/police"];
        assert_eq!(rs.refusals.len(), 1);
        assert_eq!(rs.by_decision["delivered"], [0, 1]);
        assert_eq!(s.agencies["RS/prosecutor"].by_kind["mla-request"], [0, 1]);
        assert_eq!(s.unattributed.len(), 1);
        assert_eq!(s.federation_events.len(), 1);
        assert_eq!(s.first_at_ms, Some(1_700_000_000_000));
        assert_eq!(s.last_at_ms, Some(1_700_000_007_000));
    }
}

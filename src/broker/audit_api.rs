//! The audit API: read-only access to the transparency log for auditors.
//!
//! Only auditor certificates issued directly by the federation root, for an
//! auditor the directory lists, are served. Proofs cost O(log n) reads of
//! stored tree nodes; queries scan the entries.

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::BrokerState;
use super::service::{checkpoint_response, inclusion_proof};
use crate::ids::{EnvelopeId, Role};
use crate::proto::v1;
use crate::tls::{Issuer, peer_of};

const PAGE: u64 = 1000;

pub struct AuditService {
    state: Arc<BrokerState>,
}

impl AuditService {
    pub fn new(state: Arc<BrokerState>) -> Self {
        AuditService { state }
    }

    fn auditor<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let peer = peer_of(req)?;
        match (&peer.role, peer.issuer) {
            (Ok(Role::Auditor(name)), Issuer::Root)
                if self.state.directory().auditor_active(name) =>
            {
                Ok(name.clone())
            }
            (Ok(Role::Auditor(name)), Issuer::Root) => Err(Status::permission_denied(format!(
                "auditor {name} is not listed or is revoked"
            ))),
            (Ok(Role::Auditor(name)), _) => Err(Status::permission_denied(format!(
                "certificate for auditor {name} is not issued directly by the federation root"
            ))),
            (Ok(role), _) => Err(Status::permission_denied(format!(
                "the audit API is for auditors; this certificate is for {role}"
            ))),
            (Err(e), _) => Err(Status::permission_denied(format!(
                "certificate not accepted: {e}"
            ))),
        }
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<v1::LogEntry>, Status> {
        let leaves = self.state.store.leaves(start, end).map_err(storage)?;
        Ok((start..)
            .zip(leaves)
            .map(|(index, leaf)| v1::LogEntry {
                index,
                event: v1::AuditEvent::decode(leaf.as_slice()).ok(),
                leaf,
            })
            .collect())
    }
}

fn storage(e: super::store::StoreError) -> Status {
    tracing::error!(error = %e, "broker storage failure");
    Status::unavailable("broker storage unavailable; try again")
}

/// What a query can filter on, read off one event.
struct Facts<'a> {
    decision: &'static str,
    agencies: Vec<&'a str>,
    nodes: Vec<&'a str>,
    kind: Option<i32>,
}

type Parties<'a> = (Vec<&'a str>, Vec<&'a str>, Option<i32>);

fn summary(s: &v1::EnvelopeSummary) -> Parties<'_> {
    let mut agencies: Vec<&str> = vec![s.sender_agency.as_str()];
    agencies.extend(s.recipients.iter().map(String::as_str));
    (agencies, vec![s.sender_node.as_str()], Some(s.kind))
}

fn facts(e: &v1::AuditEvent) -> Facts<'_> {
    use v1::audit_event::Event;
    match &e.event {
        Some(Event::SubmissionAccepted(a)) => {
            let (agencies, nodes, kind) = a.envelope.as_ref().map(summary).unwrap_or_default();
            Facts {
                decision: "accepted",
                agencies,
                nodes,
                kind,
            }
        }
        Some(Event::SubmissionRefused(r)) => {
            let (agencies, mut nodes, kind) = r.envelope.as_ref().map(summary).unwrap_or_default();
            nodes.push(r.submitting_node.as_str());
            Facts {
                decision: "refused",
                agencies,
                nodes,
                kind,
            }
        }
        Some(Event::ReceiptRecorded(r)) => Facts {
            decision: if r.status == v1::ReceiptStatus::Delivered as i32 {
                "delivered"
            } else {
                "rejected"
            },
            agencies: r.delivered_to.iter().map(String::as_str).collect(),
            nodes: vec![r.recipient_node.as_str()],
            kind: None,
        },
        Some(Event::ContentViolation(v)) => Facts {
            decision: "violation",
            agencies: vec![v.sender_agency.as_str()],
            nodes: vec![v.sender_node.as_str(), v.reporting_node.as_str()],
            kind: None,
        },
        Some(Event::RecordsPurged(p)) => Facts {
            decision: "purged",
            agencies: vec![],
            nodes: vec![p.node.as_str()],
            kind: None,
        },
        Some(Event::DirectoryChanged(_)) => Facts {
            decision: "directory",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
        Some(Event::PolicyChanged(_)) => Facts {
            decision: "policy",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
        None => Facts {
            decision: "",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
    }
}

fn matches(q: &v1::QueryRequest, e: &v1::AuditEvent) -> bool {
    let f = facts(e);
    if !q.decision.is_empty() && q.decision != f.decision {
        return false;
    }
    if !q.agency.is_empty() && !f.agencies.contains(&q.agency.as_str()) {
        return false;
    }
    if !q.country.is_empty() {
        let prefix = format!("{}/", q.country);
        let in_agencies = f.agencies.iter().any(|a| a.starts_with(&prefix));
        if !in_agencies && !f.nodes.contains(&q.country.as_str()) {
            return false;
        }
    }
    if !q.kind.is_empty() {
        let want = crate::categories::parse_kind_short_name(&q.kind).map(|k| k as i32);
        if want.is_none() || f.kind != want {
            return false;
        }
    }
    (q.from_ms == 0 || e.at_ms >= q.from_ms) && (q.to_ms == 0 || e.at_ms < q.to_ms)
}

#[tonic::async_trait]
impl v1::audit_server::Audit for AuditService {
    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointResponse>, Status> {
        self.auditor(&req)?;
        checkpoint_response(&self.state, req.get_ref().from_size).map(Response::new)
    }

    async fn get_entries(
        &self,
        req: Request<v1::GetEntriesRequest>,
    ) -> Result<Response<v1::GetEntriesResponse>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let len = self.state.store.audit_len().map_err(storage)?;
        let end = r.end.min(len).min(r.start.saturating_add(PAGE));
        if r.start > end {
            return Err(Status::out_of_range(format!(
                "start {} is beyond the log ({len} entries)",
                r.start
            )));
        }
        Ok(Response::new(v1::GetEntriesResponse {
            entries: self.entries(r.start, end)?,
        }))
    }

    async fn prove_inclusion(
        &self,
        req: Request<v1::ProveInclusionRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let index = match &r.target {
            Some(v1::prove_inclusion_request::Target::Index(i)) => *i,
            Some(v1::prove_inclusion_request::Target::EnvelopeId(id)) => {
                let id: EnvelopeId = id
                    .parse()
                    .map_err(|e: crate::ids::IdError| Status::invalid_argument(e.to_string()))?;
                self.state
                    .store
                    .accepted(&id)
                    .map_err(storage)?
                    .ok_or_else(|| {
                        Status::not_found(format!("no accepted submission {id} in the log"))
                    })?
                    .log_index
            }
            None => return Err(Status::invalid_argument("give an index or an envelope id")),
        };
        inclusion_proof(&self.state, index, r.tree_size).map(Response::new)
    }

    async fn prove_consistency(
        &self,
        req: Request<v1::ProveConsistencyRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let wanted = if r.second_size == 0 {
            None
        } else {
            Some(r.second_size)
        };
        let (second, checkpoint) = self
            .state
            .log
            .checkpoint_note(self.state.store.as_ref(), wanted)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found("no checkpoint of that size"))?;
        if r.first_size == 0 || r.first_size > second {
            return Err(Status::invalid_argument(format!(
                "first size must be between 1 and {second}, not {}",
                r.first_size
            )));
        }
        let proof = if r.first_size == second {
            Vec::new()
        } else {
            self.state
                .store
                .consistency_proof(r.first_size, second)
                .map_err(storage)?
        };
        Ok(Response::new(v1::ConsistencyProof {
            first_size: r.first_size,
            second_size: second,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint,
        }))
    }

    async fn query(
        &self,
        req: Request<v1::QueryRequest>,
    ) -> Result<Response<v1::QueryResponse>, Status> {
        self.auditor(&req)?;
        let q = req.into_inner();
        let limit = if q.limit == 0 {
            10_000
        } else {
            q.limit as usize
        };
        let len = self.state.store.audit_len().map_err(storage)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < len && out.len() < limit {
            let end = (start + PAGE).min(len);
            for e in self.entries(start, end)? {
                if e.event.as_ref().is_some_and(|ev| matches(&q, ev)) {
                    out.push(e);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            start = end;
        }
        Ok(Response::new(v1::QueryResponse { entries: out }))
    }
}

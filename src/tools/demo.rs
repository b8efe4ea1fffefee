//! `casebridge demo`: a throwaway federation on loopback playing the
//! exchange scenarios, shown step by step. Every step goes through the real
//! path: agency → node (mutual TLS) → broker → node → agency, with sealing,
//! signatures, policy decisions, durable stores and signed receipts.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::protocol::directory::Directory;
use crate::protocol::envelope;
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;
use crate::protocol::time::DAY_MS;
use crate::tools::cli::{
    categories_text, kind_name, labels_text, state_name, status_line, status_lines,
};
use crate::tools::client::AgencyClient;
use crate::tools::local::LocalFederation;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

const MISSING_PERSON_TRACE: &str = include_str!("../../examples/records/missing_person_trace.json");
const TRACE_RESULT: &str = include_str!("../../examples/records/trace_result.json");
const MLA_REQUEST: &str = include_str!("../../examples/records/mla_request.json");
const MLA_RESPONSE: &str = include_str!("../../examples/records/mla_response.json");
const WANTED_ALERT: &str = include_str!("../../examples/records/wanted_alert.json");
const INTELLIGENCE_REPORT: &str = include_str!("../../examples/records/intelligence_report.json");
const FINGERPRINTS: &str = include_str!("../../examples/records/fingerprints.json");

/// The countries the demo's federation has: those its scenarios involve.
const COUNTRIES: [&str; 8] = ["AL", "BA", "HR", "ME", "MK", "RS", "SI", "XK"];

fn record(json: &str) -> anyhow::Result<v1::CaseRecord> {
    serde_json::from_str(json).context("embedded example record")
}

/// Labels, built up step by step.
fn labels(purpose: v1::Purpose, basis: v1::LegalBasis, reference: &str, case: &str) -> v1::Labels {
    v1::Labels {
        purpose: purpose as i32,
        legal_basis: basis as i32,
        legal_basis_reference: reference.into(),
        handling: v1::HandlingCode::H0 as i32,
        classification: v1::Classification::Restricted as i32,
        priority: v1::Priority::Routine as i32,
        case_reference: case.into(),
        ..Default::default()
    }
}

fn handling(mut l: v1::Labels, h: v1::HandlingCode, restriction: &str) -> v1::Labels {
    l.handling = h as i32;
    l.handling_restriction = restriction.into();
    l
}

fn evaluation(
    mut l: v1::Labels,
    source: v1::SourceReliability,
    accuracy: v1::InformationAccuracy,
) -> v1::Labels {
    l.evaluation = Some(v1::Evaluation {
        source: source as i32,
        accuracy: accuracy as i32,
    });
    l
}

fn urgency(mut l: v1::Labels, c: v1::Classification, p: v1::Priority) -> v1::Labels {
    l.classification = c as i32;
    l.priority = p as i32;
    l
}

fn reply_to(mut l: v1::Labels, id: &str) -> v1::Labels {
    l.in_reply_to = id.to_string();
    l
}

struct Outcome {
    step: String,
    ok: bool,
    detail: String,
}

struct Demo<'a> {
    fed: &'a LocalFederation,
    directory: Directory,
    outcomes: Vec<Outcome>,
    /// Where the audit report goes: the federation's directory, or the one
    /// given.
    report_dir: PathBuf,
}

/// Polls `f` until it yields Some, for at most [`WAIT`].
async fn eventually<T, Fut: Future<Output = anyhow::Result<Option<T>>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("gave up waiting for {what} after {} s", WAIT.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Demo<'_> {
    fn client(&self, agency: &str) -> anyhow::Result<AgencyClient> {
        self.fed.client(agency)
    }

    fn record_outcome(&mut self, step: &str, ok: bool, detail: String) {
        self.outcomes.push(Outcome {
            step: step.to_string(),
            ok,
            detail,
        });
    }

    fn show_request(
        &self,
        step: &str,
        from: &str,
        to: &[&str],
        kind: i32,
        labels: Option<&v1::Labels>,
    ) {
        println!("\n── {step}");
        println!("   {from} → {}   {}", to.join(", "), kind_name(kind));
        if let Some(l) = labels {
            println!("   labels:     {}", labels_text(l));
            if !l.in_reply_to.is_empty() {
                println!("   in reply to {}", l.in_reply_to);
            }
        }
    }

    /// Sends a record and follows it to every recipient's inbox.
    async fn exchange(
        &mut self,
        step: &str,
        from: &str,
        to: &[&str],
        record: v1::CaseRecord,
        labels: v1::Labels,
    ) -> anyhow::Result<String> {
        let kind = crate::protocol::categories::record_kind(&record)
            .map(|k| k as i32)
            .unwrap_or_default();
        self.show_request(step, from, to, kind, Some(&labels));
        let mut sender = self.client(from)?;
        let resp = sender
            .api
            .send(v1::SendRequest {
                recipients: to.iter().map(ToString::to_string).collect(),
                record: Some(record),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("send from {from}: {}", status_line(&s)))?
            .into_inner();
        self.follow(step, from, to, resp).await
    }

    /// Waits for the signed receipts of an accepted record, checks each
    /// against the directory, and checks each recipient's inbox.
    async fn follow(
        &mut self,
        step: &str,
        from: &str,
        to: &[&str],
        resp: v1::SendResponse,
    ) -> anyhow::Result<String> {
        println!(
            "   categories: {} (derived from the content by node {})",
            categories_text(&resp.categories),
            &from[..2]
        );
        println!(
            "   envelope {}: {} (audit log index {})",
            resp.envelope_id,
            state_name(resp.state),
            resp.log_index
        );
        if resp.state != v1::SendState::Accepted as i32 {
            bail!("{step}: not accepted: {}", resp.detail);
        }
        let mut sender = self.client(from)?;
        let status = self.await_receipts(&mut sender, &resp.envelope_id).await?;
        for (rs, line) in status.recipient_status.iter().zip(status_lines(&status)) {
            println!("   receipt:    {line}");
            let signed = rs.signed_receipt.as_ref().context("receipt missing")?;
            let body =
                envelope::verify_receipt(signed, &self.directory, crate::daemon::clock::now_ms())
                    .map_err(|e| anyhow::anyhow!("receipt from {}: {e}", rs.node))?;
            if body.status() != v1::ReceiptStatus::Delivered {
                bail!(
                    "{step}: node {} rejected the record: {}",
                    rs.node,
                    body.reason
                );
            }
            println!(
                "               signature checked against node {}'s key in the signed directory (receipt sha256 {})",
                body.recipient_node,
                &hex::encode(envelope::sha256(&signed.body))[..16]
            );
        }
        for r in to {
            let mut c = self.client(r)?;
            let got = self.await_inbox(&mut c, &resp.envelope_id).await?;
            let entry = got.entry.context("inbox entry")?;
            println!(
                "   inbox of {r}: {} from {}, opened and checked by node {}",
                kind_name(entry.kind),
                entry.sender_agency,
                &r[..2]
            );
            for notice in entry.restrictions.iter().flat_map(|x| x.notices.iter()) {
                println!("               shown to {r}'s systems: {notice}");
            }
        }
        let detail = format!(
            "{from} → {}: delivered, {} signed receipt(s)",
            to.join(", "),
            status.recipient_status.len()
        );
        self.record_outcome(step, true, detail);
        Ok(resp.envelope_id)
    }

    /// Expects a refusal and shows its explanation. Returns it.
    fn refused(
        &mut self,
        step: &str,
        result: Result<v1::SendResponse, tonic::Status>,
    ) -> anyhow::Result<String> {
        let why = match result {
            Err(s) if s.code() == tonic::Code::PermissionDenied => s.message().to_string(),
            Ok(r) if r.state == v1::SendState::Refused as i32 => r.detail,
            Ok(r) => bail!(
                "{step}: expected a refusal, got {}: {}",
                state_name(r.state),
                r.detail
            ),
            Err(s) => bail!("{step}: expected a policy refusal, got {}", status_line(&s)),
        };
        println!(
            "   REFUSED before sealing: no record left the country, only the refusal for the audit log. The explanation:"
        );
        for line in why.lines() {
            println!("      {line}");
        }
        self.record_outcome(step, true, "refused as the policies require".into());
        Ok(why)
    }

    async fn await_receipts(
        &self,
        c: &mut AgencyClient,
        id: &str,
    ) -> anyhow::Result<v1::SendStatus> {
        eventually(&format!("receipts for {id}"), || {
            let mut c = c.clone();
            async move {
                let s = c
                    .api
                    .status(v1::StatusRequest {
                        envelope_id: id.to_string(),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("status: {}", status_line(&s)))?
                    .into_inner();
                let done = s
                    .recipient_status
                    .iter()
                    .all(|r| r.state != v1::DeliveryState::Pending as i32);
                Ok(done.then_some(s))
            }
        })
        .await
    }

    async fn await_inbox(&self, c: &mut AgencyClient, id: &str) -> anyhow::Result<v1::InboxRecord> {
        eventually(&format!("{id} in {}'s inbox", c.agency), || {
            let mut c = c.clone();
            async move {
                match c
                    .api
                    .fetch(v1::FetchRequest {
                        envelope_id: id.to_string(),
                    })
                    .await
                {
                    Ok(r) => Ok(Some(r.into_inner())),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => bail!("{}: {}", c.agency, status_line(&s)),
                }
            }
        })
        .await
    }

    async fn scenario_1(&mut self) -> anyhow::Result<()> {
        use v1::{HandlingCode as H, LegalBasis as L, Purpose as U};
        println!("\n═══ Scenario 1: missing-person tracing request and its answer");
        let humanitarian =
            "Humanitarian use only: tracing and identification, not for criminal proceedings.";
        let l = handling(
            labels(
                U::MissingPersons,
                L::HumanitarianAgreement,
                "BA-HR agreement on tracing missing persons",
                "MP-BA-2025-0417",
            ),
            H::H3,
            humanitarian,
        );
        let trace = self
            .exchange(
                "1a tracing request",
                "BA/missing-persons",
                &["HR/missing-persons"],
                record(MISSING_PERSON_TRACE)?,
                l,
            )
            .await?;
        let l = handling(
            labels(
                U::MissingPersons,
                L::SpecificSituationDerogation,
                "LED Art. 38(1)(a): vital interests of the missing person",
                "MP-BA-2025-0417",
            ),
            H::H3,
            humanitarian,
        );
        self.exchange(
            "1b trace result",
            "HR/missing-persons",
            &["BA/missing-persons"],
            record(TRACE_RESULT)?,
            reply_to(l, &trace),
        )
        .await?;
        Ok(())
    }

    async fn scenario_2(&mut self) -> anyhow::Result<()> {
        use v1::{
            Classification as C, HandlingCode as H, LegalBasis as L, Priority as P, Purpose as U,
        };
        println!(
            "\n═══ Scenario 2: mutual legal assistance request and response; from an EU member, on a transfer ground"
        );
        let l = urgency(
            handling(
                labels(
                    U::Prosecution,
                    L::EuropeanMlaConvention,
                    "European Convention on Mutual Assistance in Criminal Matters",
                    "KTO-RS-2025-112",
                ),
                H::H1,
                "",
            ),
            C::Confidential,
            P::Urgent,
        );
        let mla = self
            .exchange(
                "2a MLA request",
                "RS/prosecutor",
                &["ME/prosecutor"],
                record(MLA_REQUEST)?,
                l.clone(),
            )
            .await?;
        self.exchange(
            "2b MLA response with evidence",
            "ME/prosecutor",
            &["RS/prosecutor"],
            record(MLA_RESPONSE)?,
            reply_to(l.clone(), &mla),
        )
        .await?;

        // From an EU member to a non-member, the convention alone is not
        // enough: the transfer needs a third-country transfer ground too.
        let mut hr = l;
        hr.case_reference = "KTO-HR-2025-031".into();
        let step = "2c HR→BA MLA request without a ground";
        self.show_request(
            step,
            "HR/prosecutor",
            &["BA/prosecutor"],
            v1::RecordKind::MlaRequest as i32,
            Some(&hr),
        );
        let mut c = self.client("HR/prosecutor")?;
        let result = c
            .api
            .send(v1::SendRequest {
                recipients: vec!["BA/prosecutor".into()],
                record: Some(record(MLA_REQUEST)?),
                labels: Some(hr.clone()),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner);
        let why = self.refused(step, result)?;
        if !why.contains(crate::protocol::policy::NEEDS_GROUND) {
            bail!("scenario 2: the refusal does not name the rule on third-country transfers");
        }
        hr.transfer_ground = v1::TransferGround::AppropriateSafeguards as i32;
        self.exchange(
            "2d HR→BA MLA request on safeguards",
            "HR/prosecutor",
            &["BA/prosecutor"],
            record(MLA_REQUEST)?,
            hr,
        )
        .await?;
        Ok(())
    }

    async fn scenario_3(&mut self) -> anyhow::Result<()> {
        use v1::{
            Classification as C, InformationAccuracy as I, LegalBasis as L, Priority as P,
            Purpose as U, SourceReliability as S,
        };
        println!("\n═══ Scenario 3: immediate wanted-vehicle alert to three countries");
        let l = labels(
            U::ImmediateThreat,
            L::SpecificSituationDerogation,
            "LED Art. 38(1)(c): immediate and serious threat to public security",
            "SI-ALERT-2025-0091",
        );
        let l = urgency(
            evaluation(l, S::B, I::InformationAccuracy2),
            C::Restricted,
            P::Immediate,
        );
        self.exchange(
            "3 wanted-vehicle alert",
            "SI/police",
            &["HR/police", "BA/police", "RS/police"],
            record(WANTED_ALERT)?,
            l,
        )
        .await?;
        Ok(())
    }

    async fn scenario_4(&mut self) -> anyhow::Result<()> {
        use v1::{
            HandlingCode as H, InformationAccuracy as I, LegalBasis as L, Purpose as U,
            SourceReliability as S,
        };
        println!(
            "\n═══ Scenario 4: an H2 intelligence report, passed on only with the originator's permission"
        );
        let l = labels(
            U::InvestigationMigrantSmuggling,
            L::RegionalPoliceConvention,
            "Police Cooperation Convention for Southeast Europe",
            "MK-OC-2025-0733",
        );
        let l = evaluation(handling(l, H::H2, ""), S::B, I::InformationAccuracy3);
        let report = self
            .exchange(
                "4a intelligence report (H2)",
                "MK/police",
                &["RS/police"],
                record(INTELLIGENCE_REPORT)?,
                l,
            )
            .await?;

        let mut rs = self.client("RS/police")?;
        let forward = || v1::ForwardRequest {
            envelope_id: report.clone(),
            recipients: vec!["AL/police".into()],
            labels: None,
            ..Default::default()
        };
        self.show_request(
            "4b onward transfer without permission",
            "RS/police",
            &["AL/police"],
            v1::RecordKind::IntelligenceReport as i32,
            None,
        );
        let first = rs
            .api
            .forward(forward())
            .await
            .map(tonic::Response::into_inner);
        self.refused("4b onward transfer without permission", first)?;

        self.show_request(
            "4c permission request",
            "RS/police",
            &["MK/police"],
            v1::RecordKind::PermissionRequest as i32,
            None,
        );
        let req = rs
            .api
            .request_permission(v1::RequestPermissionRequest {
                envelope_id: report.clone(),
                third_agencies: vec!["AL/police".into()],
                justification:
                    "The route continues through AL; AL police hold the border crossing records."
                        .into(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("request permission: {}", status_line(&s)))?
            .into_inner();
        let request_id = self
            .follow("4c permission request", "RS/police", &["MK/police"], req)
            .await?;

        self.show_request(
            "4d permission granted",
            "MK/police",
            &["RS/police"],
            v1::RecordKind::PermissionGrant as i32,
            None,
        );
        let grant = self
            .client("MK/police")?
            .api
            .grant_permission(v1::GrantPermissionRequest {
                request_envelope_id: request_id,
                conditions: "For the migrant-smuggling investigation only; H2 stays on the record."
                    .into(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("grant permission: {}", status_line(&s)))?
            .into_inner();
        self.follow("4d permission granted", "MK/police", &["RS/police"], grant)
            .await?;
        println!(
            "   the broker recorded MK/police's grant: RS/police may pass {report} on to AL/police"
        );

        self.show_request(
            "4e onward transfer with permission",
            "RS/police",
            &["AL/police"],
            v1::RecordKind::IntelligenceReport as i32,
            None,
        );
        let again = rs
            .api
            .forward(forward())
            .await
            .map_err(|s| anyhow::anyhow!("forward: {}", status_line(&s)))?
            .into_inner();
        self.follow(
            "4e onward transfer with permission",
            "RS/police",
            &["AL/police"],
            again,
        )
        .await?;
        Ok(())
    }

    async fn scenario_5(&mut self) -> anyhow::Result<()> {
        use v1::{LegalBasis as L, Purpose as U};
        println!("\n═══ Scenario 5: fingerprints for a statistics purpose");
        let l = labels(
            U::Statistics,
            L::AppropriateSafeguards,
            "HR-XK arrangement on joint risk analysis",
            "HR-STAT-2025-004",
        );
        self.show_request(
            "5 fingerprints for statistics",
            "HR/police",
            &["XK/police"],
            v1::RecordKind::InformationResponse as i32,
            Some(&l),
        );
        let mut hr = self.client("HR/police")?;
        let result = hr
            .api
            .send(v1::SendRequest {
                recipients: vec!["XK/police".into()],
                record: Some(record(FINGERPRINTS)?),
                labels: Some(l),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner);
        let why = self.refused("5 fingerprints for statistics", result)?;
        if !why.contains("no-biometric-genetic-for-statistics") {
            bail!("scenario 5: the explanation does not name the policy that refused it");
        }
        Ok(())
    }

    async fn scenario_6(&mut self) -> anyhow::Result<()> {
        use v1::{LegalBasis as L, Purpose as U};
        println!("\n═══ Scenario 6: a node that lies about its record's categories");
        let step = "6 lying sender caught";
        self.show_request(
            step,
            "HR/police",
            &["BA/police"],
            v1::RecordKind::InformationResponse as i32,
            None,
        );
        // Node HR's own keys, used as a compromised node would: the header
        // declares identity only, the content carries fingerprints.
        let cfg = self
            .fed
            .node_configs
            .get(&"HR".parse()?)
            .context("node HR")?;
        let key = crate::storage::files::keys::load_signing_key(&cfg.keys.signing)?;
        let sender: AgencyId = "HR/police".parse()?;
        let recipients = ["BA/police".parse()?];
        let rec = record(FINGERPRINTS)?;
        let now = crate::daemon::clock::now_ms();
        let input = envelope::SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &rec,
            labels: labels(
                U::InvestigationOther,
                L::SpecificSituationDerogation,
                "LED Art. 38(1)(d): investigation of a specific criminal offence",
                "HR-2025-5521",
            ),
            created_at_ms: now,
            expires_at_ms: now + 30 * DAY_MS,
            onward_of: None,
            permission: None,
        };
        let declared = [v1::DataCategory::Identity].into_iter().collect();
        let sealed = envelope::seal_declaring(&input, declared, &key, &self.directory)?;
        println!(
            "   header declares: identity; the sealed content also holds: {}",
            crate::protocol::categories::derive(&rec)
        );
        let tls = crate::daemon::tls::ClientTls::new(
            &crate::daemon::tls::Identity::load(&cfg.tls.cert, &cfg.tls.key)?,
            &crate::daemon::tls::load_certs(&cfg.tls.root)?.remove(0),
            &cfg.federation,
        )?;
        let mut exchange = crate::daemon::rpc::exchange_client::ExchangeClient::new(tls.channel(
            &self.fed.broker_addr.to_string(),
            crate::protocol::ids::Role::Broker,
        )?);
        let accepted = exchange
            .submit(v1::SubmitRequest {
                envelope: Some(sealed.envelope),
            })
            .await
            .map_err(|s| anyhow::anyhow!("submit: {}", status_line(&s)))?
            .into_inner();
        println!(
            "   the broker, which cannot read content, accepted it at audit log index {}",
            accepted.log_index
        );
        let broker = self.fed.broker().context("broker")?.clone();
        let violation = eventually("the violation in the audit log", || {
            let broker = broker.clone();
            async move {
                let len = broker.store.audit_len().await?;
                let events = broker.store.audit_range(0, len).await?;
                Ok(events
                    .into_iter()
                    .enumerate()
                    .find_map(|(i, e)| match e.event {
                        Some(v1::audit_event::Event::ContentViolation(v))
                            if v.envelope_id == sealed.id.as_bytes() =>
                        {
                            Some((i, v))
                        }
                        _ => None,
                    }))
            }
        })
        .await?;
        let (index, v) = violation;
        println!(
            "   node {} opened it, found undeclared categories and rejected it with a signed receipt:",
            v.reporting_node
        );
        println!("      {}", v.detail);
        println!(
            "   audit log index {index}: content violation by {} ({})",
            v.sender_agency, v.sender_node
        );
        let inbox = self
            .client("BA/police")?
            .api
            .fetch(v1::FetchRequest {
                envelope_id: sealed.id.to_string(),
            })
            .await;
        if inbox.is_ok() {
            bail!("scenario 6: the content reached BA/police");
        }
        println!("   BA/police never saw the content.");
        // BA's receipt is relayed to node HR, whose keys signed the envelope
        // but which never sent it: what a node does when its identity is
        // used elsewhere.
        let hr = self.fed.node("HR".parse()?).context("node HR")?.clone();
        let id = sealed.id.to_string();
        eventually("node HR's alarm", || {
            let hr = hr.clone();
            let id = id.clone();
            async move {
                Ok(hr
                    .store
                    .evidence()
                    .await?
                    .into_iter()
                    .find(|e| e.contains(&id)))
            }
        })
        .await?;
        println!(
            "   node HR never sent it: BA's receipt, relayed to HR, raised HR's alarm (its keys signed a record \
             it did not send), and HR kept the receipt as evidence."
        );
        self.record_outcome(step, true, "rejected by node BA, violation logged".into());
        Ok(())
    }

    async fn scenarios(&mut self) -> anyhow::Result<()> {
        self.scenario_1().await?;
        self.scenario_2().await?;
        self.scenario_3().await?;
        self.scenario_4().await?;
        self.scenario_5().await?;
        self.scenario_6().await?;
        self.audit().await
    }

    /// The auditor's view: the log verified from its entries against a
    /// checkpoint the nodes cosigned, and the HTML report.
    async fn audit(&mut self) -> anyhow::Result<()> {
        println!("\n═══ Audit: the log verified by an auditor");
        let broker = self.fed.broker().context("broker")?.clone();
        broker.log.checkpoint(broker.store.as_ref()).await?;
        let witnesses = self.fed.node_configs.len();
        // Each node witnesses once a second; wait for every cosignature.
        eventually("every node's cosignature", || {
            let broker = broker.clone();
            async move {
                let Some((size, _)) = broker.store.latest_checkpoint().await? else {
                    return Ok(None);
                };
                Ok((broker.store.cosignatures(size).await?.len() >= witnesses).then_some(()))
            }
        })
        .await?;
        let (_, profile) = self
            .fed
            .fed
            .auditor_profiles
            .first()
            .context("auditor profile")?;
        let report = crate::tools::audit::verify(profile, None).await?;
        for line in report.to_string().lines() {
            println!("   {line}");
        }
        let out = self.report_dir.join("audit-report.html");
        crate::tools::audit::report(profile, None, &out).await?;
        println!("   report written to {}", out.display());
        self.record_outcome(
            "audit verify and report",
            true,
            format!("{} entries verified, report written", report.size()),
        );
        Ok(())
    }
}

/// How many steps the scenarios have; the demo fails unless all succeed.
const STEPS: usize = 15;

/// Runs the demo; returns whether every step succeeded. The federation
/// lives in `keep` (else a temporary directory removed at the end); the
/// audit report is written to `report_dir`, else into the federation's
/// directory, never to a path shared with other runs.
pub async fn run(keep: Option<PathBuf>, report_dir: Option<PathBuf>) -> anyhow::Result<bool> {
    let tmp = tempfile::tempdir()?;
    let kept = keep.is_some() || report_dir.is_some();
    let dir = keep.unwrap_or_else(|| tmp.path().join("federation"));
    if let Some(r) = &report_dir {
        std::fs::create_dir_all(r)
            .with_context(|| format!("creating the report directory {}", r.display()))?;
    }
    let countries: Vec<Country> = COUNTRIES
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_, _>>()?;
    println!("casebridge demo: a throwaway federation on loopback");
    let fed = LocalFederation::start(&dir, &countries).await?;
    println!(
        "   federation:  {} ({})",
        fed.broker_config.federation,
        dir.display()
    );
    println!(
        "   PKI:         federation root CA, {} national CAs, TLS 1.3 with client certificates everywhere",
        countries.len()
    );
    println!("   broker:      {}", fed.broker_addr);
    for cc in &countries {
        if let Some(a) = fed.node_addr(*cc) {
            println!("   node {cc}:     {a}");
        }
    }
    let key = crate::storage::files::directory::load_public_key(&fed.broker_config.directory_key)?;
    let directory = crate::storage::files::directory::load(
        &fed.broker_config.directory,
        &key,
        &fed.broker_config.federation,
    )?;
    let mut demo = Demo {
        fed: &fed,
        directory,
        outcomes: Vec::new(),
        report_dir: report_dir.unwrap_or_else(|| dir.clone()),
    };
    let result = demo.scenarios().await;
    let outcomes = std::mem::take(&mut demo.outcomes);
    if let Err(e) = &result {
        println!("\n   FAILED: {e:#}");
    }
    fed.shutdown().await?;

    println!("\n═══ Summary");
    for o in &outcomes {
        println!(
            "   {} {:<42} {}",
            if o.ok { "ok " } else { "ERR" },
            o.step,
            o.detail
        );
    }
    let ok = result.is_ok() && outcomes.len() == STEPS && outcomes.iter().all(|o| o.ok);
    println!(
        "\n{} of {STEPS} steps as expected: records delivered end to end with signed receipts, \
         refusals explained, the lying sender caught. The broker saw only signed headers.",
        outcomes.iter().filter(|o| o.ok).count()
    );
    if !kept {
        println!(
            "(the federation and its audit report are removed now; keep them with --dir or --report-dir)"
        );
    }
    println!(
        "{}",
        if ok {
            "demo: all steps succeeded"
        } else {
            "demo: FAILED"
        }
    );
    Ok(ok)
}

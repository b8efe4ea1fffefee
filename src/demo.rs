//! `casebridge demo`: a throwaway federation on loopback playing the
//! exchange scenarios, shown step by step. Every step goes through the real
//! path: agency → node (mutual TLS) → broker → node → agency, with sealing,
//! signatures, durable stores and signed receipts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::{categories_text, kind_name, labels_text, state_name, status_lines};
use crate::client::AgencyClient;
use crate::directory::Directory;
use crate::envelope;
use crate::ids::Country;
use crate::local::LocalFederation;
use crate::proto::v1;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

fn record(json: &str) -> anyhow::Result<v1::CaseRecord> {
    serde_json::from_str(json).context("embedded example record")
}

const MISSING_PERSON_TRACE: &str = include_str!("../examples/records/missing_person_trace.json");
const TRACE_RESULT: &str = include_str!("../examples/records/trace_result.json");
const MLA_REQUEST: &str = include_str!("../examples/records/mla_request.json");
const MLA_RESPONSE: &str = include_str!("../examples/records/mla_response.json");
const WANTED_ALERT: &str = include_str!("../examples/records/wanted_alert.json");

struct Outcome {
    step: String,
    ok: bool,
    detail: String,
}

struct Demo<'a> {
    fed: &'a LocalFederation,
    directory: Directory,
    outcomes: Vec<Outcome>,
}

#[allow(clippy::too_many_arguments)]
fn labels(
    purpose: v1::Purpose,
    basis: v1::LegalBasis,
    basis_ref: &str,
    handling: v1::HandlingCode,
    restriction: &str,
    evaluation: Option<(v1::SourceReliability, v1::InformationAccuracy)>,
    classification: v1::Classification,
    priority: v1::Priority,
    case_ref: &str,
) -> v1::Labels {
    v1::Labels {
        purpose: purpose as i32,
        legal_basis: basis as i32,
        legal_basis_reference: basis_ref.into(),
        handling: handling as i32,
        handling_restriction: restriction.into(),
        evaluation: evaluation.map(|(s, a)| v1::Evaluation {
            source: s as i32,
            accuracy: a as i32,
        }),
        classification: classification as i32,
        priority: priority as i32,
        case_reference: case_ref.into(),
        expires_at_ms: 0,
        in_reply_to: String::new(),
    }
}

impl Demo<'_> {
    fn client(&self, agency: &str) -> anyhow::Result<AgencyClient> {
        self.fed.client(agency)
    }

    /// Sends, waits for every recipient node's signed receipt and checks it
    /// against the directory, then checks each recipient's inbox.
    async fn exchange(
        &mut self,
        step: &str,
        from: &str,
        to: &[&str],
        record: v1::CaseRecord,
        labels: v1::Labels,
    ) -> anyhow::Result<String> {
        println!("\n── {step}");
        let kind = crate::categories::record_kind(&record)
            .map(|k| k as i32)
            .unwrap_or_default();
        println!("   {from} → {}   {}", to.join(", "), kind_name(kind));
        println!("   labels:     {}", labels_text(&labels));
        if !labels.in_reply_to.is_empty() {
            println!("   in reply to {}", labels.in_reply_to);
        }
        let mut sender = self.client(from)?;
        let resp = sender
            .api
            .send(v1::SendRequest {
                recipients: to.iter().map(ToString::to_string).collect(),
                record: Some(record),
                labels: Some(labels),
            })
            .await
            .map_err(|s| anyhow::anyhow!("send from {from}: {}", crate::cli::status_line(&s)))?
            .into_inner();
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

        let status = self.await_receipts(&mut sender, &resp.envelope_id).await?;
        for (rs, line) in status.recipient_status.iter().zip(status_lines(&status)) {
            println!("   receipt:    {line}");
            let signed = rs.signed_receipt.as_ref().context("receipt missing")?;
            let body = envelope::verify_receipt(signed, &self.directory)
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
                "   inbox of {r}: {} from {}, {} categories, opened and checked by node {}",
                kind_name(entry.kind),
                entry.sender_agency,
                entry.categories.len(),
                &r[..2]
            );
        }
        self.outcomes.push(Outcome {
            step: step.to_string(),
            ok: true,
            detail: format!(
                "{from} → {}: delivered, {} signed receipt(s)",
                to.join(", "),
                status.recipient_status.len()
            ),
        });
        Ok(resp.envelope_id)
    }

    async fn await_receipts(
        &self,
        c: &mut AgencyClient,
        id: &str,
    ) -> anyhow::Result<v1::SendStatus> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = c
                .api
                .status(v1::StatusRequest {
                    envelope_id: id.to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("status: {}", crate::cli::status_line(&s)))?
                .into_inner();
            if s.recipient_status
                .iter()
                .all(|r| r.state != v1::DeliveryState::Pending as i32)
            {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no receipts for {id} after {} s", WAIT.as_secs());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn await_inbox(&self, c: &mut AgencyClient, id: &str) -> anyhow::Result<v1::InboxRecord> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match c
                .api
                .fetch(v1::FetchRequest {
                    envelope_id: id.to_string(),
                })
                .await
            {
                Ok(r) => return Ok(r.into_inner()),
                Err(s)
                    if s.code() == tonic::Code::NotFound
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL).await;
                }
                Err(s) => bail!(
                    "{} did not get {id}: {}",
                    c.agency,
                    crate::cli::status_line(&s)
                ),
            }
        }
    }

    async fn scenarios(&mut self) -> anyhow::Result<()> {
        use v1::{
            Classification as C, HandlingCode as H, InformationAccuracy as I, LegalBasis as L,
            Priority as P, Purpose as U, SourceReliability as S,
        };
        println!("\n═══ Scenario 1: missing-person tracing request and its answer");
        let trace = self
            .exchange(
                "1a tracing request",
                "BA/missing-persons",
                &["HR/missing-persons"],
                record(MISSING_PERSON_TRACE)?,
                labels(
                    U::MissingPersons,
                    L::HumanitarianAgreement,
                    "BA-HR agreement on tracing missing persons",
                    H::H3,
                    "Humanitarian use only: tracing and identification, not for criminal proceedings.",
                    None,
                    C::Restricted,
                    P::Routine,
                    "MP-BA-2025-0417",
                ),
            )
            .await?;
        let mut l = labels(
            U::MissingPersons,
            L::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
            H::H3,
            "Humanitarian use only: tracing and identification, not for criminal proceedings.",
            None,
            C::Restricted,
            P::Routine,
            "MP-BA-2025-0417",
        );
        l.in_reply_to = trace;
        self.exchange(
            "1b trace result",
            "HR/missing-persons",
            &["BA/missing-persons"],
            record(TRACE_RESULT)?,
            l,
        )
        .await?;

        println!("\n═══ Scenario 2: mutual legal assistance request and response");
        let mla = self
            .exchange(
                "2a MLA request",
                "RS/prosecutor",
                &["ME/prosecutor"],
                record(MLA_REQUEST)?,
                labels(
                    U::Prosecution,
                    L::EuropeanMlaConvention,
                    "European Convention on Mutual Assistance in Criminal Matters",
                    H::H1,
                    "",
                    None,
                    C::Confidential,
                    P::Urgent,
                    "KTO-RS-2025-112",
                ),
            )
            .await?;
        let mut l = labels(
            U::Prosecution,
            L::EuropeanMlaConvention,
            "European Convention on Mutual Assistance in Criminal Matters",
            H::H1,
            "",
            None,
            C::Confidential,
            P::Urgent,
            "KTO-RS-2025-112",
        );
        l.in_reply_to = mla;
        self.exchange(
            "2b MLA response with evidence",
            "ME/prosecutor",
            &["RS/prosecutor"],
            record(MLA_RESPONSE)?,
            l,
        )
        .await?;

        println!("\n═══ Scenario 3: immediate wanted-vehicle alert to three countries");
        self.exchange(
            "3 wanted-vehicle alert",
            "SI/police",
            &["HR/police", "BA/police", "RS/police"],
            record(WANTED_ALERT)?,
            labels(
                U::ImmediateThreat,
                L::RegionalPoliceConvention,
                "Police Cooperation Convention for Southeast Europe",
                H::H0,
                "",
                Some((S::B, I::InformationAccuracy2)),
                C::Restricted,
                P::Immediate,
                "SI-ALERT-2025-0091",
            ),
        )
        .await?;
        Ok(())
    }
}

/// Runs the demo; returns whether every step succeeded.
pub async fn run(keep: Option<PathBuf>) -> anyhow::Result<bool> {
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().join("federation"));
    let countries: Vec<Country> = ["BA", "HR", "ME", "RS", "SI"]
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
    let key = crate::directory::load_public_key(&fed.broker_config.directory_key)?;
    let directory = crate::directory::load(
        &fed.broker_config.directory,
        &key,
        &fed.broker_config.federation,
    )?;
    let mut demo = Demo {
        fed: &fed,
        directory,
        outcomes: Vec::new(),
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
            "   {} {:<32} {}",
            if o.ok { "ok " } else { "ERR" },
            o.step,
            o.detail
        );
    }
    let ok = result.is_ok() && outcomes.len() == 5;
    println!(
        "\n{} of 5 exchanges delivered end to end with signed receipts; the broker saw only signed headers.",
        outcomes.iter().filter(|o| o.ok).count()
    );
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

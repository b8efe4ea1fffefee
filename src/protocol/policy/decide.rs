//! Deciding one transfer: the facts Cedar sees, the three layers per
//! recipient, and the decision with its explanation.
//!
//! Everything here is pure. A transfer's labels are mapped to the schema's
//! vocabulary once; an unknown enum value (a newer or forged label) refuses
//! the transfer before Cedar runs, since no policy could have been written
//! for it. Cedar skips a policy whose evaluation fails; casebridge instead
//! refuses the layer, so a forbid that errors can never let data through.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicyId, Request, RestrictedExpression,
};

use super::bundle::{Compiled, Effect, PolicyRef};
use super::schema::Enum;
use super::{Policies, PolicyError};
use crate::protocol::categories::{self, CategorySet};
use crate::protocol::directory::Directory;
use crate::protocol::envelope::VerifiedHeader;
use crate::protocol::ids::AgencyId;
use crate::protocol::proto::v1;
use crate::protocol::time::DAY_MS;

/// The id of the built-in rule that refuses an EU member's personal data to
/// a non-member without a third-country transfer ground.
pub const NEEDS_GROUND: &str = "eu-to-third-country-needs-ground";

/// Why [`NEEDS_GROUND`] refuses.
const NEEDS_GROUND_REASON: &str = "an EU member's agency passes personal data to a non-member only on a third-country transfer ground (adequacy decision, appropriate safeguards, derogation for a specific situation)";

/// The legal bases that are third-country transfer grounds under EU law.
const THIRD_COUNTRY_GROUNDS: [v1::LegalBasis; 3] = [
    v1::LegalBasis::AdequacyDecision,
    v1::LegalBasis::AppropriateSafeguards,
    v1::LegalBasis::SpecificSituationDerogation,
];

/// What policy knows about an agency: who it is, what kind, and whether its
/// country is an EU member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgencyFacts {
    pub id: AgencyId,
    pub kind: v1::AgencyKind,
    pub eu_member: bool,
}

impl AgencyFacts {
    /// The facts the directory states about `id`: its kind from the agency
    /// entry, EU membership from its country's node. `None` if either is
    /// missing. Revocation is not looked at; the caller has checked it.
    pub fn from_directory(directory: &Directory, id: &AgencyId) -> Option<AgencyFacts> {
        let agency = directory.agency(id)?;
        let node = directory.node(id.country())?;
        Some(AgencyFacts {
            id: id.clone(),
            kind: agency.kind,
            eu_member: node.eu_member,
        })
    }

    /// The facts of every agency the directory lists and has not revoked.
    pub fn all_from_directory(directory: &Directory) -> Vec<AgencyFacts> {
        directory
            .agencies()
            .filter(|a| !a.revoked)
            .filter_map(|a| AgencyFacts::from_directory(directory, &a.id))
            .collect()
    }
}

/// Facts about an onward transfer that only the broker's records establish:
/// the record being passed on was originated by someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onward {
    pub originator: AgencyId,
    pub original_handling: v1::HandlingCode,
    /// The originator has permitted passing the record on to every
    /// recipient of this transfer.
    pub permission_granted: bool,
}

/// One transfer to decide on: a sender, its recipients and the header's
/// facts.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub sender: AgencyFacts,
    pub recipients: Vec<AgencyFacts>,
    pub kind: v1::RecordKind,
    /// The categories the header declares (derived by the sending node).
    pub categories: CategorySet,
    pub labels: v1::Labels,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub onward: Option<Onward>,
}

impl Transfer {
    /// The transfer a verified header describes, with agency facts from the
    /// directory. Fails if the header names an agency the directory does not
    /// list.
    pub fn from_header(
        header: &VerifiedHeader,
        directory: &Directory,
        onward: Option<Onward>,
    ) -> Result<Transfer, PolicyError> {
        let facts = |id: &AgencyId| {
            AgencyFacts::from_directory(directory, id)
                .ok_or_else(|| PolicyError::UnknownAgency(id.clone()))
        };
        Ok(Transfer {
            sender: facts(&header.sender_agency)?,
            recipients: header
                .recipients
                .iter()
                .map(facts)
                .collect::<Result<_, _>>()?,
            kind: header.kind,
            categories: header.categories.clone(),
            labels: header.labels.clone(),
            created_at_ms: header.created_at_ms,
            expires_at_ms: header.expires_at_ms,
            onward,
        })
    }

    /// Days between creation and expiry, rounded up: 0 if the record has
    /// already expired, `i64::MAX` if it has no expiry (so any retention
    /// limit refuses it).
    pub fn retention_days(&self) -> i64 {
        if self.expires_at_ms <= 0 {
            return i64::MAX;
        }
        let span = i128::from(self.expires_at_ms) - i128::from(self.created_at_ms);
        if span <= 0 {
            return 0;
        }
        let day = i128::from(DAY_MS);
        i64::try_from((span + day - 1) / day).unwrap_or(i64::MAX)
    }
}

/// One of the three layers a transfer passes per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The federation's framework bundle.
    Framework,
    /// The sender's own bundle: what it sends.
    Outbound(AgencyId),
    /// The recipient's own bundle: what it accepts.
    Inbound(AgencyId),
    /// A rule of casebridge itself, which no bundle can lift: an EU
    /// member's personal data leaves for a non-member only on a
    /// third-country transfer ground ([`NEEDS_GROUND`]).
    BuiltIn,
}

impl Layer {
    /// `framework`, `outbound` or `inbound`.
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Framework => "framework",
            Layer::Outbound(_) => "outbound",
            Layer::Inbound(_) => "inbound",
            Layer::BuiltIn => "built-in",
        }
    }
}

/// `framework`, `HR/police outbound`, `XK/police inbound`.
impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Framework => f.write_str("framework"),
            Layer::Outbound(a) => write!(f, "{a} outbound"),
            Layer::Inbound(a) => write!(f, "{a} inbound"),
            Layer::BuiltIn => f.write_str("built-in"),
        }
    }
}

/// A policy whose evaluation failed; the layer refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub policy: PolicyRef,
    pub message: String,
}

/// How one layer decided for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOutcome {
    pub layer: Layer,
    pub allowed: bool,
    /// The permits that applied (when allowed) or the forbids that applied
    /// (when refused by a forbid). Empty for a default deny.
    pub determining: Vec<PolicyRef>,
    pub errors: Vec<EvalError>,
    /// The layer's agency has no bundle in force (default deny).
    pub no_bundle: bool,
}

impl LayerOutcome {
    /// The text after "refused for R " naming what refused.
    fn refusal_text(&self) -> String {
        let layer = &self.layer;
        if self.no_bundle {
            let (agency, verb) = match layer {
                Layer::Outbound(a) => (a.to_string(), "send"),
                Layer::Inbound(a) => (a.to_string(), "receive"),
                Layer::Framework | Layer::BuiltIn => ("the federation".to_string(), "exchange"),
            };
            return format!(
                "by the {layer} layer: {agency} has no policy bundle in force, so it can {verb} nothing (default deny)"
            );
        }
        if let Some(e) = self.errors.first() {
            return format!(
                "by {layer} policy {}: it could not be evaluated ({}), and a policy that cannot be evaluated refuses",
                e.policy, e.message
            );
        }
        if *layer == Layer::BuiltIn {
            return self
                .determining
                .iter()
                .map(|p| format!("by built-in rule \"{}\"{}", p.id, reason_suffix(p)))
                .collect::<Vec<_>>()
                .join("; ");
        }
        let forbids: Vec<&PolicyRef> = self
            .determining
            .iter()
            .filter(|p| p.effect == Effect::Forbid)
            .collect();
        match forbids.as_slice() {
            [] => format!("by the {layer} layer: no policy permits it (default deny)"),
            [one] => format!("by {layer} policy {one}{}", reason_suffix(one)),
            many => format!(
                "by {layer} policies {}",
                many.iter()
                    .map(|p| format!("{p}{}", reason_suffix(p)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }

    fn permit_text(&self) -> String {
        let permits = self
            .determining
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        format!("{} {permits}", self.layer)
    }
}

fn reason_suffix(p: &PolicyRef) -> String {
    p.reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

/// The decision for one recipient: all three layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientDecision {
    pub recipient: AgencyId,
    pub allowed: bool,
    /// Framework, outbound, inbound, in that order; then the built-in
    /// layer, present only when it refuses a transfer no bundle's policy of
    /// the same id refused.
    pub layers: Vec<LayerOutcome>,
}

impl RecipientDecision {
    /// The first layer that refused, if any.
    pub fn refused_by(&self) -> Option<&LayerOutcome> {
        self.layers.iter().find(|l| !l.allowed)
    }

    /// One line: which layer and policy refused, or which permitted.
    pub fn explanation(&self) -> String {
        if self.allowed {
            format!(
                "permitted for {}: {}",
                self.recipient,
                self.layers
                    .iter()
                    .map(LayerOutcome::permit_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "refused for {} {}",
                self.recipient,
                self.layers
                    .iter()
                    .filter(|l| !l.allowed)
                    .map(LayerOutcome::refusal_text)
                    .collect::<Vec<_>>()
                    .join("; and ")
            )
        }
    }
}

/// A policy decision on one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every recipient passed every layer.
    pub allowed: bool,
    /// [`Policies::hash`] of the set that decided.
    pub bundle_hash: String,
    /// One per recipient, in the transfer's order.
    pub recipients: Vec<RecipientDecision>,
    /// Set when the transfer could not be put to the policies at all (no
    /// recipients, or a label value the schema does not know); the decision
    /// is then a refusal.
    pub input_error: Option<String>,
    /// The human-readable account of the decision, rendered once when it is
    /// made, as audit events record it; see [`Decision::explanation`].
    pub explanation: String,
}

impl Decision {
    /// Builds a decision and renders its explanation.
    pub fn new(
        allowed: bool,
        bundle_hash: String,
        recipients: Vec<RecipientDecision>,
        input_error: Option<String>,
    ) -> Decision {
        let mut d = Decision {
            allowed,
            bundle_hash,
            recipients,
            input_error,
            explanation: String::new(),
        };
        d.explanation = d.render();
        d
    }

    /// The first refused recipient and the first layer that refused it.
    pub fn refusal(&self) -> Option<(&AgencyId, &LayerOutcome)> {
        self.recipients
            .iter()
            .find_map(|r| r.refused_by().map(|l| (&r.recipient, l)))
    }

    /// Human-readable: one line per recipient, refusals first, each naming
    /// the layer and policy (file and line) that decided, with the policy's
    /// `@reason`.
    pub fn explanation(&self) -> &str {
        &self.explanation
    }

    fn render(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        if let Some(e) = &self.input_error {
            lines.push(format!("refused: {e}"));
        }
        lines.extend(
            self.recipients
                .iter()
                .filter(|r| !r.allowed)
                .chain(self.recipients.iter().filter(|r| r.allowed))
                .map(RecipientDecision::explanation),
        );
        if let Some(first) = lines.first_mut() {
            if self.bundle_hash.starts_with(super::EXAMPLES_HASH_PREFIX) {
                first.push_str(" [unsigned example policies]");
            }
        }
        lines.join("\n")
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

// ---------------------------------------------------------------------------

/// Most recipient decisions a policy set remembers; when full it forgets
/// them all and starts again.
const CACHE_ENTRIES: usize = 4096;

/// Every input one recipient's three layers read: the two agencies'
/// entities and the transfer's context, as Cedar is given them. The Cedar
/// request is built from this value alone, so a remembered decision can
/// only ever answer the very same inputs.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RecipientInputs {
    sender: AgencyFacts,
    recipient: AgencyFacts,
    context: Arc<ContextFacts>,
}

/// The `transfer` action's context, with every label already mapped to the
/// schema's vocabulary.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ContextFacts {
    kind: String,
    categories: CategorySet,
    purpose: String,
    legal_basis: String,
    legal_basis_reference: String,
    transfer_ground: String,
    third_country_ground: bool,
    handling: String,
    handling_restriction: String,
    source_reliability: String,
    information_accuracy: String,
    classification: String,
    priority: String,
    retention_days: i64,
    in_reply: bool,
    onward: bool,
    originator: String,
    original_handling: String,
    permission_granted: bool,
}

/// Recipient decisions a policy set has made, by their full inputs. It
/// belongs to one compiled set ([`Policies`]), so a new set starts empty.
#[derive(Default)]
pub(crate) struct DecisionCache {
    decided: Mutex<HashMap<RecipientInputs, RecipientDecision>>,
}

impl DecisionCache {
    fn get(&self, inputs: &RecipientInputs) -> Option<RecipientDecision> {
        self.lock().get(inputs).cloned()
    }

    fn put(&self, inputs: RecipientInputs, decision: RecipientDecision) {
        let mut decided = self.lock();
        if decided.len() >= CACHE_ENTRIES {
            decided.clear();
        }
        decided.insert(inputs, decision);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecipientInputs, RecipientDecision>> {
        self.decided.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

pub(crate) fn decide(policies: &Policies, t: &Transfer) -> Decision {
    let refuse =
        |why: String| Decision::new(false, policies.hash().to_string(), Vec::new(), Some(why));
    if t.recipients.is_empty() {
        return refuse("the transfer has no recipients".into());
    }
    let context = match ContextFacts::of(t) {
        Ok(c) => Arc::new(c),
        Err(e) => return refuse(e),
    };
    let cache = &policies.inner.decisions;
    let mut recipients = Vec::with_capacity(t.recipients.len());
    for r in &t.recipients {
        let inputs = RecipientInputs {
            sender: t.sender.clone(),
            recipient: r.clone(),
            context: context.clone(),
        };
        if let Some(known) = cache.get(&inputs) {
            recipients.push(known);
            continue;
        }
        match decide_recipient(policies, &inputs) {
            Ok(d) => {
                cache.put(inputs, d.clone());
                recipients.push(d);
            }
            Err(e) => return refuse(e),
        }
    }
    Decision::new(
        recipients.iter().all(|r| r.allowed),
        policies.hash().to_string(),
        recipients,
        None,
    )
}

/// The three layers for one recipient, evaluated by Cedar.
fn decide_recipient(
    policies: &Policies,
    inputs: &RecipientInputs,
) -> Result<RecipientDecision, String> {
    let inner = &policies.inner;
    let (request, entities) = prepare(policies, inputs)?;
    let authorizer = Authorizer::new();
    let run = |layer: Layer, bundle: Option<&Compiled>| match bundle {
        None => LayerOutcome {
            layer,
            allowed: false,
            determining: Vec::new(),
            errors: Vec::new(),
            no_bundle: true,
        },
        Some(b) => evaluate(&authorizer, layer, b, &request, &entities),
    };
    let (sender, recipient) = (&inputs.sender.id, &inputs.recipient.id);
    let mut layers = vec![
        run(Layer::Framework, Some(&inner.framework)),
        run(Layer::Outbound(sender.clone()), inner.agencies.get(sender)),
        run(
            Layer::Inbound(recipient.clone()),
            inner.agencies.get(recipient),
        ),
    ];
    // Beneath the bundles: the built-in rule, named only when no bundle's
    // policy of the same id has already refused (a framework may state it).
    let stated = layers
        .iter()
        .any(|l| !l.allowed && l.determining.iter().any(|p| p.id == NEEDS_GROUND));
    if needs_ground(inputs) && !stated {
        layers.push(LayerOutcome {
            layer: Layer::BuiltIn,
            allowed: false,
            determining: vec![PolicyRef {
                owner: super::Owner::Framework,
                file: "built into casebridge".to_string(),
                id: NEEDS_GROUND.to_string(),
                line: 0,
                effect: Effect::Forbid,
                reason: Some(NEEDS_GROUND_REASON.to_string()),
            }],
            errors: Vec::new(),
            no_bundle: false,
        });
    }
    Ok(RecipientDecision {
        recipient: recipient.clone(),
        allowed: layers.iter().all(|l| l.allowed),
        layers,
    })
}

/// Whether the built-in rule refuses: an agency of an EU member (by its
/// country's regime in the directory) passes personal data to an agency of
/// a non-member without a third-country transfer ground.
fn needs_ground(inputs: &RecipientInputs) -> bool {
    inputs.sender.eu_member
        && !inputs.recipient.eu_member
        && !inputs.context.categories.is_empty()
        && !inputs.context.third_country_ground
}

fn evaluate(
    authorizer: &Authorizer,
    layer: Layer,
    bundle: &Compiled,
    request: &Request,
    entities: &Entities,
) -> LayerOutcome {
    let response = authorizer.is_authorized(request, &bundle.set, entities);
    let reference = |pid: &PolicyId| -> PolicyRef {
        // Every policy in a compiled set has its meta; keep going with what
        // Cedar knows if that were ever not so.
        bundle.policy_ref(pid).unwrap_or_else(|| PolicyRef {
            owner: bundle.info.owner.clone(),
            file: String::new(),
            id: pid.to_string(),
            line: 0,
            effect: Effect::Forbid,
            reason: None,
        })
    };
    let mut determining: Vec<PolicyRef> = response.diagnostics().reason().map(reference).collect();
    determining.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let errors: Vec<EvalError> = response
        .diagnostics()
        .errors()
        .map(|e| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
            let policy = reference(pe.policy_id());
            let message = super::bundle::rename_policy(&e.to_string(), pe.policy_id(), &policy.id);
            EvalError { policy, message }
        })
        .collect();
    let allowed = response.decision() == cedar_policy::Decision::Allow && errors.is_empty();
    if !allowed {
        determining.retain(|p| p.effect == Effect::Forbid);
    }
    LayerOutcome {
        layer,
        allowed,
        determining,
        errors,
        no_bundle: false,
    }
}

/// The Cedar request and entities for one recipient.
fn prepare(policies: &Policies, inputs: &RecipientInputs) -> Result<(Request, Entities), String> {
    let vocab = &policies.inner.vocabulary;
    let schema = &vocab.schema;
    let context =
        Context::from_pairs(inputs.context.pairs()?).map_err(|e| format!("context: {e}"))?;
    let (sender, recipient) = (&inputs.sender, &inputs.recipient);
    let principal = vocab.agency(&sender.id.to_string());
    let resource = vocab.agency(&recipient.id.to_string());
    let request = Request::new(
        principal,
        vocab.action.clone(),
        resource,
        context,
        Some(schema),
    )
    .map_err(|e| format!("request does not fit the schema: {e}"))?;
    let mut list = vec![agency_entity(policies, sender)?];
    if recipient.id != sender.id {
        list.push(agency_entity(policies, recipient)?);
    }
    let entities =
        Entities::from_entities(list, Some(schema)).map_err(|e| format!("entities: {e}"))?;
    Ok((request, entities))
}

fn agency_entity(policies: &Policies, a: &AgencyFacts) -> Result<Entity, String> {
    let vocab = &policies.inner.vocabulary;
    let kind = Enum::AgencyKind.value_of_wire(a.kind as i32)?;
    let attrs = HashMap::from([
        (
            "country".to_string(),
            RestrictedExpression::new_string(a.id.country().to_string()),
        ),
        ("kind".to_string(), entity(Enum::AgencyKind, &kind)?),
        (
            "eu_member".to_string(),
            RestrictedExpression::new_bool(a.eu_member),
        ),
    ]);
    Entity::new(vocab.agency(&a.id.to_string()), attrs, HashSet::new())
        .map_err(|e| format!("agency {}: {e}", a.id))
}

fn entity(e: Enum, value: &str) -> Result<RestrictedExpression, String> {
    let uid: EntityUid = e.uid(value).map_err(|e| e.to_string())?;
    Ok(RestrictedExpression::new_entity_uid(uid))
}

impl ContextFacts {
    /// The context of `t`: fails on a label value the schema does not know.
    fn of(t: &Transfer) -> Result<ContextFacts, String> {
        let l = &t.labels;
        let reference = l.legal_basis_reference.trim();
        let transfer_ground = Enum::TransferGround.value_of_wire(l.transfer_ground)?;
        let third_country_ground = l.transfer_ground != v1::TransferGround::None as i32
            || (v1::LegalBasis::try_from(l.legal_basis)
                .is_ok_and(|b| THIRD_COUNTRY_GROUNDS.contains(&b))
                && !reference.is_empty());
        let (source, accuracy) = l
            .evaluation
            .as_ref()
            .map_or((0, 0), |e| (e.source, e.accuracy));
        let (onward, originator, original_handling, permission_granted) = match &t.onward {
            Some(o) => (
                true,
                o.originator.to_string(),
                o.original_handling as i32,
                o.permission_granted,
            ),
            None => (false, String::new(), 0, false),
        };
        Ok(ContextFacts {
            kind: Enum::RecordKind.value_of_wire(t.kind as i32)?,
            categories: t.categories.clone(),
            purpose: Enum::Purpose.value_of_wire(l.purpose)?,
            legal_basis: Enum::LegalBasis.value_of_wire(l.legal_basis)?,
            legal_basis_reference: reference.to_string(),
            transfer_ground,
            third_country_ground,
            handling: Enum::Handling.value_of_wire(l.handling)?,
            handling_restriction: l.handling_restriction.clone(),
            source_reliability: Enum::SourceReliability.value_of_wire(source)?,
            information_accuracy: Enum::InformationAccuracy.value_of_wire(accuracy)?,
            classification: Enum::Classification.value_of_wire(l.classification)?,
            priority: Enum::Priority.value_of_wire(l.priority)?,
            retention_days: t.retention_days(),
            in_reply: !l.in_reply_to.is_empty(),
            onward,
            originator,
            original_handling: Enum::Handling.value_of_wire(original_handling)?,
            permission_granted,
        })
    }

    /// The context as the schema describes it.
    fn pairs(&self) -> Result<Vec<(String, RestrictedExpression)>, String> {
        let categories = self
            .categories
            .iter()
            .map(|c| entity(Enum::Category, categories::short_name(c)))
            .collect::<Result<Vec<_>, _>>()?;
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let b = RestrictedExpression::new_bool;
        Ok(vec![
            ("kind".into(), entity(Enum::RecordKind, &self.kind)?),
            (
                "categories".into(),
                RestrictedExpression::new_set(categories),
            ),
            ("personal_data".into(), b(!self.categories.is_empty())),
            (
                "special_categories".into(),
                b(self.categories.has_special()),
            ),
            ("purpose".into(), entity(Enum::Purpose, &self.purpose)?),
            (
                "legal_basis".into(),
                entity(Enum::LegalBasis, &self.legal_basis)?,
            ),
            (
                "legal_basis_reference".into(),
                s(&self.legal_basis_reference),
            ),
            (
                "transfer_ground".into(),
                entity(Enum::TransferGround, &self.transfer_ground)?,
            ),
            ("third_country_ground".into(), b(self.third_country_ground)),
            ("handling".into(), entity(Enum::Handling, &self.handling)?),
            ("handling_restriction".into(), s(&self.handling_restriction)),
            (
                "source_reliability".into(),
                entity(Enum::SourceReliability, &self.source_reliability)?,
            ),
            (
                "information_accuracy".into(),
                entity(Enum::InformationAccuracy, &self.information_accuracy)?,
            ),
            (
                "classification".into(),
                entity(Enum::Classification, &self.classification)?,
            ),
            ("priority".into(), entity(Enum::Priority, &self.priority)?),
            (
                "retention_days".into(),
                RestrictedExpression::new_long(self.retention_days),
            ),
            ("in_reply".into(), b(self.in_reply)),
            ("onward".into(), b(self.onward)),
            ("originator".into(), s(&self.originator)),
            (
                "original_handling".into(),
                entity(Enum::Handling, &self.original_handling)?,
            ),
            ("permission_granted".into(), b(self.permission_granted)),
        ])
    }
}

//! Idempotency keys on the Agency API: the same call made twice under one
//! key creates one envelope.
//!
//! Send, Forward, RequestPermission and GrantPermission take an optional key
//! the agency's system chooses. It is checked where it arrives (1 to
//! [`bounds::MAX_IDEMPOTENCY_KEY`] bytes of printable ASCII) and belongs to
//! the calling agency, as its certificate names it: the store keys it by
//! agency, so another agency's use of the same key finds nothing. A call
//! whose key was used before creates nothing: with the same content it is
//! answered with the envelope the first call created, in its state now;
//! with other content it is refused. The key is recorded in the write that
//! puts the envelope in the outbox, and two calls racing with one key are
//! settled there: the second finds the first's key and its own sealed
//! envelope is dropped before anything of it is stored.

use tonic::Status;

use super::NodeState;
use crate::daemon::status::node_storage;
use crate::protocol::bounds;
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};

/// What a call's key says before anything is checked or sealed.
pub(super) enum Arrival {
    /// Nothing was made under this key (or the call has none): go on, and
    /// record the key, if any, with the envelope.
    New(Option<KeyedCall>),
    /// An earlier call with the same content made this envelope.
    Repeat(v1::SendResponse),
}

/// Checks the key of a call by `agency` and looks for an earlier call under
/// it. `digest` gives the digest of the call's content (see [`Content`]).
pub(super) async fn arrive(
    state: &NodeState,
    agency: &AgencyId,
    key: &str,
    digest: impl FnOnce() -> [u8; 32],
) -> Result<Arrival, Status> {
    if key.is_empty() {
        return Ok(Arrival::New(None));
    }
    check_key(key)?;
    let call = KeyedCall {
        agency: agency.clone(),
        key: key.to_string(),
        digest: digest(),
        at_ms: state.now_ms(),
    };
    let earlier = state
        .store
        .keyed_call(agency, key, call.not_before_ms())
        .await
        .map_err(node_storage)?;
    match earlier {
        None => Ok(Arrival::New(Some(call))),
        Some(e) => answer(state, &call, e).await.map(Arrival::Repeat),
    }
}

/// Puts a sealed envelope in the outbox, with the call's key if it has one.
/// If a call under the same key got there first, nothing of this envelope
/// is stored (it never leaves) and the answer is that call's, as for a
/// repeat.
pub(super) async fn enqueue(
    state: &NodeState,
    id: &EnvelopeId,
    env: &v1::Envelope,
    status: &v1::SendStatus,
    call: Option<&KeyedCall>,
) -> Result<Option<v1::SendResponse>, Status> {
    let Some(call) = call else {
        state
            .store
            .enqueue(id, env, status)
            .await
            .map_err(node_storage)?;
        return Ok(None);
    };
    let earlier = state
        .store
        .enqueue_keyed(id, env, status, call)
        .await
        .map_err(node_storage)?;
    match earlier {
        None => Ok(None),
        Some(earlier) => {
            state.forget_waiter(id);
            answer(state, call, earlier).await.map(Some)
        }
    }
}

/// Refuses a key that is too long or holds anything but printable ASCII.
fn check_key(key: &str) -> Result<(), Status> {
    bounds::check_len(
        "idempotency_key",
        key.as_bytes(),
        bounds::MAX_IDEMPOTENCY_KEY,
    )
    .map_err(crate::daemon::status::exceeded)?;
    if let Some(b) = key.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(Status::invalid_argument(format!(
            "idempotency_key may hold only printable ASCII characters (0x21 to 0x7E); it holds byte 0x{b:02X}"
        )));
    }
    Ok(())
}

/// The answer to `call`, whose key an earlier call used: that call's
/// envelope in its state now if the content is the same, else a refusal.
async fn answer(
    state: &NodeState,
    call: &KeyedCall,
    earlier: EarlierCall,
) -> Result<v1::SendResponse, Status> {
    if earlier.digest != call.digest {
        return Err(Status::failed_precondition(format!(
            "idempotency key {} was used by {} for different content (envelope {}); a new record needs a new key",
            bounds::quote(&call.key),
            call.agency,
            earlier.id
        )));
    }
    let sent = state
        .store
        .sent(&earlier.id)
        .await
        .map_err(node_storage)?
        .ok_or_else(|| {
            node_storage(StorageError::Corrupt {
                tree: "idempotency",
                detail: format!("key names envelope {} that has no sent record", earlier.id),
            })
        })?;
    Ok(v1::SendResponse {
        envelope_id: sent.envelope_id,
        state: sent.state,
        detail: sent.detail,
        log_index: sent.log_index,
        categories: sent.categories,
        repeat: true,
    })
}

/// The digest of a call's content: SHA-256 over a domain string, the
/// method, and each field of the request that defines the record, each
/// length-prefixed, the key itself left out. A message field enters as its
/// protobuf encoding, which is stable for the same client message: prost
/// writes the fields it knows in field-number order and leaves out defaults,
/// drops unknown fields when it decodes, and these messages have no maps.
pub(super) struct Content(Vec<u8>);

impl Content {
    fn new(method: &str) -> Content {
        let mut c = Content(b"casebridge/v1 idempotent-call\0".to_vec());
        c.bytes(method.as_bytes());
        c
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Content {
        self.0.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    fn list(&mut self, items: &[String]) -> &mut Content {
        self.0
            .extend_from_slice(&(items.len() as u64).to_be_bytes());
        for i in items {
            self.bytes(i.as_bytes());
        }
        self
    }

    /// A message field: absent and present are told apart.
    fn message<M: prost::Message>(&mut self, m: Option<&M>) -> &mut Content {
        match m {
            None => self.0.push(0),
            Some(m) => {
                self.0.push(1);
                self.bytes(&m.encode_to_vec());
            }
        }
        self
    }

    fn digest(&self) -> [u8; 32] {
        crate::protocol::envelope::sha256(&self.0)
    }

    pub(super) fn send(r: &v1::SendRequest) -> [u8; 32] {
        Content::new("Send")
            .list(&r.recipients)
            .message(r.record.as_ref())
            .message(r.labels.as_ref())
            .digest()
    }

    pub(super) fn forward(r: &v1::ForwardRequest) -> [u8; 32] {
        Content::new("Forward")
            .bytes(r.envelope_id.as_bytes())
            .list(&r.recipients)
            .message(r.labels.as_ref())
            .digest()
    }

    pub(super) fn request_permission(r: &v1::RequestPermissionRequest) -> [u8; 32] {
        Content::new("RequestPermission")
            .bytes(r.envelope_id.as_bytes())
            .list(&r.third_agencies)
            .bytes(r.justification.as_bytes())
            .digest()
    }

    pub(super) fn grant_permission(r: &v1::GrantPermissionRequest) -> [u8; 32] {
        Content::new("GrantPermission")
            .bytes(r.request_envelope_id.as_bytes())
            .bytes(r.conditions.as_bytes())
            .digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send() -> v1::SendRequest {
        v1::SendRequest {
            recipients: vec!["RS/police".into()],
            record: Some(v1::CaseRecord::default()),
            labels: Some(v1::Labels {
                case_reference: "C-1".into(),
                ..Default::default()
            }),
            idempotency_key: "k1".into(),
        }
    }

    #[test]
    fn the_digest_covers_the_content_and_not_the_key() {
        let a = send();
        let mut other_key = send();
        other_key.idempotency_key = "k2".into();
        assert_eq!(Content::send(&a), Content::send(&other_key));
        let mut other_labels = send();
        other_labels.labels.as_mut().unwrap().case_reference = "C-2".into();
        assert_ne!(Content::send(&a), Content::send(&other_labels));
        let mut other_recipients = send();
        other_recipients.recipients.push("BA/police".into());
        assert_ne!(Content::send(&a), Content::send(&other_recipients));
        let mut no_record = send();
        no_record.record = None;
        assert_ne!(Content::send(&a), Content::send(&no_record));
    }

    #[test]
    fn the_same_fields_in_another_method_differ() {
        let f = v1::ForwardRequest {
            envelope_id: "x".into(),
            ..Default::default()
        };
        let g = v1::GrantPermissionRequest {
            request_envelope_id: "x".into(),
            ..Default::default()
        };
        assert_ne!(Content::forward(&f), Content::grant_permission(&g));
        // Length prefixes keep fields from running into each other.
        let r1 = v1::RequestPermissionRequest {
            envelope_id: "ab".into(),
            justification: "c".into(),
            ..Default::default()
        };
        let r2 = v1::RequestPermissionRequest {
            envelope_id: "a".into(),
            justification: "bc".into(),
            ..Default::default()
        };
        assert_ne!(
            Content::request_permission(&r1),
            Content::request_permission(&r2)
        );
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_key("0193b0f2-7c1e-7a4b-9b1e-2f6f2c1d9e01").is_ok());
        assert!(check_key(&"k".repeat(128)).is_ok());
        let long = check_key(&"k".repeat(129)).unwrap_err();
        assert_eq!(long.code(), tonic::Code::InvalidArgument);
        assert!(
            long.message().contains("limit is 128"),
            "{}",
            long.message()
        );
        for bad in ["with space", "tab\there", "nul\0", "é"] {
            let e = check_key(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("printable ASCII"), "{}", e.message());
        }
    }
}

//! The idempotency keys of sends: [`CALL_PREFIX`] ‖ agency ‖ 0 ‖ key → the
//! earlier call, and [`TIME_PREFIX`] ‖ time ‖ agency ‖ 0 ‖ key → nothing,
//! by which old keys are forgotten in order.

use sled::transaction::{ConflictableTransactionError, ConflictableTransactionResult};

use super::{SledNodeStore, corrupt};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::storage::StorageError;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};

/// The first byte of an idempotency key's entry.
const CALL_PREFIX: &[u8] = b"k";
/// The first byte of an idempotency key's entry in time order.
const TIME_PREFIX: &[u8] = b"t";
/// Keys forgotten per transaction.
const FORGET_BATCH: usize = 1000;

/// The entry of `agency`'s key: agency ids hold no NUL byte, so an agency's
/// keys never run into another's.
fn call_key(agency: &AgencyId, key: &str) -> Vec<u8> {
    let mut k = CALL_PREFIX.to_vec();
    k.extend_from_slice(agency.to_string().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The time-ordered entry of a key first used at `at_ms`; `call` is the
/// call key without its prefix. Times before 1970 sort as 1970.
fn time_key(at_ms: i64, call: &[u8]) -> Vec<u8> {
    let mut k = TIME_PREFIX.to_vec();
    k.extend_from_slice(&u64::try_from(at_ms).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(call);
    k
}

/// The time and the call key (without its prefix) of a time-ordered entry.
fn split_time_key(k: &[u8]) -> Result<(i64, &[u8]), StorageError> {
    let rest = k
        .strip_prefix(TIME_PREFIX)
        .filter(|r| r.len() > 8)
        .ok_or_else(|| corrupt("idempotency", "time key too short"))?;
    let (at, call) = rest.split_at(8);
    let at = u64::from_be_bytes(at.try_into().map_err(|e| corrupt("idempotency", e))?);
    let at = i64::try_from(at).map_err(|e| corrupt("idempotency", e))?;
    Ok((at, call))
}

fn encode_call(c: &EarlierCall) -> Vec<u8> {
    let mut v = Vec::with_capacity(56);
    v.extend_from_slice(&c.digest);
    v.extend_from_slice(c.id.as_bytes());
    v.extend_from_slice(&c.at_ms.to_be_bytes());
    v
}

fn decode_call(v: &[u8]) -> Result<EarlierCall, StorageError> {
    if v.len() != 56 {
        return Err(corrupt("idempotency", "entry is not 56 bytes"));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&v[..32]);
    let id = EnvelopeId::from_bytes(&v[32..48]).map_err(|e| corrupt("idempotency", e))?;
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[48..]);
    Ok(EarlierCall {
        digest,
        id,
        at_ms: i64::from_be_bytes(at),
    })
}

/// Records `call` for envelope `id` inside the enqueueing transaction,
/// unless its key was used already and has not expired: then nothing is
/// written and the earlier call is returned. An expired entry not yet
/// forgotten is replaced.
pub(super) fn claim(
    idempotency: &sled::transaction::TransactionalTree,
    call: &KeyedCall,
    id: EnvelopeId,
) -> ConflictableTransactionResult<Option<EarlierCall>, StorageError> {
    let ck = call_key(&call.agency, &call.key);
    let earlier = match idempotency.get(&ck)? {
        Some(v) => Some(decode_call(&v).map_err(ConflictableTransactionError::Abort)?),
        None => None,
    };
    match earlier {
        Some(e) if e.at_ms >= call.not_before_ms() => return Ok(Some(e)),
        Some(e) => {
            idempotency.remove(time_key(e.at_ms, &ck[CALL_PREFIX.len()..]))?;
        }
        None => {}
    }
    idempotency.insert(
        ck.as_slice(),
        encode_call(&EarlierCall {
            digest: call.digest,
            id,
            at_ms: call.at_ms,
        })
        .as_slice(),
    )?;
    idempotency.insert(time_key(call.at_ms, &ck[CALL_PREFIX.len()..]), &[])?;
    Ok(None)
}

impl SledNodeStore {
    /// See [`crate::storage::node::Outbox::keyed_call`].
    pub(super) async fn find_call(
        &self,
        agency: &AgencyId,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<EarlierCall>, StorageError> {
        let k = call_key(agency, key);
        let found = self
            .blocking(move |t| t.idempotency.get(k)?.map(|v| decode_call(&v)).transpose())
            .await?
            .filter(|c| c.at_ms >= not_before_ms);
        if found.is_some() {
            // The write that recorded it may still be on its way to disk.
            self.commit().await?;
        }
        Ok(found)
    }

    /// See [`crate::storage::node::Outbox::forget_keys`].
    pub(super) async fn forget_calls(&self, before_ms: i64) -> Result<usize, StorageError> {
        let mut forgotten = 0;
        loop {
            let n = self
                .blocking(move |t| {
                    let mut old = Vec::new();
                    let end = time_key(before_ms, &[]);
                    for k in t.idempotency.range(TIME_PREFIX.to_vec()..end).keys() {
                        old.push(k?);
                        if old.len() == FORGET_BATCH {
                            break;
                        }
                    }
                    if old.is_empty() {
                        return Ok(0);
                    }
                    let _g = t.lock();
                    t.idempotency
                        .transaction(|tx| {
                            for tk in &old {
                                tx.remove(tk.as_ref())?;
                                let (at, call) = split_time_key(tk)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                let ck = [CALL_PREFIX, call].concat();
                                // A key used again after it expired has a
                                // newer entry: only the one this time
                                // stands for goes.
                                if let Some(v) = tx.get(&ck)? {
                                    let c = decode_call(&v)
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    if c.at_ms == at {
                                        tx.remove(ck)?;
                                    }
                                }
                            }
                            Ok(())
                        })
                        .map_err(|e| t.tx_err(e))?;
                    Ok(old.len())
                })
                .await?;
            if n == 0 {
                break;
            }
            forgotten += n;
            self.commit().await?;
            if n < FORGET_BATCH {
                break;
            }
        }
        Ok(forgotten)
    }
}

//! Sealing and opening: round trips, tampering, wrapped keys and the data-key commitment.

use super::*;

#[test]
fn round_trip_single_recipient() {
    let fx = Fx::new();
    let rec = record("missing_person_trace.json");
    let sealed = fx.seal("HR/police", &["BA/missing-persons"], &rec);
    let derived = categories::derive(&rec);
    assert_eq!(sealed.categories, derived);
    assert!(derived.contains(v1::DataCategory::Genetic));

    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.id, sealed.id);
    assert_eq!(vh.sender_node, cc("HR"));
    assert_eq!(vh.sender_agency, ag("HR/police"));
    assert_eq!(vh.recipients, vec![ag("BA/missing-persons")]);
    assert_eq!(vh.kind, v1::RecordKind::MissingPersonTrace);
    assert_eq!(vh.categories, derived);
    assert_eq!(vh.labels, labels());
    assert_eq!((vh.created_at_ms, vh.expires_at_ms), (CREATED, EXPIRES));
    assert_eq!(vh.header_sha256, sha256(&sealed.envelope.header));
    assert_eq!(vh.ciphertext_sha256, sha256(&sealed.envelope.ciphertext));
    assert_eq!(vh.ciphertext_len, sealed.envelope.ciphertext.len() as u64);
    assert_eq!(
        vh.recipient_nodes().copied().collect::<Vec<_>>(),
        vec![cc("BA")]
    );
    assert_eq!(vh.wrapped_keys[&cc("BA")].node, "BA");

    let opened = fx.open(&sealed.envelope, &vh, "BA").expect("BA opens");
    assert_eq!(opened.record, rec);
    assert_eq!(opened.derived, derived);
    // Neither the sender's node nor a bystander holds a wrapped key.
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "HR").err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "RS").err(),
        Some(EnvelopeError::NotARecipient(cc("RS")))
    );
}

#[test]
fn round_trip_recipients_at_several_nodes() {
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let sealed = fx.seal(
        "HR/police",
        &["RS/police", "BA/police", "BA/missing-persons"],
        &rec,
    );
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(
        vh.recipient_nodes().copied().collect::<Vec<_>>(),
        vec![cc("BA"), cc("RS")]
    );
    assert_eq!(vh.wrapped_keys.len(), 2);
    assert_eq!(
        vh.recipients,
        vec![ag("RS/police"), ag("BA/police"), ag("BA/missing-persons")]
    );
    assert_eq!(
        vh.recipients_at(cc("BA")),
        vec![ag("BA/police"), ag("BA/missing-persons")]
    );
    assert_eq!(vh.recipients_at(cc("RS")), vec![ag("RS/police")]);
    assert!(vh.recipients_at(cc("HR")).is_empty());
    assert_eq!(vh.kind, v1::RecordKind::InformationResponse);
    let expected = cats(&[
        v1::DataCategory::Identity,
        v1::DataCategory::CaseNarrative,
        v1::DataCategory::Biometric,
    ]);
    assert_eq!(vh.categories, expected);

    let at_ba = fx.open(&sealed.envelope, &vh, "BA").expect("BA opens");
    let at_rs = fx.open(&sealed.envelope, &vh, "RS").expect("RS opens");
    assert_eq!(at_ba.record, rec);
    assert_eq!(at_rs.record, rec);
    assert_eq!(at_ba.derived, expected);
    assert_eq!(at_rs.derived, expected);
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "HR").err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
}

#[test]
fn every_example_record_round_trips() {
    let fx = Fx::new();
    for file in [
        "fingerprints.json",
        "intelligence_report.json",
        "missing_person_trace.json",
        "mla_request.json",
        "mla_response.json",
        "statistics.json",
        "trace_result.json",
        "wanted_alert.json",
    ] {
        let rec = record(file);
        let sealed = fx.seal("RS/police", &["HR/police"], &rec);
        let vh = fx.verify(&sealed.envelope);
        assert_eq!(Some(vh.kind), categories::record_kind(&rec), "{file}");
        let opened = fx
            .open(&sealed.envelope, &vh, "HR")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(opened.record, rec, "{file}");
        assert_eq!(opened.derived, categories::derive(&rec), "{file}");
    }
}

#[test]
fn statistics_carry_no_categories() {
    let fx = Fx::new();
    let rec = record("statistics.json");
    let sealed = fx.seal("RS/police", &["BA/police"], &rec);
    assert!(sealed.categories.is_empty());
    let vh = fx.verify(&sealed.envelope);
    assert!(vh.categories.is_empty());
    assert_eq!(vh.kind, v1::RecordKind::Statistics);
    assert!(
        fx.open(&sealed.envelope, &vh, "BA")
            .unwrap()
            .derived
            .is_empty()
    );
}

#[test]
fn over_declaring_is_allowed() {
    let fx = Fx::new();
    let rec = record("statistics.json");
    let declared = cats(&[v1::DataCategory::Identity, v1::DataCategory::Health]);
    let input = SealInput {
        sender: &ag("HR/police"),
        recipients: &[ag("BA/police")],
        record: &rec,
        labels: labels(),
        created_at_ms: CREATED,
        expires_at_ms: EXPIRES,
        onward_of: None,
        permission: None,
    };
    let sealed = seal_declaring(&input, declared.clone(), &fx.node("HR").sign, &fx.dir).unwrap();
    assert_eq!(sealed.categories, declared);
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.categories, declared);
    let opened = fx.open(&sealed.envelope, &vh, "BA").unwrap();
    assert!(opened.derived.is_empty());
}

#[test]
fn sealing_is_randomised() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["RS/police"], &rec);
    let b = fx.seal("HR/police", &["RS/police"], &rec);
    assert!(a.id < b.id);
    assert_ne!(a.envelope.ciphertext, b.envelope.ciphertext);
    assert_ne!(a.envelope.header, b.envelope.header);
    // Nonce plus GCM tag around the encoded record.
    assert_eq!(
        a.envelope.ciphertext.len(),
        NONCE_LEN + rec.encoded_len() + AES_256_GCM.tag_len()
    );
}

#[test]
fn seal_refuses_empty_record_and_unknown_node() {
    let fx = Fx::new();
    let empty = v1::CaseRecord::default();
    assert_eq!(
        fx.seal_with("HR/police", &["BA/police"], &empty, |_| {})
            .err(),
        Some(EnvelopeError::EmptyRecord)
    );
    let rec = record("wanted_alert.json");
    assert_eq!(
        fx.seal_with("HR/police", &["ME/police"], &rec, |_| {})
            .err(),
        Some(EnvelopeError::UnknownNode(cc("ME")))
    );
}

#[test]
fn wrong_hpke_key_fails_to_unwrap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let vh = fx.verify(&sealed.envelope);
    // BA's wrapped key with RS's (or a fresh) private key.
    assert_eq!(
        open(&sealed.envelope, &vh, cc("BA"), &fx.node("RS").hpke).err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    let (stranger, _) = keys::generate_hpke();
    assert_eq!(
        open(&sealed.envelope, &vh, cc("RS"), &stranger).err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    // Not a recipient takes precedence over the key.
    assert_eq!(
        open(&sealed.envelope, &vh, cc("HR"), &fx.node("HR").hpke).err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
}

// ---------------------------------------------------------------------
// Tampering with the envelope

#[test]
fn tampered_ciphertext_is_caught_by_the_header_hash() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for i in [0, NONCE_LEN, sealed.envelope.ciphertext.len() - 1] {
        let mut env = sealed.envelope.clone();
        env.ciphertext[i] ^= 0x01;
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::CiphertextMismatch,
            "byte {i}"
        );
    }
    let mut env = sealed.envelope.clone();
    env.ciphertext.push(0);
    assert_eq!(fx.verify_err(&env), EnvelopeError::CiphertextMismatch);
    let mut env = sealed.envelope.clone();
    env.ciphertext.truncate(NONCE_LEN);
    assert_eq!(fx.verify_err(&env), EnvelopeError::CiphertextMismatch);
}

#[test]
fn tampered_header_byte_breaks_the_signature() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    let at = find(&env.header, CASE_REF.as_bytes()) + CASE_REF.len() - 1;
    env.header[at] = b'2';
    // Still a well-formed header, claiming another case reference.
    let claimed = unverified_summary(&env).expect("still parses");
    assert_eq!(claimed.case_reference, "HR-2025-0002");
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));

    // Same for the recipient list: BA/police -> BA/polica.
    let mut env = sealed.envelope.clone();
    let at = find(&env.header, b"BA/police") + 8;
    env.header[at] = b'a';
    assert_eq!(
        unverified_summary(&env).unwrap().recipients,
        vec!["BA/polica".to_string()]
    );
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
}

#[test]
fn header_signed_by_another_key_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let header = sealed.envelope.header.clone();
    for key in [&fx.node("RS").sign, &fx.node("BA").sign, &fx.dir_key] {
        let mut env = sealed.envelope.clone();
        env.signature = key.sign(&header_signing_input(&header));
        assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
    }
    // The right key over the wrong domain (a receipt) or the raw bytes.
    let hr = &fx.node("HR").sign;
    for msg in [
        domain_hash(RECEIPT_DOMAIN, &header).to_vec(),
        header.clone(),
        sha256(&header).to_vec(),
    ] {
        let mut env = sealed.envelope.clone();
        env.signature = hr.sign(&msg);
        assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
    }
}

#[test]
fn mangled_signature_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let good = sealed.envelope.signature.clone();
    assert_eq!(good.len(), 64);
    let mut variants = vec![
        good[..63].to_vec(),
        good[..32].to_vec(),
        Vec::new(),
        [good.clone(), vec![0]].concat(),
    ];
    for i in [0, 31, 32, 63] {
        let mut s = good.clone();
        s[i] ^= 0x80;
        variants.push(s);
    }
    for sig in variants {
        let mut env = sealed.envelope.clone();
        let len = sig.len();
        env.signature = sig;
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::BadSignature(cc("HR")),
            "signature len {len}"
        );
    }
}

#[test]
fn resigning_an_unchanged_header_still_verifies() {
    // Guards the hand-built envelopes below: the helpers alone are valid.
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    resign(&mut env, &fx.node("HR").sign, |_| {});
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, rec);
    reseal_payload(&fx, &mut env, &rec.encode_to_vec(), None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, rec);
}

#[test]
fn garbage_wrapped_key_fails_to_unwrap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;

    // BA's sealed key replaced with garbage: header valid, BA cannot open, RS still can.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        let w = h.wrapped_keys.iter_mut().find(|w| w.node == "BA").unwrap();
        w.sealed_key = vec![0x5a; w.sealed_key.len()];
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    assert_eq!(fx.open(&env, &vh, "RS").unwrap().record, rec);

    // A random (well-formed) encapsulated key.
    let mut env = sealed.envelope.clone();
    let (_, random_pub) = keys::generate_hpke();
    resign(&mut env, hr, |h| {
        h.wrapped_keys
            .iter_mut()
            .find(|w| w.node == "BA")
            .unwrap()
            .encapsulated_key = keys::hpke_public_bytes(&random_pub).to_vec();
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );

    // An encapsulated key of the wrong length does not get past verify.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        h.wrapped_keys
            .iter_mut()
            .find(|w| w.node == "BA")
            .unwrap()
            .encapsulated_key = vec![1, 2, 3, 4, 5];
    });
    assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::WrappedKeys(
                "key for BA has a 5-byte encapsulated key and a 48-byte sealed key; they are 32 and 48 bytes"
                    .into()
            )
        );

    // The wrapped keys of BA and RS swapped: each names the key it was
    // wrapped to, which is not the other node's, so verify refuses.
    let swap = |w: &mut v1::WrappedKey| {
        w.node = if w.node == "BA" {
            "RS".into()
        } else {
            "BA".into()
        };
    };
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.wrapped_keys.iter_mut().for_each(swap));
    assert!(matches!(
        fx.verify_err(&env),
        EnvelopeError::RecipientKeyNotAccepted { .. }
    ));
    // Renamed to the other node's key as well, each is still bound to its
    // node by the HPKE info.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        for w in &mut h.wrapped_keys {
            swap(w);
            let to: Country = w.node.parse().unwrap();
            w.recipient_key_sha256 =
                keys::hpke_key_sha256(&fx.dir.node(to).unwrap().hpke_key).to_vec();
        }
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    assert_eq!(
        fx.open(&env, &vh, "RS").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
}

#[test]
fn wrapped_key_is_bound_to_the_envelope_id() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["BA/police"], &rec);
    let b = fx.seal("HR/police", &["BA/police"], &rec);
    // A's header carrying B's ciphertext and B's wrapped key: the key
    // was wrapped for B's id, so it does not unwrap under A's.
    let mut env = a.envelope.clone();
    env.ciphertext = b.envelope.ciphertext.clone();
    let b_header = v1::EnvelopeHeader::decode(b.envelope.header.as_slice()).unwrap();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = b_header.ciphertext_sha256.clone();
        h.wrapped_keys = b_header.wrapped_keys.clone();
    });
    let vh = fx.verify(&env);
    assert_eq!(vh.id, a.id);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
}

#[test]
fn payload_under_another_data_key_fails_to_decrypt() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["BA/police"], &rec);
    let b = fx.seal("HR/police", &["BA/police"], &rec);
    // A's header and wrapped key, B's ciphertext with the hash rebound:
    // the header verifies, the key unwraps, the payload does not decrypt.
    let mut env = a.envelope.clone();
    env.ciphertext = b.envelope.ciphertext.clone();
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash
    });
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").err(), Some(EnvelopeError::Decrypt));
}

/// AES-GCM under a fresh key, as a dishonest sender would make it.
fn encrypt_under(key: &[u8; 32], id: &EnvelopeId, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(id.as_bytes()),
        &mut buf,
    )
    .unwrap();
    [nonce.to_vec(), buf].concat()
}

#[test]
fn key_commitment_is_the_documented_hash() {
    let id = EnvelopeId::at(1_700_000_000_000);
    let key = [0x42u8; 32];
    let spelled_out = sha256(
        &[
            b"casebridge/v1 data-key-commitment\0".as_slice(),
            id.as_bytes(),
            &key,
        ]
        .concat(),
    );
    assert_eq!(key_commitment(&id, &key), spelled_out);
    assert_ne!(key_commitment(&id, &[0x43; 32]), spelled_out);
    assert_ne!(
        key_commitment(&EnvelopeId::at(1_700_000_000_000), &key),
        spelled_out
    );
    assert!(constant_time_eq(&spelled_out, &spelled_out.clone()));
    let mut other = spelled_out;
    other[31] ^= 1;
    assert!(!constant_time_eq(&spelled_out, &other));
}

#[test]
fn sealing_commits_to_the_data_key() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let vh = fx.verify(&sealed.envelope);
    // Both recipients unwrap the committed key and read the same record.
    let at_ba = fx.open(&sealed.envelope, &vh, "BA").unwrap();
    let at_rs = fx.open(&sealed.envelope, &vh, "RS").unwrap();
    assert_eq!(at_ba.record, at_rs.record);
    let h = v1::EnvelopeHeader::decode(sealed.envelope.header.as_slice()).unwrap();
    assert_eq!(h.data_key_sha256.len(), 32);
    assert_eq!(vh.data_key_sha256.to_vec(), h.data_key_sha256);
}

#[test]
fn header_without_a_key_commitment_is_malformed() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for len in [0, 31, 33] {
        let mut env = sealed.envelope.clone();
        resign(&mut env, &fx.node("HR").sign, |h| {
            h.data_key_sha256.resize(len, 7)
        });
        assert_eq!(fx.verify_err(&env), EnvelopeError::KeyCommitmentLength(len));
    }
}

/// One signed header, a different data key wrapped for each recipient
/// node: whichever node unwraps a key other than the committed one
/// refuses before decrypting, so no two recipients read different
/// records.
#[test]
fn recipients_given_different_data_keys_cannot_read_different_records() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let id = sealed.id;
    let mut other = rec.clone();
    if let Some(v1::case_record::Body::WantedAlert(w)) = &mut other.body {
        w.instructions = "Disregard the earlier alert.".into();
    }
    let second = [0x17u8; 32];
    let rewrap_ba = |h: &mut v1::EnvelopeHeader| {
        let ba = h.wrapped_keys.iter_mut().find(|w| w.node == "BA").unwrap();
        *ba = wrap_for(&second, &id, cc("BA"), &fx.dir);
    };

    // The payload opens under BA's (uncommitted) key only: both refuse.
    let mut env = sealed.envelope.clone();
    env.ciphertext = encrypt_under(&second, &id, &other.encode_to_vec());
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash;
        rewrap_ba(h);
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );
    assert_eq!(fx.open(&env, &vh, "RS").err(), Some(EnvelopeError::Decrypt));

    // The payload opens under the committed key: RS reads it, BA (given
    // another key) refuses rather than read something else.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, rewrap_ba);
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "RS").unwrap().record, rec);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );

    // Committing to the second key instead moves the refusal to RS.
    let commitment = key_commitment(&id, &second).to_vec();
    let mut env = sealed.envelope.clone();
    env.ciphertext = encrypt_under(&second, &id, &other.encode_to_vec());
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash;
        h.data_key_sha256 = commitment;
        rewrap_ba(h);
    });
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, other);
    assert_eq!(
        fx.open(&env, &vh, "RS").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );
}

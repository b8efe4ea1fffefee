//! Receipts, and the unverified summary of a header a refusal records.

use super::*;

fn receipt_body(node: &str) -> v1::ReceiptBody {
    v1::ReceiptBody {
        envelope_id: EnvelopeId::at(1_700_000_000_000).as_bytes().to_vec(),
        recipient_node: node.into(),
        status: v1::ReceiptStatus::Delivered as i32,
        code: v1::RejectionCode::Unspecified as i32,
        reason: "delivered to 2 inboxes".into(),
        delivered_to: vec!["BA/police".into(), "BA/missing-persons".into()],
        at_ms: NOW,
        header_sha256: vec![7; 32],
    }
}

#[test]
fn receipt_round_trip() {
    let fx = Fx::new();
    let body = receipt_body("BA");
    let signed = sign_receipt(&body, &fx.node("BA").sign);
    assert_eq!(signed.body, body.encode_to_vec());
    assert_eq!(verify_receipt(&signed, &fx.dir, NOW), Ok(body));
}

#[test]
fn receipt_signed_by_another_node_is_refused() {
    let fx = Fx::new();
    let body = receipt_body("HR");
    for key in [&fx.node("RS").sign, &fx.node("BA").sign, &fx.dir_key] {
        let signed = sign_receipt(&body, key);
        assert_eq!(
            verify_receipt(&signed, &fx.dir, NOW),
            Err(EnvelopeError::BadReceiptSignature(cc("HR")))
        );
    }
    // HR's key over the header domain is not a receipt signature.
    let bytes = body.encode_to_vec();
    let cross = v1::SignedReceipt {
        signature: fx.node("HR").sign.sign(&header_signing_input(&bytes)),
        body: bytes,
    };
    assert_eq!(
        verify_receipt(&cross, &fx.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("HR")))
    );
}

#[test]
fn tampered_receipt_is_refused() {
    let fx = Fx::new();
    let signed = sign_receipt(&receipt_body("BA"), &fx.node("BA").sign);

    let mut r = signed.clone();
    let at = find(&r.body, b"delivered to 2");
    r.body[at + 13] = b'3';
    assert_eq!(
        v1::ReceiptBody::decode(r.body.as_slice()).unwrap().reason,
        "delivered to 3 inboxes"
    );
    assert_eq!(
        verify_receipt(&r, &fx.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("BA")))
    );

    // Re-pointing the receipt at another node changes whose key is used.
    let mut r = signed.clone();
    let at = find(&r.body, &[0x12, 2, b'B', b'A']);
    r.body[at + 2..at + 4].copy_from_slice(b"RS");
    assert_eq!(
        verify_receipt(&r, &fx.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("RS")))
    );

    let mut r = signed.clone();
    r.signature.truncate(63);
    assert_eq!(
        verify_receipt(&r, &fx.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("BA")))
    );

    let mut r = signed.clone();
    r.body = vec![0x0a, 0x05, 0x01];
    assert_eq!(
        verify_receipt(&r, &fx.dir, NOW),
        Err(EnvelopeError::MalformedReceipt)
    );

    let other = sign_receipt(&receipt_body("ME"), &fx.node("BA").sign);
    assert_eq!(
        verify_receipt(&other, &fx.dir, NOW),
        Err(EnvelopeError::UnknownNode(cc("ME")))
    );
    let other = sign_receipt(&receipt_body("ba"), &fx.node("BA").sign);
    assert!(matches!(
        verify_receipt(&other, &fx.dir, NOW),
        Err(EnvelopeError::InvalidField(f)) if f.starts_with("receipt node: ")
    ));
}

// ---------------------------------------------------------------------
// Unverified summaries

#[test]
fn unverified_summary_of_garbage_is_none() {
    for header in [vec![0x12, 0x10, 0x01], vec![0xff; 8], vec![0x0a, 0x01]] {
        let env = v1::Envelope {
            header,
            signature: vec![],
            ciphertext: vec![1, 2, 3],
        };
        assert_eq!(unverified_summary(&env), None);
    }
}

#[test]
fn unverified_summary_matches_the_verified_one() {
    let fx = Fx::new();
    let rec = record("trace_result.json");
    let in_reply_to = EnvelopeId::at(1_700_000_000_000).to_string();
    let sealed = fx
        .seal_with(
            "HR/police",
            &["BA/missing-persons", "RS/police"],
            &rec,
            |i| {
                i.labels.in_reply_to = in_reply_to.clone();
            },
        )
        .unwrap();
    let vh = fx.verify(&sealed.envelope);
    let s = unverified_summary(&sealed.envelope).expect("parses");
    assert_eq!(s, vh.summary());
    assert_eq!(s.envelope_id, sealed.id.as_bytes().to_vec());
    assert_eq!(s.sender_node, "HR");
    assert_eq!(s.sender_agency, "HR/police");
    assert_eq!(
        s.recipients,
        vec!["BA/missing-persons".to_string(), "RS/police".to_string()]
    );
    assert_eq!(s.kind, v1::RecordKind::TraceResult as i32);
    assert_eq!(s.declared_categories, categories::derive(&rec).to_vec_i32());
    assert_eq!(s.purpose, v1::Purpose::InvestigationOther as i32);
    assert_eq!(s.handling, v1::HandlingCode::H1 as i32);
    assert_eq!(s.case_reference, CASE_REF);
    assert_eq!(s.in_reply_to, in_reply_to);
    assert_eq!((s.created_at_ms, s.expires_at_ms), (CREATED, EXPIRES));
    assert_eq!(s.header_sha256, sha256(&sealed.envelope.header).to_vec());
    assert_eq!(s.ciphertext_len, sealed.envelope.ciphertext.len() as u64);
}

#[test]
fn unverified_summary_reports_forged_claims() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("RS").sign, |h| {
        h.sender_agency = "HR/customs".into();
        h.labels = None;
        h.ciphertext_sha256 = vec![9; 32];
    });
    env.ciphertext.truncate(5);
    let s = unverified_summary(&env).expect("parses");
    assert_eq!(s.sender_node, "HR");
    assert_eq!(s.sender_agency, "HR/customs");
    assert_eq!(
        (s.purpose, s.handling, s.case_reference.as_str()),
        (0, 0, "")
    );
    assert_eq!(s.ciphertext_sha256, vec![9; 32]);
    assert_eq!(s.ciphertext_len, 5);
    assert_eq!(s.header_sha256, sha256(&env.header).to_vec());
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
}

//! A node's keys rotated: its retired pair counts for headers, receipts and
//! wrapped keys within the overlap the directory states, for that node only,
//! and never after.

use super::*;
use crate::protocol::directory::DirectoryError;

/// Node `c`'s pair after a rotation: the fixture's directory with a fresh
/// pair current for `c` and the old one retired until `until`.
struct Rotated {
    dir: Directory,
    sign: SigningKey,
    hpke: HpkePrivateKey,
}

fn rotate(fx: &Fx, c: &str, until: i64) -> Rotated {
    let (sign, _) = SigningKey::generate().unwrap();
    let (hpke, hpke_pub) = keys::generate_hpke();
    let public = sign.public_key();
    let dir = fx.dir_with(|d| {
        d.version += 1;
        let n = d.nodes.iter_mut().find(|n| n.country == c).unwrap();
        n.previous.push(v1::RetiredKeys {
            signing_key: std::mem::replace(&mut n.signing_key, public.to_vec()),
            hpke_key: std::mem::replace(
                &mut n.hpke_key,
                keys::hpke_public_bytes(&hpke_pub).to_vec(),
            ),
            valid_until_ms: until,
        });
    });
    Rotated { dir, sign, hpke }
}

/// An edit of the fixture's raw directory.
type DirEdit<'a> = dyn Fn(&mut v1::Directory) + 'a;

fn receipt_body(node: &str) -> v1::ReceiptBody {
    v1::ReceiptBody {
        envelope_id: EnvelopeId::at(CREATED).as_bytes().to_vec(),
        recipient_node: node.into(),
        status: v1::ReceiptStatus::Delivered as i32,
        at_ms: NOW,
        header_sha256: vec![7; 32],
        ..Default::default()
    }
}

#[test]
fn a_retired_key_is_accepted_inside_its_overlap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    // Sealed and signed by HR and answered by BA with the keys of the
    // directory before the rotation of both nodes.
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let answered = receipt_body("BA");
    let receipt = sign_receipt(&answered, &fx.node("BA").sign);
    let hr = rotate(&fx, "HR", NOW + 1);
    let both = {
        let mut raw = v1::Directory::decode(hr.dir.signed().directory.as_slice()).unwrap();
        let (ba_sign, _) = SigningKey::generate().unwrap();
        let (_, ba_hpke) = keys::generate_hpke();
        let n = raw.nodes.iter_mut().find(|n| n.country == "BA").unwrap();
        n.previous.push(v1::RetiredKeys {
            signing_key: std::mem::replace(&mut n.signing_key, ba_sign.public_key().to_vec()),
            hpke_key: std::mem::replace(
                &mut n.hpke_key,
                keys::hpke_public_bytes(&ba_hpke).to_vec(),
            ),
            valid_until_ms: NOW + 1,
        });
        raw.version += 1;
        sign_dir(&raw, &fx.dir_key)
    };
    let vh = verify(&sealed.envelope, &both, NOW).expect("verifies within the overlap");
    assert_eq!(vh.sender_node, cc("HR"));
    assert_eq!(verify_receipt(&receipt, &both, NOW), Ok(answered));
    // The new key signs too, of course.
    let mut fresh = sealed.envelope.clone();
    resign(&mut fresh, &hr.sign, |_| {});
    assert!(verify(&fresh, &both, NOW).is_ok());
}

#[test]
fn a_retired_key_is_refused_after_its_overlap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let receipt = sign_receipt(&receipt_body("HR"), &fx.node("HR").sign);
    let hr = rotate(&fx, "HR", NOW);
    assert_eq!(
        verify(&sealed.envelope, &hr.dir, NOW).unwrap_err(),
        EnvelopeError::BadSignature(cc("HR"))
    );
    assert_eq!(
        verify_receipt(&receipt, &hr.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("HR")))
    );
    // One millisecond earlier it was still inside.
    assert!(verify(&sealed.envelope, &hr.dir, NOW - 1).is_ok());
    assert!(verify_receipt(&receipt, &hr.dir, NOW - 1).is_ok());
}

#[test]
fn a_retired_key_is_refused_for_another_node() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let hr = rotate(&fx, "HR", NOW + 86_400_000);
    let old_hr = &fx.node("HR").sign;
    // HR's retired key, within its overlap, signing as RS: RS's keys only
    // count for RS.
    let mut env = fx.seal("RS/police", &["BA/police"], &rec).envelope;
    resign(&mut env, old_hr, |_| {});
    assert_eq!(
        verify(&env, &hr.dir, NOW).unwrap_err(),
        EnvelopeError::BadSignature(cc("RS"))
    );
    let receipt = sign_receipt(&receipt_body("RS"), old_hr);
    assert_eq!(
        verify_receipt(&receipt, &hr.dir, NOW),
        Err(EnvelopeError::BadReceiptSignature(cc("RS")))
    );
    // And the same for cosignatures: RS's witness keys are RS's own.
    let rs_keys: Vec<[u8; 32]> = hr
        .dir
        .node(cc("RS"))
        .unwrap()
        .signing_keys_at(NOW)
        .copied()
        .collect();
    assert_eq!(rs_keys, vec![fx.node("RS").sign.public_key()]);
    let hr_keys: Vec<[u8; 32]> = hr
        .dir
        .node(cc("HR"))
        .unwrap()
        .signing_keys_at(NOW)
        .copied()
        .collect();
    assert_eq!(hr_keys, vec![hr.sign.public_key(), old_hr.public_key()]);
}

#[test]
fn duplicate_keys_across_nodes_refuse_the_directory() {
    let fx = Fx::new();
    let entry = |raw: &v1::Directory, c: &str| -> v1::NodeEntry {
        raw.nodes.iter().find(|n| n.country == c).unwrap().clone()
    };
    let hr = entry(&fx.raw, "HR");
    let rs = entry(&fx.raw, "RS");
    let (spare, _) = SigningKey::generate().unwrap();
    let (_, spare_hpke) = keys::generate_hpke();
    let spare = v1::RetiredKeys {
        signing_key: spare.public_key().to_vec(),
        hpke_key: keys::hpke_public_bytes(&spare_hpke).to_vec(),
        valid_until_ms: NOW + 1,
    };
    let cases: Vec<(&str, Box<DirEdit<'_>>)> = vec![
        (
            "HR's current signing key retired by RS",
            Box::new(|d| {
                let n = d.nodes.iter_mut().find(|n| n.country == "RS").unwrap();
                n.previous.push(v1::RetiredKeys {
                    signing_key: hr.signing_key.clone(),
                    ..spare.clone()
                });
            }),
        ),
        (
            "HR's current HPKE key retired by RS",
            Box::new(|d| {
                let n = d.nodes.iter_mut().find(|n| n.country == "RS").unwrap();
                n.previous.push(v1::RetiredKeys {
                    hpke_key: hr.hpke_key.clone(),
                    ..spare.clone()
                });
            }),
        ),
        (
            "one retired pair listed for HR and RS",
            Box::new(|d| {
                for n in d.nodes.iter_mut().filter(|n| n.country != "BA") {
                    n.previous.push(spare.clone());
                }
            }),
        ),
        (
            "RS's current signing key made HR's current one",
            Box::new(|d| {
                let n = d.nodes.iter_mut().find(|n| n.country == "HR").unwrap();
                n.signing_key = rs.signing_key.clone();
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut raw = fx.raw.clone();
        edit(&mut raw);
        let err = Directory::verify(
            &Directory::sign(&raw, &fx.dir_key),
            &fx.dir_key.public_key(),
            FED,
        )
        .err()
        .unwrap_or_else(|| panic!("{what}: the directory verified"));
        assert!(
            matches!(&err, DirectoryError::Entry(m) if m.contains("listed for both node")),
            "{what}: {err}"
        );
    }

    // At most four retired pairs for one node.
    let mut raw = fx.raw.clone();
    let n = raw.nodes.iter_mut().find(|n| n.country == "HR").unwrap();
    for _ in 0..5 {
        let (s, _) = SigningKey::generate().unwrap();
        let (_, h) = keys::generate_hpke();
        n.previous.push(v1::RetiredKeys {
            signing_key: s.public_key().to_vec(),
            hpke_key: keys::hpke_public_bytes(&h).to_vec(),
            valid_until_ms: NOW + 1,
        });
    }
    let err = Directory::verify(
        &Directory::sign(&raw, &fx.dir_key),
        &fx.dir_key.public_key(),
        FED,
    )
    .err()
    .expect("five retired pairs refused");
    assert!(err.to_string().contains("at most 4"), "{err}");
    four_retired_pairs_verify(&fx, raw);
}

/// The same directory with four retired pairs verifies.
fn four_retired_pairs_verify(fx: &Fx, mut raw: v1::Directory) {
    raw.nodes
        .iter_mut()
        .find(|n| n.country == "HR")
        .unwrap()
        .previous
        .pop();
    assert!(
        Directory::verify(
            &Directory::sign(&raw, &fx.dir_key),
            &fx.dir_key.public_key(),
            FED
        )
        .is_ok()
    );
}

#[test]
fn recipient_key_sha256_picks_the_key() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let old_ba = &fx.node("BA").hpke;
    let old_sha = keys::hpke_key_sha256(&keys::hpke_public_of(old_ba));
    // Sealed to BA's key before the rotation.
    let before = fx.seal("HR/police", &["BA/police"], &rec);
    let ba = rotate(&fx, "BA", NOW + 1);
    let new_sha = keys::hpke_key_sha256(&keys::hpke_public_of(&ba.hpke));

    let vh = verify(&before.envelope, &ba.dir, NOW).expect("within the overlap");
    assert_eq!(vh.wrapped_to(cc("BA")), Some(old_sha));
    assert_eq!(
        open(&before.envelope, &vh, cc("BA"), old_ba)
            .unwrap()
            .record,
        rec
    );
    // The new key does not open what was wrapped to the old one.
    assert_eq!(
        open(&before.envelope, &vh, cc("BA"), &ba.hpke).err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );

    // Sealed under the new directory: wrapped to the new key, named so.
    let hr = ag("HR/police");
    let to = [ag("BA/police")];
    let input = SealInput {
        sender: &hr,
        recipients: &to,
        record: &rec,
        labels: labels(),
        created_at_ms: CREATED,
        expires_at_ms: EXPIRES,
        onward_of: None,
        permission: None,
    };
    let after = seal(&input, &fx.node("HR").sign, &ba.dir).unwrap();
    let vh = verify(&after.envelope, &ba.dir, NOW).unwrap();
    assert_eq!(vh.wrapped_to(cc("BA")), Some(new_sha));
    assert_eq!(
        open(&after.envelope, &vh, cc("BA"), &ba.hpke)
            .unwrap()
            .record,
        rec
    );

    // After the overlap the old key is refused where the header is checked.
    let err = verify(&before.envelope, &ba.dir, NOW + 1).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::RecipientKeyNotAccepted {
            node: cc("BA"),
            key: hex::encode(&old_sha[..8]),
        }
    );
    assert!(
        err.to_string()
            .contains("neither BA's current key nor a retired one still within its overlap"),
        "{err}"
    );
    // A wrapped key that names no key, or a key BA never had, is refused.
    let hr_sign = &fx.node("HR").sign;
    for (name, bad) in [
        ("missing", Vec::new()),
        ("unknown", vec![9; 32]),
        ("short", vec![9; 31]),
    ] {
        let mut env = after.envelope.clone();
        resign(&mut env, hr_sign, |h| {
            h.wrapped_keys[0].recipient_key_sha256 = bad;
        });
        let err = verify(&env, &ba.dir, NOW).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::WrappedKeys(_) | EnvelopeError::RecipientKeyNotAccepted { .. }
            ),
            "{name} recipient key: {err}"
        );
    }
}

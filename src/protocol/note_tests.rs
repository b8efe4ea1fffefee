use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cosignature::cosignature_message;
use super::*;

// Values from golang.org/x/mod/sumdb/note's tests and docs (BSD-3-Clause,
// tests/vectors/signed-note/LICENSE); the PeterNeumann pair is also the
// shared vector.
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

// The example in c2sp.org/tlog-cosignature (keys not published).
const SPEC_CHECKPOINT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const SPEC_LOG_SIG: &str = "\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
const SPEC_WITNESS_SIG: &str = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/signed-note")
}

fn verifiers(keys: &[&str]) -> Verifiers {
    Verifiers::new(keys.iter().map(|k| Verifier::parse(k).expect("vkey"))).expect("verifiers")
}

fn peter() -> Verifiers {
    verifiers(&[PETER_VKEY])
}

fn log_signer() -> NoteSigner {
    NoteSigner::from_seed("casebridge.example/audit", &[7; 32]).expect("signer")
}

fn witness() -> Cosigner {
    Cosigner::from_seed("hr.casebridge.example/witness", &[9; 32]).expect("cosigner")
}

fn checkpoint(size: u64) -> Checkpoint {
    let root = crate::protocol::merkle::leaf_hash(&size.to_be_bytes());
    Checkpoint::new("casebridge.example/audit", size, root).expect("checkpoint")
}

/// `s` with the byte at `i` replaced by `b` (possibly no longer UTF-8).
fn with_byte(s: &str, i: usize, b: u8) -> Vec<u8> {
    let mut bytes = s.as_bytes().to_vec();
    bytes[i] = b;
    bytes
}

// ---- the shared vector -------------------------------------------------

#[test]
fn signed_note_vectors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(vectors())
        .expect("vector directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 1, "signed-note vector files");
    for file in files {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let field = |k: &str| v[k].as_str().expect("string field").to_owned();
        let (skey, vkey, text, signed) = (
            field("signer_key"),
            field("verifier_key"),
            field("text"),
            field("signed_note"),
        );

        let signer = NoteSigner::from_private_key(&skey).expect("signer key");
        let verifier = Verifier::parse(&vkey).expect("verifier key");
        assert_eq!(signer.verifier(), verifier);
        assert_eq!(verifier.to_string(), vkey, "vkey round trip");
        assert_eq!(
            format!("{:08x}", verifier.key_id()),
            vkey.split('+').nth(1).expect("key id")
        );

        // Signing is deterministic and must give exactly the vector.
        let mut note = Note::new(text.clone()).expect("text");
        note.sign(&signer).expect("sign");
        assert_eq!(note.to_string(), signed);

        // Opening it.
        let set = Verifiers::new([verifier.clone()]).expect("set");
        let opened = open(signed.as_bytes(), &set).expect("verifies");
        assert_eq!(opened.text(), text);
        assert_eq!(opened.verified().len(), 1);
        assert_eq!(opened.verified()[0].name(), verifier.name());
        assert_eq!(opened.verified()[0].timestamp(), None);
        assert!(opened.unverified().is_empty());
        assert_eq!(Note::parse(signed.as_bytes()), Ok(note.clone()));
        assert_eq!(opened.note().to_bytes(), signed.as_bytes());

        // Every change of one text character breaks the signature.
        for (i, b) in text.bytes().enumerate() {
            if b.is_ascii_alphanumeric() {
                let tampered = with_byte(&signed, i, b ^ 0x01);
                assert_eq!(
                    open(&tampered, &set).map(|_| ()),
                    Err(NoteError::InvalidSignature {
                        name: verifier.name().to_owned(),
                        key_id: verifier.key_id()
                    }),
                    "text byte {i}"
                );
            }
        }
        // Every change of one signature byte breaks it too; a change in
        // the key ID makes the signature one by an unknown key.
        let sig = &note.signatures()[0];
        for i in 0..sig.signature().len() {
            let mut bytes = sig.signature().to_vec();
            bytes[i] ^= 0x20;
            let mut bad = Note::new(text.clone()).expect("text");
            bad.add_signature(NoteSignature::new(sig.name(), sig.key_id(), bytes).expect("sig"))
                .expect("add");
            assert!(
                matches!(
                    open(&bad.to_bytes(), &set),
                    Err(NoteError::InvalidSignature { .. })
                ),
                "signature byte {i}"
            );
        }
        for bit in 0..32 {
            let mut bad = Note::new(text.clone()).expect("text");
            let other = NoteSignature::new(
                sig.name(),
                sig.key_id() ^ (1 << bit),
                sig.signature().to_vec(),
            )
            .expect("sig");
            bad.add_signature(other).expect("add");
            assert_eq!(
                open(&bad.to_bytes(), &set).map(|_| ()),
                Err(NoteError::NoVerifiedSignature)
            );
        }
        // Another key name with the same key ID is another key.
        let renamed = signed.replace(verifier.name(), "PeterNeumanm");
        assert_eq!(
            open(renamed.as_bytes(), &set).map(|_| ()),
            Err(NoteError::NoVerifiedSignature)
        );
    }
}

#[test]
fn borrowed_and_pkcs8_keys_sign_alike() {
    let owned = NoteSigner::from_private_key(PETER_SKEY).expect("skey");
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed");
    let borrowed = NoteSigner::new("casebridge.example/audit", &pair).expect("borrowed");
    assert_eq!(borrowed.verifier(), log_signer().verifier());
    let mut a = Note::new("a\n").expect("text");
    a.sign(&borrowed).expect("sign");
    let mut b = Note::new("a\n").expect("text");
    b.sign(&log_signer()).expect("sign");
    assert_eq!(a, b);

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("pkcs8");
    let signer = NoteSigner::from_pkcs8("k", pkcs8.as_ref()).expect("from pkcs8");
    let mut n = Note::new("x\n").expect("text");
    n.sign(&signer).expect("sign");
    let set = Verifiers::new([signer.verifier()]).expect("set");
    assert!(open(&n.to_bytes(), &set).is_ok());
    assert_eq!(
        NoteSigner::from_pkcs8("k", b"not der").map(|_| ()),
        Err(NoteKeyError::RejectedKey)
    );
    // Debug output names the key, never the secret.
    assert_eq!(format!("{owned:?}"), "NoteSigner(PeterNeumann+c74f20a3)");
}

// ---- keys ----------------------------------------------------------------

#[test]
fn key_ids_and_names() {
    let v = Verifier::parse(PETER_VKEY).expect("vkey");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(
        key_id("PeterNeumann", SignatureType::Ed25519, v.public_key()),
        0xc74f20a3
    );
    // The same key as a cosigner has another key ID.
    assert_ne!(
        key_id("PeterNeumann", SignatureType::CosignatureV1, v.public_key()),
        0xc74f20a3
    );
    for good in ["a", "example.com/log42", "oid/1.3.6.1", "PeterNeumann", "é"] {
        assert!(is_valid_key_name(good), "{good:?}");
    }
    for bad in [
        "",
        "a b",
        "a+b",
        "a\tb",
        "a\u{a0}b",
        "a\u{2003}b",
        "a\u{1}b",
        "a\nb",
    ] {
        assert!(!is_valid_key_name(bad), "{bad:?}");
        assert_eq!(
            Verifier::new(bad, SignatureType::Ed25519, [0; 32]),
            Err(NoteKeyError::InvalidKeyName(bad.to_owned()))
        );
    }
}

#[test]
fn verifier_key_manglings_are_refused() {
    // As golang.org/x/mod's TestNewVerifier: every proper substring and
    // every single-byte change must fail.
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(Verifier::parse(&s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(Verifier::parse(&s).is_err(), "{s}");
    }
    assert!(
        Verifier::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert_eq!(
        Verifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteKeyError::UnsupportedSignatureType(0x65))
    );
    assert_eq!(
        Verifier::parse("PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteKeyError::KeyIdMismatch {
            claimed: 0,
            computed: 0xc74f20a3
        })
    );
    assert_eq!(
        Verifier::parse("PeterNeumann+c74f20a3+AQ=="),
        Err(NoteKeyError::WrongKeyLength(0))
    );
    assert_eq!(
        Verifier::parse("PeterNeumann+c74f20a3"),
        Err(NoteKeyError::MalformedVerifierKey)
    );
    assert_eq!(
        Verifier::parse("PeterNeumann+-74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteKeyError::MalformedVerifierKey)
    );
    // Upper-case hex is the same key ID.
    assert!(
        Verifier::parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_ok()
    );
}

#[test]
fn private_key_manglings_are_refused() {
    let b = PETER_SKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(NoteSigner::from_private_key(&s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(NoteSigner::from_private_key(&s).is_err(), "{s}");
    }
    // A note key is not a cosigner key.
    assert_eq!(
        Cosigner::from_private_key(PETER_SKEY).map(|_| ()),
        Err(NoteKeyError::WrongSignatureType {
            expected: 0x04,
            found: 0x01
        })
    );
    // Errors never echo the key material.
    let err = NoteSigner::from_private_key(&PETER_SKEY.replace("+AYEK", "+AYEL"))
        .map(|_| ())
        .expect_err("mangled");
    assert!(!err.to_string().contains("AYE"), "{err}");
}

#[test]
fn verifier_sets() {
    let peter = Verifier::parse(PETER_VKEY).expect("peter");
    let enoch = Verifier::parse(ENOCH_VKEY).expect("enoch");
    let set = Verifiers::new([peter.clone(), enoch.clone(), enoch.clone()]).expect("set");
    assert_eq!(set.len(), 2);
    assert_eq!(set.get("PeterNeumann", 0xc74f20a3), Some(&peter));
    assert_eq!(set.get("PeterNeumann", 0xc74f20a4), None);
    assert_eq!(set.get("PeterNeuman", 0xc74f20a3), None);
    // A forged key colliding on name and key ID.
    let mut impostor = enoch.clone();
    impostor.public_key[0] ^= 1;
    assert_eq!(
        Verifiers::new([enoch, impostor]).map(|_| ()),
        Err(NoteKeyError::AmbiguousVerifier {
            name: "EnochRoot".to_owned(),
            key_id: 0xaf0cfe78
        })
    );
    assert!(Verifiers::default().is_empty());
}

// ---- note syntax and verification -----------------------------------------

#[test]
fn open_with_known_and_unknown_keys() {
    let msg = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let peter_sig = NoteSignature::parse_line(PETER_SIG).expect("peter sig");
    let enoch_sig = NoteSignature::parse_line(ENOCH_SIG).expect("enoch sig");

    let n = open(msg.as_bytes(), &peter()).expect("peter verifies");
    assert_eq!(n.text(), TEXT);
    assert_eq!(n.verified().len(), 1);
    assert_eq!(n.verified()[0].key_id(), 0xc74f20a3);
    assert_eq!(n.unverified(), std::slice::from_ref(&enoch_sig));

    let both = verifiers(&[PETER_VKEY, ENOCH_VKEY]);
    let n = open(msg.as_bytes(), &both).expect("both verify");
    let names: Vec<&str> = n.verified().iter().map(|v| v.name()).collect();
    assert_eq!(names, ["PeterNeumann", "EnochRoot"]);
    assert!(n.unverified().is_empty());

    assert_eq!(
        open(msg.as_bytes(), &Verifiers::default()).map(|_| ()),
        Err(NoteError::NoVerifiedSignature)
    );

    // Duplicates: a known key counts once, identical unknown lines are
    // kept once, a different unknown line is kept.
    let enoch_abcd = ENOCH_SIG.replacen("5n2t", "5nABCD2t", 1);
    let msg = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{enoch_abcd}");
    let n = open(msg.as_bytes(), &peter()).expect("verifies");
    assert_eq!(n.verified().len(), 1);
    assert_eq!(
        n.unverified(),
        [
            enoch_sig,
            NoteSignature::parse_line(&enoch_abcd).expect("abcd")
        ]
    );
    assert_eq!(n.note().signatures().len(), 5);
    assert_eq!(n.note().signatures()[0], peter_sig);

    // A bad signature by a known key rejects the note, even after a good one.
    let peter_abcd = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let bad = NoteError::InvalidSignature {
        name: "PeterNeumann".to_owned(),
        key_id: 0xc74f20a3,
    };
    for msg in [
        format!("{TEXT}\n{peter_abcd}"),
        format!("{TEXT}\n{PETER_SIG}{peter_abcd}"),
    ] {
        assert_eq!(open(msg.as_bytes(), &peter()).map(|_| ()), Err(bad.clone()));
    }
}

#[test]
fn signature_count_limit() {
    let ok = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(
        open(ok.as_bytes(), &peter()).map(|n| n.verified().len()),
        Ok(1)
    );
    let too_many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    for set in [peter(), Verifiers::default()] {
        assert_eq!(
            open(too_many.as_bytes(), &set).map(|_| ()),
            Err(NoteError::TooManySignatures)
        );
    }
    let mut note = Note::parse(ok.as_bytes()).expect("parse");
    let extra = NoteSignature::new("other", 1, vec![1]).expect("sig");
    assert_eq!(note.add_signature(extra), Err(NoteError::TooManySignatures));
}

#[test]
fn malformed_notes_are_refused_precisely() {
    let peter_sig = PETER_SIG.trim_end_matches('\n');
    let cases: Vec<(Vec<u8>, NoteError)> = vec![
            (TEXT.into(), NoteError::NoSignatureBlock),
            (format!("{TEXT}\n").into(), NoteError::NoSignatureBlock),
            (
                format!("{TEXT}\n{peter_sig}").into(),
                NoteError::UnterminatedSignature,
            ),
            (
                format!("\u{1}{TEXT}\n{PETER_SIG}").into(),
                NoteError::ControlCharacter { offset: 0, code: 1 },
            ),
            (
                format!("{TEXT}\n{peter_sig}\r\n").into(),
                NoteError::ControlCharacter {
                    offset: TEXT.len() + 1 + peter_sig.len(),
                    code: 0x0D,
                },
            ),
            (
                [b"\xff".as_slice(), format!("{TEXT}\n{PETER_SIG}").as_bytes()].concat(),
                NoteError::InvalidUtf8,
            ),
            (
                format!("{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n").into(),
                NoteError::SignatureEncoding { line: 1 },
            ),
            (
                format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into(),
                NoteError::SignaturePrefix { line: 2 },
            ),
            (
                format!("{TEXT}\n- PeterNeumann AAAA\n").into(),
                NoteError::SignaturePrefix { line: 1 },
            ),
            (
                format!("{TEXT}\n\u{2014}PeterNeumann AAAA\n").into(),
                NoteError::SignaturePrefix { line: 1 },
            ),
            (
                format!("{TEXT}\n\u{2014} a+b AAAAAAA=\n").into(),
                NoteError::InvalidKeyName {
                    line: 1,
                    name: "a+b".to_owned(),
                },
            ),
            (
                format!("{TEXT}\n\u{2014}  AAAAAAA=\n").into(),
                NoteError::InvalidKeyName {
                    line: 1,
                    name: String::new(),
                },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann\n").into(),
                NoteError::MissingSignature { line: 1 },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann \n").into(),
                NoteError::MissingSignature { line: 1 },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n").into(),
                NoteError::SignatureTooShort { line: 1, len: 3 },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann AAAAAA==\n").into(),
                NoteError::SignatureTooShort { line: 1, len: 4 },
            ),
            // Not canonical: unpadded, and non-zero trailing bits.
            (
                format!("{TEXT}\n\u{2014} PeterNeumann AAAAAAA\n").into(),
                NoteError::SignatureEncoding { line: 1 },
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann AAAAAAB=\n").into(),
                NoteError::SignatureEncoding { line: 1 },
            ),
            (
                format!("{TEXT}\n{PETER_SIG}\n{PETER_SIG}").into(),
                NoteError::InvalidSignature {
                    name: "PeterNeumann".to_owned(),
                    key_id: 0xc74f20a3,
                },
            ),
        ];
    for (msg, want) in cases {
        assert_eq!(
            open(&msg, &peter()).map(|_| ()),
            Err(want),
            "{}",
            String::from_utf8_lossy(&msg)
        );
    }
    // The text given to Note::new obeys the same rules.
    assert_eq!(Note::new("abc"), Err(NoteError::TextWithoutFinalNewline));
    assert_eq!(Note::new(""), Err(NoteError::TextWithoutFinalNewline));
    assert_eq!(
        Note::new("a\tb\n"),
        Err(NoteError::ControlCharacter { offset: 1, code: 9 })
    );
}

#[test]
fn text_is_split_at_the_last_blank_line() {
    // The example in c2sp.org/signed-note: its text holds a blank line.
    let msg = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
    let note = Note::parse(msg.as_bytes()).expect("parse");
    assert_eq!(
        note.text(),
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
    );
    assert_eq!(note.signatures().len(), 1);
    assert_eq!(note.signatures()[0].name(), "quasimodo.example/salvatore");
    assert_eq!(note.to_string(), msg);
}

#[test]
fn notes_round_trip() {
    let signer = log_signer();
    let other = NoteSigner::from_seed("other.example", &[8; 32]).expect("signer");
    let set = Verifiers::new([signer.verifier(), other.verifier()]).expect("set");
    for text in [
        "x\n",
        "\n",
        "a\n\nb\n",
        "a\n\n\n",
        "— looks like a signature\n",
        "ünïcödé ✓\n",
    ] {
        let mut note = Note::new(text).expect("text");
        note.sign(&signer).expect("sign");
        note.sign(&other).expect("sign");
        // Re-signing replaces the earlier signature by the same key.
        note.sign(&signer).expect("sign");
        assert_eq!(note.signatures().len(), 2);
        assert_eq!(note.signatures()[1].name(), signer.name());
        let bytes = note.to_bytes();
        assert_eq!(Note::parse(&bytes), Ok(note.clone()), "{text:?}");
        let opened = open(&bytes, &set).expect("verifies");
        assert_eq!(opened.text(), text);
        assert_eq!(opened.verified().len(), 2);
    }
    let line = NoteSignature::parse_line(PETER_SIG).expect("line");
    assert_eq!(line.to_line(), PETER_SIG);
    assert_eq!(NoteSignature::parse_line(PETER_SIG.trim_end()), Ok(line));
    assert!(NoteSignature::parse_line(&format!("{PETER_SIG}{PETER_SIG}")).is_err());
}

// ---- checkpoints ------------------------------------------------------------

#[test]
fn spec_checkpoint_example() {
    let c = Checkpoint::parse(SPEC_CHECKPOINT).expect("parse");
    assert_eq!(c.origin(), "example.com/behind-the-sofa");
    assert_eq!(c.size(), 20852163);
    assert_eq!(
        STANDARD.encode(c.root_hash()),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(c.extensions().is_empty());
    assert_eq!(c.text(), SPEC_CHECKPOINT);

    let msg = format!("{SPEC_CHECKPOINT}\n{SPEC_LOG_SIG}{SPEC_WITNESS_SIG}");
    let note = Note::parse(msg.as_bytes()).expect("note");
    assert_eq!(note.to_string(), msg);
    let witness = &note.signatures()[1];
    assert_eq!(witness.name(), "witness.example.com/w1");
    assert_eq!(witness.signature().len(), 8 + 64);
    // The message tlog-cosignature shows for this checkpoint and time.
    assert_eq!(witness.cosignature_timestamp(), Some(1679315147));
    assert_eq!(
            cosignature_message(&c.text(), 1679315147),
            b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    // The log's own signature is a plain Ed25519 one.
    assert_eq!(note.signatures()[0].cosignature_timestamp(), None);
    // A timestamp known from transparency-dev/formats' tests.
    let sig = NoteSignature::parse_line(
            "\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
        )
        .expect("sig");
    assert_eq!(sig.cosignature_timestamp(), Some(1727964367));
}

#[test]
fn checkpoint_syntax() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    let ok = |t: &str| Checkpoint::parse(t).map(|c| (c.size(), c.extensions().len()));
    assert_eq!(ok(&format!("o\n0\n{root}\n")), Ok((0, 0)));
    assert_eq!(
        ok(&format!("o\n18446744073709551615\n{root}\n")),
        Ok((u64::MAX, 0))
    );
    assert_eq!(ok(&format!("o\n5\n{root}\next a\next b\n")), Ok((5, 2)));
    let c = Checkpoint::parse(&format!("o\n5\n{root}\next a\next b\n")).expect("parse");
    assert_eq!(c.extensions(), ["ext a", "ext b"]);
    assert_eq!(c.text(), format!("o\n5\n{root}\next a\next b\n"));

    let cases = [
        (
            format!("o\n5\n{root}"),
            CheckpointError::MissingFinalNewline,
        ),
        ("o\n5\n".to_owned(), CheckpointError::TooFewLines(2)),
        (format!("\n5\n{root}\n"), CheckpointError::EmptyLine(1)),
        (format!("o\n\n{root}\n"), CheckpointError::EmptyLine(2)),
        ("o\n5\n\n".to_owned(), CheckpointError::EmptyLine(3)),
        (format!("o\n5\n{root}\n\n"), CheckpointError::EmptyLine(4)),
        (
            format!("o\n5\n{root}\na\n\nb\n"),
            CheckpointError::EmptyLine(5),
        ),
        (
            format!("o\t\n5\n{root}\n"),
            CheckpointError::ControlCharacter(1),
        ),
        (format!("o\n05\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n00\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n+5\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n-5\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n 5\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n5 \n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n0x5\n{root}\n"), CheckpointError::BadTreeSize),
        (format!("o\n١\n{root}\n"), CheckpointError::BadTreeSize),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            CheckpointError::BadTreeSize,
        ),
        ("o\n5\nAAAA\n".to_owned(), CheckpointError::BadRootHash),
        (
            format!("o\n5\n{}\n", root.trim_end_matches('=')),
            CheckpointError::BadRootHash,
        ),
        (
            "o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".to_owned(),
            CheckpointError::BadRootHash,
        ),
        (format!("o\n5\n{root}AAAA\n"), CheckpointError::BadRootHash),
    ];
    for (text, want) in cases {
        assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
    }
    assert_eq!(
        Checkpoint::new("", 1, [0; 32]),
        Err(CheckpointError::EmptyLine(1))
    );
    assert_eq!(
        Checkpoint::new("a\nb", 1, [0; 32]),
        Err(CheckpointError::ControlCharacter(1))
    );
    assert_eq!(
        checkpoint(1).with_extensions(vec!["ok".into(), String::new()]),
        Err(CheckpointError::EmptyLine(5))
    );
}

#[test]
fn checkpoint_sign_and_open() {
    let signer = log_signer();
    let log = Verifiers::new([signer.verifier()]).expect("set");
    for c in [
        checkpoint(0),
        checkpoint(1),
        checkpoint(u64::MAX),
        checkpoint(42)
            .with_extensions(vec!["extension line".into()])
            .expect("ext"),
    ] {
        let note = sign_checkpoint(&c, &signer).expect("sign");
        let bytes = note.to_bytes();
        let opened = open_checkpoint(&bytes, &log).expect("open");
        assert_eq!(opened.checkpoint(), &c);
        assert_eq!(opened.cosignatures().count(), 0);
        assert_eq!(opened.note().note(), &note);

        // One changed byte anywhere fails: in the text, the signature
        // is wrong or the text is no longer a checkpoint; in the
        // signature line, the signature is wrong or by an unknown key.
        let text = bytes.len() - note.signatures()[0].to_line().len() - 1;
        for i in 0..bytes.len() {
            if i == text || bytes[i] == b'\n' {
                continue; // the separator and line ends change the syntax
            }
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            assert!(
                open_checkpoint(&tampered, &log).is_err(),
                "byte {i} of {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[test]
fn checkpoints_need_the_log_itself() {
    let c = checkpoint(3);
    // A key named otherwise cannot sign for this origin...
    let stranger = NoteSigner::from_seed("other.example/log", &[7; 32]).expect("signer");
    assert_eq!(
        sign_checkpoint(&c, &stranger).map(|_| ()),
        Err(CheckpointError::OriginMismatch {
            origin: c.origin().to_owned(),
            key_name: "other.example/log".to_owned()
        })
    );
    // ...nor make a checkpoint acceptable when trusted.
    let mut note = Note::new(c.text()).expect("text");
    note.sign(&stranger).expect("sign");
    let set = Verifiers::new([stranger.verifier()]).expect("set");
    assert_eq!(
        open_checkpoint(&note.to_bytes(), &set).map(|_| ()),
        Err(CheckpointError::NoLogSignature {
            origin: c.origin().to_owned()
        })
    );
    // Nor does a trusted witness's cosignature alone.
    let note = sign_checkpoint(&c, &log_signer()).expect("sign");
    let mut cosigned = note.clone();
    cosigned
        .add_signature(witness().cosign(&c, 1_700_000_000).expect("cosign"))
        .expect("add");
    let witness_only = Verifiers::new([witness().verifier()]).expect("set");
    assert_eq!(
        open_checkpoint(&cosigned.to_bytes(), &witness_only).map(|_| ()),
        Err(CheckpointError::NoLogSignature {
            origin: c.origin().to_owned()
        })
    );
    // A text that is not a checkpoint, validly signed by the log key.
    let mut not_checkpoint = Note::new("casebridge.example/audit\n3\n").expect("text");
    not_checkpoint.sign(&log_signer()).expect("sign");
    let log = Verifiers::new([log_signer().verifier()]).expect("set");
    assert_eq!(
        open_checkpoint(&not_checkpoint.to_bytes(), &log).map(|_| ()),
        Err(CheckpointError::TooFewLines(2))
    );
}

// ---- cosignatures --------------------------------------------------------------

#[test]
fn cosignature_round_trip() {
    let c = checkpoint(10)
        .with_extensions(vec!["ext".into()])
        .expect("ext");
    let w = witness();
    let t = 1_700_000_000;
    let sig = w.cosign(&c, t).expect("cosign");
    assert_eq!(sig.cosignature_timestamp(), Some(t));
    assert_eq!(sig.signature().len(), 72);
    assert_eq!(verify_cosignature(&c, &sig, &w.verifier()), Ok(t));

    // The witness hands back a line; the log parses it and adds it.
    let line = sig.to_line();
    let parsed = NoteSignature::parse_line(&line).expect("line");
    assert_eq!(parsed, sig);
    let mut note = sign_checkpoint(&c, &log_signer()).expect("sign");
    note.add_signature(parsed).expect("add");
    let all = Verifiers::new([log_signer().verifier(), w.verifier()]).expect("set");
    let opened = open_checkpoint(&note.to_bytes(), &all).expect("open");
    let cosigs: Vec<_> = opened.cosignatures().collect();
    assert_eq!(cosigs.len(), 1);
    assert_eq!(cosigs[0].name(), w.name());
    assert_eq!(cosigs[0].key_id(), w.key_id());
    assert_eq!(cosigs[0].timestamp(), Some(t));
    assert_eq!(cosigs[0].signature_type(), SignatureType::CosignatureV1);

    // A later cosignature by the same witness replaces the earlier one.
    note.add_signature(w.cosign(&c, t + 60).expect("cosign"))
        .expect("add");
    assert_eq!(note.signatures().len(), 2);
    let opened = open_checkpoint(&note.to_bytes(), &all).expect("open");
    assert_eq!(
        opened.cosignatures().next().and_then(|s| s.timestamp()),
        Some(t + 60)
    );

    // The vkey form carries type 0x04 and parses back.
    let vkey = w.verifier().to_string();
    assert!(vkey.starts_with("hr.casebridge.example/witness+"));
    let v = Verifier::parse(&vkey).expect("vkey");
    assert_eq!(v.signature_type(), SignatureType::CosignatureV1);
    assert_eq!(
        STANDARD
            .decode(vkey.rsplit('+').next().expect("key"))
            .expect("b64")[0],
        0x04
    );
    assert_eq!(v, w.verifier());
}

#[test]
fn cosignature_tampering_fails() {
    let c = checkpoint(10)
        .with_extensions(vec!["ext".into()])
        .expect("ext");
    let w = witness();
    let t = 1_700_000_000;
    let sig = w.cosign(&c, t).expect("cosign");
    let v = w.verifier();
    let invalid = Err(NoteError::InvalidSignature {
        name: w.name().to_owned(),
        key_id: w.key_id(),
    });

    // Any other checkpoint: size, root, origin, extension lines.
    let others = [
        checkpoint(11)
            .with_extensions(vec!["ext".into()])
            .expect("ext"),
        Checkpoint::new(c.origin(), 10, [0; 32])
            .and_then(|x| x.with_extensions(vec!["ext".into()]))
            .expect("other root"),
        Checkpoint::new("elsewhere", 10, *c.root_hash())
            .and_then(|x| x.with_extensions(vec!["ext".into()]))
            .expect("other origin"),
        checkpoint(10),
        checkpoint(10)
            .with_extensions(vec!["ext2".into()])
            .expect("ext"),
    ];
    for other in &others {
        assert_eq!(verify_cosignature(other, &sig, &v), invalid);
    }
    // Any changed byte: timestamp or signature.
    for i in 0..sig.signature().len() {
        let mut bytes = sig.signature().to_vec();
        bytes[i] ^= 0x04;
        let bad = NoteSignature::new(sig.name(), sig.key_id(), bytes).expect("sig");
        assert_eq!(verify_cosignature(&c, &bad, &v), invalid, "byte {i}");
    }
    // Wrong length.
    let short =
        NoteSignature::new(sig.name(), sig.key_id(), sig.signature()[..71].to_vec()).expect("sig");
    assert_eq!(verify_cosignature(&c, &short, &v), invalid);
    // The same key as a plain note key is another key and rejects it.
    let pair = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("seed");
    let as_note_key = NoteSigner::new(w.name(), &pair).expect("signer").verifier();
    assert_ne!(as_note_key.key_id(), w.key_id());
    assert!(as_note_key.verify(&c.text(), &sig).is_err());
    // And a note signature is not a cosignature.
    let note = sign_checkpoint(&c, &log_signer()).expect("sign");
    assert_eq!(
        verify_cosignature(&c, &note.signatures()[0], &log_signer().verifier()),
        Err(NoteError::InvalidSignature {
            name: log_signer().name().to_owned(),
            key_id: log_signer().key_id()
        })
    );
    // Timestamps above 2^63 - 1 are refused both ways.
    let too_late = 1u64 << 63;
    assert_eq!(
        w.cosign(&c, too_late).map(|_| ()),
        Err(NoteError::TimestampOutOfRange(too_late))
    );
    let mut bytes = sig.signature().to_vec();
    bytes[..8].copy_from_slice(&too_late.to_be_bytes());
    let bad = NoteSignature::new(sig.name(), sig.key_id(), bytes).expect("sig");
    assert_eq!(
        verify_cosignature(&c, &bad, &v),
        Err(NoteError::TimestampOutOfRange(too_late))
    );
    assert!(w.cosign(&c, i64::MAX as u64).is_ok());
    // Within a note, a bad cosignature by a trusted witness rejects it.
    let mut note = sign_checkpoint(&c, &log_signer()).expect("sign");
    let mut bytes = sig.signature().to_vec();
    bytes[20] ^= 1;
    note.add_signature(NoteSignature::new(sig.name(), sig.key_id(), bytes).expect("sig"))
        .expect("add");
    let all = Verifiers::new([log_signer().verifier(), v.clone()]).expect("set");
    assert_eq!(
        open_checkpoint(&note.to_bytes(), &all).map(|_| ()),
        Err(CheckpointError::Note(NoteError::InvalidSignature {
            name: w.name().to_owned(),
            key_id: w.key_id()
        }))
    );
}

#[test]
fn an_invalid_key_name_is_quoted_by_a_short_prefix() {
    let line = format!("\u{2014} {}+ AAAAAAA=", "n".repeat(1 << 20));
    let err = NoteSignature::parse_line(&line).unwrap_err();
    let text = err.to_string();
    assert!(text.len() < 120, "{} bytes", text.len());
    assert!(text.contains("(1048577 bytes)"), "{text}");
}

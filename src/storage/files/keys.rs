//! The key files a party keeps: secrets written 0600, atomically (a reader
//! sees the old file or the new one, never half of one), and read from the
//! opened file, whose mode is then checked on that same file, so nothing can
//! swap the file between the check and the read. A file owned by anyone but
//! root must be 0600 or stricter; one owned by root may also be readable by
//! its group (0640 or stricter), so that root can hand a key to the service's
//! group (`root:casebridge 0640`, or a Kubernetes Secret mounted with an
//! `fsGroup`) without giving the service the right to change it. PostgreSQL
//! checks its TLS key file by the same rule. Parsing the bytes read is the
//! core's (`protocol::keys`).

use std::fs;
use std::io::Read as _;
use std::path::Path;

use crate::protocol::keys::{self, HpkePrivateKey, KeyError, SigningKey};

/// The largest secret file read: keys are a few hundred bytes.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a secret file with `mode`, owned by `uid`, is readable by more
/// than the rule allows: its owner only, or root and the file's group.
pub fn too_open(mode: u32, uid: u32) -> bool {
    let allowed = if uid == 0 { 0o740 } else { 0o700 };
    mode & 0o777 & !allowed != 0
}

/// Reads a secret file, refusing it if its permissions let anyone but the
/// owner read it (or, for a file owned by root, anyone but root and the
/// file's group; nobody but root may write it). The mode is checked on the
/// file as opened, then read from that same open file.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    let invalid = |why: String| KeyError::Invalid {
        path: path.to_path_buf(),
        what: "secret file",
        why,
    };
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let mode = meta.permissions().mode() & 0o777;
        if too_open(mode, meta.uid()) {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "larger than {MAX_SECRET_BYTES} bytes; a key file is far smaller"
        )));
    }
    Ok(bytes)
}

/// Writes a secret file with mode 0600, atomically: it is never readable
/// by others, not even for a moment, and never seen half written.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::storage::write_private(path, bytes).map_err(io_err(path))
}

/// Loads a PKCS#8 (DER or PEM "PRIVATE KEY") Ed25519 key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::parse(path, &read_secret(path)?)
}

/// Loads a raw 32-byte X25519 private key file (binary or hex).
pub fn load_hpke(path: &Path) -> Result<HpkePrivateKey, KeyError> {
    keys::parse_hpke(path, &read_secret(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::{
        HpkeKem, generate_hpke, hpke_private_bytes, hpke_public_bytes, to_pem,
    };
    use hpke::Kem as _;

    #[test]
    fn secrets_are_written_0600_and_open_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (key, pkcs8) = SigningKey::generate().unwrap();
        write_secret(&path, to_pem(&pkcs8, "PRIVATE KEY").as_bytes()).unwrap();
        let loaded = load_signing_key(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_signing_key(&path).err().unwrap();
            assert!(
                matches!(err, KeyError::TooOpen { mode: 0o644, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn a_key_file_is_refused_on_the_mode_of_the_file_it_opened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (_, pkcs8) = SigningKey::generate().unwrap();
        write_secret(&path, to_pem(&pkcs8, "PRIVATE KEY").as_bytes()).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let owner = fs::metadata(&path).unwrap().uid();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o440] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match read_secret(&path) {
                Err(KeyError::TooOpen { mode: m, .. }) => {
                    assert_eq!(m, mode);
                    assert!(too_open(mode, owner));
                }
                Ok(_) => assert!(owner == 0 && !too_open(mode, 0), "mode {mode:o}"),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        read_secret(&path).unwrap();
        // Not a file.
        let err = read_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // Too large to be a key.
        let big = dir.path().join("big");
        write_secret(&big, &vec![b'A'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let err = read_secret(&big).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn only_a_file_owned_by_root_may_be_read_by_its_group() {
        for uid in [0, 1000, 65532] {
            for mode in [0o600, 0o400, 0o700] {
                assert!(!too_open(mode, uid), "{uid} {mode:o}");
            }
            for mode in [0o604, 0o644, 0o660, 0o620, 0o610, 0o606, 0o601, 0o777] {
                assert!(too_open(mode, uid), "{uid} {mode:o}");
            }
        }
        for mode in [0o640, 0o440] {
            assert!(
                !too_open(mode, 0),
                "root may share with its group: {mode:o}"
            );
            assert!(too_open(mode, 1000), "nobody else may: {mode:o}");
        }
    }

    #[test]
    fn malformed_key_files_are_clear_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pkcs8) = SigningKey::generate().unwrap();
        let pem = to_pem(&pkcs8, "PRIVATE KEY");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "does not parse"),
            (
                "garbage",
                b"\x00\xffnot a key at all".to_vec(),
                "does not parse",
            ),
            (
                "truncated-pem",
                pem.as_bytes()[..pem.len() / 2].to_vec(),
                "no \"-----END PRIVATE KEY-----\" line",
            ),
            (
                "truncated-der",
                pkcs8[..pkcs8.len() - 5].to_vec(),
                "does not parse",
            ),
            (
                "wrong-label",
                to_pem(&pkcs8, "CERTIFICATE").into_bytes(),
                "labelled \"CERTIFICATE\", expected \"PRIVATE KEY\"",
            ),
            (
                "rsa-label",
                to_pem(&pkcs8, "RSA PRIVATE KEY").into_bytes(),
                "labelled \"RSA PRIVATE KEY\"",
            ),
            (
                "bad-base64",
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".to_vec(),
                "not valid base64",
            ),
            (
                "long-label",
                format!("-----BEGIN {}-----\n", "X".repeat(10_000)).into_bytes(),
                "is labelled",
            ),
        ];
        for (name, bytes, says) in cases {
            let path = dir.path().join(name);
            write_secret(&path, &bytes).unwrap();
            let err = load_signing_key(&path).err().unwrap();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&path.display().to_string()) && msg.contains(says),
                "{name}: {msg}"
            );
            assert!(
                msg.len() < 300,
                "{name}: the message quotes too much: {msg}"
            );
            let err = load_hpke(&path).err().unwrap();
            assert!(
                err.to_string().starts_with(&path.display().to_string()),
                "{name}: {err}"
            );
        }
        let hpke = dir.path().join("short-hpke");
        write_secret(&hpke, b"abcd").unwrap();
        let err = load_hpke(&hpke).err().unwrap().to_string();
        assert!(err.contains("expected 32 bytes"), "{err}");
    }

    #[test]
    fn hpke_keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hpke.key");
        let (sk, pk) = generate_hpke();
        write_secret(&path, hex::encode(hpke_private_bytes(&sk)).as_bytes()).unwrap();
        let loaded = load_hpke(&path).unwrap();
        assert_eq!(
            hpke_public_bytes(&HpkeKem::sk_to_pk(&loaded)),
            hpke_public_bytes(&pk)
        );
    }
}

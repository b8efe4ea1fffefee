//! A policy set as it travels from the broker to the nodes: the signed
//! files of every bundle in force ([`v1::PolicySet`]), and their writing
//! into a node's policy directory.
//!
//! What arrives is only files: a node writes them into a fresh directory
//! beside its own, loads that as it would load its own (every file name,
//! size, signature and version checked by the same code), and only then
//! puts it in place of its policy directory. A peer cannot name a path:
//! a bundle's place comes from its owner, and a file name that is not one
//! a bundle may hold is refused before anything is written.

use std::path::{Path, PathBuf};

use super::{MAX_FILE_BYTES, MAX_FILES};
use crate::protocol::policy::{
    MANIFEST_FILE, Owner, RawBundle, RawSet, SIGNATURE_FILE, SIGNER_FILE,
};
use crate::protocol::proto::v1;

/// Most bundles a distributed set may hold.
pub const MAX_BUNDLES: usize = 1024;
/// Largest distributed set, encoded: what a node accepts from the broker.
pub const MAX_SET_BYTES: usize = 16 << 20;

/// The bundles of `raw` as files, for a set that loaded (a bundle that
/// could not be read has no files to give and is left out).
pub(crate) fn set_files(raw: &RawSet) -> Vec<v1::PolicyBundleFiles> {
    let mut out = Vec::new();
    let mut put = |owner: Owner, b: &RawBundle| {
        let mut files: Vec<v1::PolicyFile> = b
            .files
            .iter()
            .map(|(name, content)| v1::PolicyFile {
                name: name.clone(),
                content: content.clone(),
            })
            .collect();
        for (name, content) in [(SIGNATURE_FILE, &b.signature), (SIGNER_FILE, &b.signer)] {
            if let Some(content) = content {
                files.push(v1::PolicyFile {
                    name: name.to_string(),
                    content: content.clone(),
                });
            }
        }
        out.push(v1::PolicyBundleFiles {
            owner: owner.to_string(),
            files,
        });
    };
    if let Ok(b) = &raw.framework {
        put(Owner::Framework, b);
    }
    if let Ok(agencies) = &raw.agencies {
        for (id, b) in agencies {
            if let (Ok(id), Ok(b)) = (id, b) {
                put(Owner::Agency(id.clone()), b);
            }
        }
    }
    out
}

/// Whether `name` is a file a bundle may hold, and nothing that could name
/// another place.
fn bundle_file_name(name: &str) -> bool {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    plain
        && (name == MANIFEST_FILE
            || name == SIGNATURE_FILE
            || name == SIGNER_FILE
            || (name.ends_with(".cedar") && name.len() > ".cedar".len()))
}

/// Writes `set` as a policy directory at `dir`, which must not exist yet
/// (created 0700, its files 0600). Refuses, before writing anything, a set
/// with too many bundles or files, a file too large, a bundle named twice,
/// an owner that is not one, or a file name a bundle may not hold.
pub fn write_set(set: &v1::PolicySet, dir: &Path) -> Result<(), String> {
    if set.bundles.len() > MAX_BUNDLES {
        return Err(format!(
            "the set holds {} bundles, more than {MAX_BUNDLES}",
            set.bundles.len()
        ));
    }
    let mut places: Vec<(PathBuf, &v1::PolicyBundleFiles)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for b in &set.bundles {
        let owner: Owner = b
            .owner
            .parse()
            .map_err(|_| format!("\"{}\" is not a bundle owner", b.owner.escape_debug()))?;
        if !seen.insert(owner.to_string()) {
            return Err(format!("bundle {owner} is given twice"));
        }
        if b.files.len() > MAX_FILES {
            return Err(format!(
                "bundle {owner} holds {} files, more than {MAX_FILES}",
                b.files.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &b.files {
            if !bundle_file_name(&f.name) {
                return Err(format!(
                    "bundle {owner}: \"{}\" is not a file a bundle holds",
                    f.name.escape_debug()
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(format!("bundle {owner}: {} is given twice", f.name));
            }
            if f.content.len() as u64 > MAX_FILE_BYTES {
                return Err(format!(
                    "bundle {owner}: {} is larger than {MAX_FILE_BYTES} bytes",
                    f.name
                ));
            }
        }
        places.push((dir.join(owner.relative_dir_string()), b));
    }
    let io = |what: &Path, e: std::io::Error| format!("writing {}: {e}", what.display());
    std::fs::create_dir(dir).map_err(|e| io(dir, e))?;
    crate::storage::set_mode(dir, 0o700).map_err(|e| io(dir, e))?;
    for (place, b) in places {
        crate::storage::create_private_dir(&place).map_err(|e| io(&place, e))?;
        for f in &b.files {
            let path = place.join(&f.name);
            crate::storage::write_private(&path, &f.content).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// Copies the policy set at `from` to `dir`, which must not exist yet,
/// through [`write_set`]: only the files a bundle holds, bounded as a set
/// from the broker is. The caller has loaded `from` (every signature
/// checked); the copy goes to a hidden place beside `dir` first and is
/// renamed into place, so a crash leaves no half-written `dir`.
pub fn copy_set(from: &Path, dir: &Path) -> Result<(), String> {
    let set = v1::PolicySet {
        hash: String::new(),
        bundles: set_files(&super::read_set(from)),
    };
    let staging = staging_beside(dir, "seed");
    write_set(&set, &staging)?;
    let placed = std::fs::rename(&staging, dir).and_then(|()| match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => crate::storage::sync_dir(parent),
        _ => Ok(()),
    });
    placed.map_err(|e| {
        let _ = std::fs::remove_dir_all(&staging);
        format!("putting the policy set in place at {}: {e}", dir.display())
    })
}

/// A fresh place beside `dir` for a new policy directory: hidden, named
/// after `dir` and unique.
pub fn staging_beside(dir: &Path, what: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policies".into());
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.join(format!(
        ".{name}.{what}-{}",
        uuid::Uuid::now_v7().as_simple()
    ))
}

/// Puts the directory `new` in place of `dir`: `dir` is moved aside, `new`
/// renamed to it, and the old one removed; if the second rename fails, the
/// old directory is put back.
pub fn replace_dir(new: &Path, dir: &Path) -> std::io::Result<()> {
    let aside = staging_beside(dir, "old");
    let had = dir.exists();
    if had {
        std::fs::rename(dir, &aside)?;
    }
    if let Err(e) = std::fs::rename(new, dir) {
        if had {
            let _ = std::fs::rename(&aside, dir);
        }
        return Err(e);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::storage::sync_dir(parent)?;
    }
    if had {
        std::fs::remove_dir_all(&aside)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &[u8]) -> v1::PolicyFile {
        v1::PolicyFile {
            name: name.into(),
            content: content.to_vec(),
        }
    }

    fn set(owner: &str, files: Vec<v1::PolicyFile>) -> v1::PolicySet {
        v1::PolicySet {
            hash: String::new(),
            bundles: vec![v1::PolicyBundleFiles {
                owner: owner.into(),
                files,
            }],
        }
    }

    #[test]
    fn writes_bundles_where_their_owners_put_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let mut s = set(
            "framework",
            vec![file("bundle.toml", b"x"), file("a.cedar", b"y")],
        );
        s.bundles.push(v1::PolicyBundleFiles {
            owner: "HR/police".into(),
            files: vec![file("SIGNATURE", b"z"), file("signer.crt", b"c")],
        });
        write_set(&s, &dir).unwrap();
        assert_eq!(std::fs::read(dir.join("framework/a.cedar")).unwrap(), b"y");
        assert_eq!(
            std::fs::read(dir.join("agencies/HR/police/signer.crt")).unwrap(),
            b"c"
        );
    }

    #[test]
    fn refuses_names_that_leave_the_bundle_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        for (owner, name) in [
            ("framework", "../x.cedar"),
            ("framework", "/etc/x.cedar"),
            ("framework", ".cedar"),
            ("framework", "notes.txt"),
            ("framework", ".hidden.cedar"),
            ("../HR/police", "bundle.toml"),
            ("HR/../../x", "bundle.toml"),
        ] {
            let dir = tmp.path().join("p");
            let err = write_set(&set(owner, vec![file(name, b"x")]), &dir).unwrap_err();
            assert!(!dir.exists(), "{owner} {name}: {err}");
        }
        let big = vec![0u8; MAX_FILE_BYTES as usize + 1];
        let dir = tmp.path().join("p");
        let err = write_set(&set("framework", vec![file("a.cedar", &big)]), &dir).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        let twice = v1::PolicySet {
            hash: String::new(),
            bundles: vec![set("framework", vec![]).bundles[0].clone(); 2],
        };
        assert!(write_set(&twice, &dir).unwrap_err().contains("twice"));
        assert!(!dir.exists());
    }

    #[test]
    fn replaces_a_directory_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("old"), b"1").unwrap();
        let new = staging_beside(&dir, "incoming");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("new"), b"2").unwrap();
        replace_dir(&new, &dir).unwrap();
        assert!(dir.join("new").exists() && !dir.join("old").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}

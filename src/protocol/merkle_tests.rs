use std::cell::Cell;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::*;

// ---- helpers -------------------------------------------------------

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/merkle")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("vector directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("vector file");
    serde_json::from_str(&text).expect("vector JSON")
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

fn b64_list(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(b64).collect(),
        other => panic!("proof is neither null nor a list: {other}"),
    }
}

fn hash(bytes: &[u8]) -> Hash {
    Hash::try_from(bytes).expect("32-byte hash")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// The eight leaves of roots.json, hashed.
fn reference_leaves() -> Vec<Hash> {
    let roots = load(&vectors().join("roots.json"));
    roots["leaf_inputs_hex"]
        .as_array()
        .expect("leaf list")
        .iter()
        .map(|l| leaf_hash(&unhex(l.as_str().expect("hex string"))))
        .collect()
}

fn tree_of(leaves: &[Hash]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(tree.append(*leaf), i as u64);
    }
    tree
}

fn numbered_leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// RFC 9162 §2.1.1 MTH, transcribed literally (recursive, quadratic-ish);
/// an independent reference for the efficient code.
fn rfc_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&rfc_mth(&d[..k]), &rfc_mth(&d[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]), transcribed literally.
fn rfc_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split_point(n as u64) as usize;
    if m < k {
        let mut p = rfc_path(m, &d[..k]);
        p.push(rfc_mth(&d[k..]));
        p
    } else {
        let mut p = rfc_path(m - k, &d[k..]);
        p.push(rfc_mth(&d[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b), transcribed literally.
fn rfc_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![rfc_mth(d)] };
    }
    let k = split_point(n as u64) as usize;
    if m <= k {
        let mut p = rfc_subproof(m, &d[..k], b);
        p.push(rfc_mth(&d[k..]));
        p
    } else {
        let mut p = rfc_subproof(m - k, &d[k..], false);
        p.push(rfc_mth(&d[..k]));
        p
    }
}

// ---- hashing and roots ----------------------------------------------

#[test]
fn hash_known_answers() {
    // RFC 6962/9162 constants as used by every CT implementation.
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex::encode(leaf_hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
    // The single-entry vectors use the leaf "data" (transparency-dev).
    let single = load(&vectors().join("inclusion/single-entry/matching-root-and-leaf.json"));
    assert_eq!(leaf_hash(b"data").to_vec(), b64(&single["leafHash"]));
}

#[test]
fn roots_json_matches_root_from_leaves_and_memory_tree() {
    let roots = load(&vectors().join("roots.json"));
    let by_size = roots["root_by_size"].as_object().expect("root map");
    let leaves = reference_leaves();
    assert_eq!(leaves.len(), 8);
    assert_eq!(by_size.len(), 9);
    let tree = tree_of(&leaves);
    for (size, want) in by_size {
        let size: usize = size.parse().expect("size key");
        let want = hash(&unhex(want.as_str().expect("hex root")));
        assert_eq!(root_from_leaves(&leaves[..size]), want, "size {size}");
        assert_eq!(tree.root(size as u64), Ok(want), "size {size}");
        assert_eq!(tree_of(&leaves[..size]).current_root(), want, "size {size}");
        assert_eq!(rfc_mth(&leaves[..size]), want, "size {size}");
    }
}

#[test]
fn roots_agree_with_rfc_definition_up_to_130_leaves() {
    let leaves = numbered_leaves(130);
    let tree = tree_of(&leaves);
    for size in 0..=130usize {
        let want = rfc_mth(&leaves[..size]);
        assert_eq!(root_from_leaves(&leaves[..size]), want);
        assert_eq!(tree.root(size as u64), Ok(want));
    }
    assert_eq!(tree.root(131), Err(MissingNode(NodeId::new(0, 130))));
}

#[test]
fn completed_nodes_match_memory_tree() {
    let leaves = numbered_leaves(64);
    let mut tree = MemoryTree::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let i = i as u64;
        let nodes = completed_nodes(&tree, i, *leaf).expect("siblings present");
        assert_eq!(nodes.len(), 1 + i.trailing_ones() as usize);
        tree.append(*leaf);
        for (id, h) in nodes {
            assert_eq!(tree.read_node(id), Ok(h), "node {id}");
        }
    }
    // Exactly the complete nodes: 2n - popcount(n) of them.
    let stored: usize = tree.levels.iter().map(Vec::len).sum();
    assert_eq!(stored, 2 * 64 - 1);
    assert!(tree.read_node(NodeId::new(7, 0)).is_err());
}

// ---- the transparency-dev vectors ------------------------------------

/// The kind of error each corrupted vector must produce. Checking the
/// kind, not just "some error", shows that each corruption is caught by
/// the check meant for it.
fn expected_inclusion_error(desc: &str, err: &ProofError) -> bool {
    use ProofError::*;
    match desc {
        "wrong leaf" | "empty leaf" | "empty root and leaf" => matches!(
            err,
            BadHashLength {
                field: HashField::LeafHash,
                ..
            }
        ),
        "empty root" | "random leaf" | "empty root and random leaf" => matches!(
            err,
            RootMismatch
                | IndexOutOfRange { .. }
                | BadHashLength {
                    field: HashField::Root | HashField::LeafHash,
                    ..
                }
        ),
        "random root" => matches!(err, RootMismatch),
        // One element too many, before its (zero) length is looked at.
        "trailing garbage" | "preceding garbage" => matches!(err, WrongProofLength { .. }),
        "trailing root" | "preceding root" | "removed component" | "inserted component" => {
            matches!(err, WrongProofLength { .. })
        }
        d if d.starts_with("modified proof") => matches!(err, RootMismatch),
        d if d.starts_with("leafIdx") || d.starts_with("treeSize") => matches!(
            err,
            IndexOutOfRange { .. } | WrongProofLength { .. } | RootMismatch
        ),
        _ => false,
    }
}

fn expected_consistency_error(desc: &str, err: &ProofError) -> bool {
    use ProofError::*;
    match desc {
        "wrong root1" => matches!(
            err,
            BadHashLength {
                field: HashField::OldRoot,
                ..
            }
        ),
        "wrong root2" => matches!(
            err,
            BadHashLength {
                field: HashField::NewRoot,
                ..
            }
        ),
        "swapped roots" => matches!(err, OldRootMismatch | NewRootMismatch),
        "empty proof" | "truncated proof" | "trailing root1" | "trailing root2"
        | "preceding root1" | "preceding root2" | "preceding proof @0" => {
            matches!(err, WrongProofLength { .. })
        }
        // One element too many, before its (zero) length is looked at.
        "trailing garbage" | "preceding garbage" => matches!(err, WrongProofLength { .. }),
        "size1 is greater than size2" | "size1 is greater than size2 again" => {
            matches!(err, SizesOutOfOrder { .. })
        }
        "size1 is zero and size2 is not zero"
        | "size1 is zero and does not equal size2"
        | "consistency check on empty tree (size1 is zero) is useless" => {
            matches!(err, FromEmptyTree { .. })
        }
        "sizes are equal (zero) and proof is empty" => matches!(err, NotEmptyRoot),
        "sizes are equal (zero) but roots are not"
        | "sizes are equal (one) but roots are not"
        | "roots do not match and sizes are zero"
        | "roots do not not match and sizes are one" => matches!(err, RootsDiffer { .. }),
        "sizes do not watch and proof is empty" => matches!(err, WrongProofLength { .. }),
        "sizes match but proof is not empty and sizes are zero"
        | "sizes match but proof is not empty and sizes are one" => {
            matches!(err, WrongProofLength { got: 1, want: 0 })
        }
        d if d.starts_with("modified proof") => {
            matches!(err, OldRootMismatch | NewRootMismatch)
        }
        d if d.starts_with("size1") || d.starts_with("size2") => matches!(
            err,
            SizesOutOfOrder { .. }
                | FromEmptyTree { .. }
                | WrongProofLength { .. }
                | OldRootMismatch
                | NewRootMismatch
                | RootsDiffer { .. }
        ),
        _ => false,
    }
}

#[test]
fn inclusion_vectors() {
    let files = json_files(&vectors().join("inclusion"));
    assert_eq!(files.len(), 98, "inclusion vector count");
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let v = load(file);
        let index = v["leafIdx"].as_u64().expect("leafIdx");
        let size = v["treeSize"].as_u64().expect("treeSize");
        let desc = v["desc"].as_str().expect("desc");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let proof = b64_list(&v["proof"]);
        let result =
            verify_inclusion_bytes(index, size, &b64(&v["leafHash"]), &proof, &b64(&v["root"]));
        match result {
            Ok(()) => {
                assert!(!want_err, "{}: verified but must fail", file.display());
                passed += 1;
            }
            Err(err) => {
                assert!(want_err, "{}: must verify: {err}", file.display());
                assert!(
                    expected_inclusion_error(desc, &err),
                    "{}: wrong kind of error {err:?}",
                    file.display()
                );
                failed += 1;
            }
        }
    }
    assert_eq!((passed, failed), (6, 92));
}

#[test]
fn consistency_vectors() {
    let files = json_files(&vectors().join("consistency"));
    assert_eq!(files.len(), 98, "consistency vector count");
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let v = load(file);
        let size1 = v["size1"].as_u64().expect("size1");
        let size2 = v["size2"].as_u64().expect("size2");
        let desc = v["desc"].as_str().expect("desc");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let proof = b64_list(&v["proof"]);
        let result =
            verify_consistency_bytes(size1, size2, &b64(&v["root1"]), &b64(&v["root2"]), &proof);
        match result {
            Ok(()) => {
                assert!(!want_err, "{}: verified but must fail", file.display());
                passed += 1;
            }
            Err(err) => {
                assert!(want_err, "{}: must verify: {err}", file.display());
                assert!(
                    expected_consistency_error(desc, &err),
                    "{}: wrong kind of error {err:?}",
                    file.display()
                );
                failed += 1;
            }
        }
    }
    assert_eq!((passed, failed), (6, 92));
}

#[test]
fn generated_proofs_equal_the_happy_path_vectors() {
    let leaves = reference_leaves();
    let tree = tree_of(&leaves);
    for n in 0..5 {
        let v = load(&vectors().join(format!("inclusion/{n}/happy-path.json")));
        let index = v["leafIdx"].as_u64().expect("leafIdx");
        let size = v["treeSize"].as_u64().expect("treeSize");
        let proof = inclusion_proof(&tree, index, size).expect("inclusion proof");
        let want: Vec<Hash> = b64_list(&v["proof"]).iter().map(|p| hash(p)).collect();
        assert_eq!(proof, want, "inclusion {n}");
        assert_eq!(leaves[index as usize].to_vec(), b64(&v["leafHash"]));
        assert_eq!(tree.root(size).expect("root").to_vec(), b64(&v["root"]));

        let v = load(&vectors().join(format!("consistency/{n}/happy-path.json")));
        let size1 = v["size1"].as_u64().expect("size1");
        let size2 = v["size2"].as_u64().expect("size2");
        let proof = consistency_proof(&tree, size1, size2).expect("consistency proof");
        let want: Vec<Hash> = b64_list(&v["proof"]).iter().map(|p| hash(p)).collect();
        assert_eq!(proof, want, "consistency {n}");
        assert_eq!(tree.root(size1).expect("root1").to_vec(), b64(&v["root1"]));
        assert_eq!(tree.root(size2).expect("root2").to_vec(), b64(&v["root2"]));
    }
}

// ---- generated proofs, exhaustively for small trees -------------------

#[test]
fn inclusion_proofs_for_every_leaf_of_trees_up_to_64() {
    let leaves = numbered_leaves(64);
    let tree = tree_of(&leaves);
    for size in 1..=64u64 {
        let root = root_from_leaves(&leaves[..size as usize]);
        for index in 0..size {
            let proof = inclusion_proof(&tree, index, size).expect("proof");
            assert_eq!(proof, rfc_path(index as usize, &leaves[..size as usize]));
            let leaf = &leaves[index as usize];
            assert_eq!(verify_inclusion(index, size, leaf, &proof, &root), Ok(()));
            // Corruptions.
            let other = leaf_hash(b"other");
            assert!(verify_inclusion(index, size, &other, &proof, &root).is_err());
            assert!(verify_inclusion(index + 1, size, leaf, &proof, &root).is_err());
            // (A different size with the same proof shape can verify: the
            // size is authenticated by the checkpoint, not by the proof.)
            assert_eq!(
                verify_inclusion(index, index, leaf, &proof, &root),
                Err(ProofError::IndexOutOfRange { index, size: index })
            );
            if let Some((first, rest)) = proof.split_first() {
                assert_eq!(
                    verify_inclusion(index, size, leaf, rest, &root),
                    Err(ProofError::WrongProofLength {
                        got: rest.len(),
                        want: proof.len()
                    })
                );
                let mut bad = proof.clone();
                bad[0] = node_hash(first, first);
                assert_eq!(
                    verify_inclusion(index, size, leaf, &bad, &root),
                    Err(ProofError::RootMismatch)
                );
            }
        }
        assert!(matches!(
            inclusion_proof(&tree, size, size),
            Err(ProveError::IndexOutOfRange { .. })
        ));
    }
}

#[test]
fn consistency_proofs_for_every_pair_of_sizes_up_to_64() {
    let leaves = numbered_leaves(64);
    let tree = tree_of(&leaves);
    for size2 in 1..=64u64 {
        let root2 = root_from_leaves(&leaves[..size2 as usize]);
        for size1 in 1..=size2 {
            let root1 = root_from_leaves(&leaves[..size1 as usize]);
            let proof = consistency_proof(&tree, size1, size2).expect("proof");
            assert_eq!(
                proof,
                rfc_subproof(size1 as usize, &leaves[..size2 as usize], true)
            );
            assert_eq!(
                verify_consistency(size1, size2, &root1, &root2, &proof),
                Ok(())
            );
            if size1 == size2 {
                continue;
            }
            assert!(verify_consistency(size1, size2, &root2, &root1, &proof).is_err());
            let forked = leaf_hash(b"fork");
            assert!(verify_consistency(size1, size2, &forked, &root2, &proof).is_err());
            assert!(verify_consistency(size1, size2, &root1, &forked, &proof).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 0x10;
                assert!(
                    verify_consistency(size1, size2, &root1, &root2, &bad).is_err(),
                    "{size1}->{size2} element {i}"
                );
            }
            assert!(verify_consistency(size1, size2, &root1, &root2, &proof[1..]).is_err());
        }
    }
    assert!(matches!(
        consistency_proof(&tree, 0, 5),
        Err(ProveError::BadSizes { .. })
    ));
    assert!(matches!(
        consistency_proof(&tree, 6, 5),
        Err(ProveError::BadSizes { .. })
    ));
    assert!(matches!(
        consistency_proof(&tree, 5, 65),
        Err(ProveError::Read(MissingNode(_)))
    ));
}

#[test]
fn equal_sizes_and_the_empty_tree() {
    let r = leaf_hash(b"x");
    assert_eq!(verify_consistency(3, 3, &r, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &r, &empty_root(), &[]),
        Err(ProofError::RootsDiffer { size: 3 })
    );
    assert_eq!(
        verify_consistency(0, 0, &empty_root(), &empty_root(), &[]),
        Ok(())
    );
    assert_eq!(
        verify_consistency(0, 0, &r, &r, &[]),
        Err(ProofError::NotEmptyRoot)
    );
    assert_eq!(
        verify_consistency(0, 4, &empty_root(), &r, &[]),
        Err(ProofError::FromEmptyTree { size2: 4 })
    );
    assert_eq!(
        verify_inclusion(0, 0, &r, &[], &empty_root()),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
}

#[test]
fn unchecked_bytes_are_length_checked() {
    let leaves = numbered_leaves(7);
    let tree = tree_of(&leaves);
    let root = tree.current_root();
    let proof: Vec<Vec<u8>> = inclusion_proof(&tree, 2, 7)
        .expect("proof")
        .iter()
        .map(|h| h.to_vec())
        .collect();
    assert_eq!(
        verify_inclusion_bytes(2, 7, &leaves[2], &proof, &root),
        Ok(())
    );
    let mut short = proof.clone();
    short[1].pop();
    assert_eq!(
        verify_inclusion_bytes(2, 7, &leaves[2], &short, &root),
        Err(ProofError::BadHashLength {
            field: HashField::ProofNode(1),
            len: 31
        })
    );
    assert_eq!(
        verify_inclusion_bytes(2, 7, &leaves[2], &proof, &root[..31]),
        Err(ProofError::BadHashLength {
            field: HashField::Root,
            len: 31
        })
    );

    let root3 = tree.root(3).expect("root3");
    let proof: Vec<Vec<u8>> = consistency_proof(&tree, 3, 7)
        .expect("proof")
        .iter()
        .map(|h| h.to_vec())
        .collect();
    assert_eq!(
        verify_consistency_bytes(3, 7, &root3, &root, &proof),
        Ok(())
    );
    let mut long = proof.clone();
    long[0].push(0);
    assert_eq!(
        verify_consistency_bytes(3, 7, &root3, &root, &long),
        Err(ProofError::BadHashLength {
            field: HashField::ProofNode(0),
            len: 33
        })
    );
    assert_eq!(
        verify_consistency_bytes(3, 7, &root3, &[], &proof),
        Err(ProofError::BadHashLength {
            field: HashField::NewRoot,
            len: 0
        })
    );
    assert_eq!(
        ProofError::BadHashLength {
            field: HashField::ProofNode(1),
            len: 31
        }
        .to_string(),
        "proof hash 1 is 31 bytes, a SHA-256 hash is 32"
    );
}

#[test]
fn huge_sizes_do_not_overflow() {
    let h = leaf_hash(b"h");
    for (index, size) in [
        (u64::MAX - 1, u64::MAX),
        (0, u64::MAX),
        (1 << 63, u64::MAX),
        ((1 << 63) - 1, 1 << 63),
    ] {
        let (inner, border) = decompose(index, size);
        let proof = vec![h; inner + border];
        assert!(root_from_inclusion_proof(index, size, &h, &proof).is_ok());
        assert!(matches!(
            verify_inclusion(index, size, &h, &[], &h),
            Err(ProofError::WrongProofLength { .. })
        ));
    }
    for (size1, size2) in [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX)] {
        assert!(matches!(
            verify_consistency(size1, size2, &h, &h, &[]),
            Err(ProofError::WrongProofLength { .. })
        ));
    }
}

// ---- cost --------------------------------------------------------------

/// Counts the node reads of the tree behind it.
struct Counting<'a> {
    tree: &'a MemoryTree,
    reads: Cell<usize>,
}

impl HashReader for Counting<'_> {
    type Error = MissingNode;
    fn read_node(&self, node: NodeId) -> Result<Hash, MissingNode> {
        self.reads.set(self.reads.get() + 1);
        self.tree.read_node(node)
    }
}

#[test]
fn proofs_read_logarithmically_many_nodes() {
    let n = 100_003u64; // not a power of two, so the right edge is ragged
    let leaves = numbered_leaves(n);
    let tree = tree_of(&leaves);
    let counting = Counting {
        tree: &tree,
        reads: Cell::new(0),
    };
    let log = 64 - n.leading_zeros() as usize; // ceil(log2 n) = 17
    let bound = 2 * log + 1;
    for index in [0, 1, 65_535, 65_536, 99_999, n - 2, n - 1] {
        counting.reads.set(0);
        let proof = inclusion_proof(&counting, index, n).expect("proof");
        assert!(counting.reads.get() <= bound, "index {index}");
        let root = tree.current_root();
        assert_eq!(
            verify_inclusion(index, n, &leaves[index as usize], &proof, &root),
            Ok(())
        );
    }
    for size1 in [1, 2, 3, 1000, 65_536, 65_537, n - 1] {
        counting.reads.set(0);
        let proof = consistency_proof(&counting, size1, n).expect("proof");
        assert!(counting.reads.get() <= bound, "size1 {size1}");
        let root1 = tree.root(size1).expect("root1");
        assert_eq!(
            verify_consistency(size1, n, &root1, &tree.current_root(), &proof),
            Ok(())
        );
    }
    counting.reads.set(0);
    assert_eq!(tree_root(&counting, n), Ok(root_from_leaves(&leaves)));
    assert_eq!(counting.reads.get(), n.count_ones() as usize);
}

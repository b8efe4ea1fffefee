//! Finding the first bad index.

use prost::Message as _;

use crate::protocol::merkle::{self, Hash, MemoryTree};
use crate::protocol::proto::v1;

use super::*;

// ---- finding the first bad index ----------------------------------------------

/// Binary search for the first index at which the entries a broker serves
/// stop being the leaves a checkpoint commits to.
///
/// "The first `k` served entries are the first `k` leaves of the checkpoint's
/// tree" is monotonic in `k` (true up to the first bad index, false after),
/// and it can be checked with a consistency proof from size `k` to the
/// checkpoint's size against the root recomputed from the first `k` served
/// entries ([`prefix_in_tree`]). Starting from a length known to be good (0,
/// or the size of a checkpoint this auditor verified and saved) and one known
/// to be bad (the checkpoint's size, when the recomputed root differs), the
/// search needs `log2(size)` proofs. A broker that refuses or forges a proof
/// can only move the blame earlier, never hide a bad entry: every prefix
/// accepted is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixSearch {
    good: u64,
    bad: u64,
}

impl PrefixSearch {
    /// `good`: a prefix length known to be in the tree; `bad`: a larger one
    /// known not to be. A `good` that is not below `bad` is lowered to
    /// `bad − 1`.
    pub fn new(good: u64, bad: u64) -> PrefixSearch {
        let bad = bad.max(1);
        PrefixSearch {
            good: good.min(bad - 1),
            bad,
        }
    }

    /// The next prefix length to check, or `None` when the search is over.
    pub fn next_probe(&self) -> Option<u64> {
        (self.bad - self.good > 1).then(|| self.good + (self.bad - self.good) / 2)
    }

    /// Records whether the prefix of length `probe` is in the tree.
    pub fn record(&mut self, probe: u64, in_tree: bool) {
        if probe <= self.good || probe >= self.bad {
            return;
        }
        if in_tree {
            self.good = probe;
        } else {
            self.bad = probe;
        }
    }

    /// The first bad index: the longest proven prefix's length. Final once
    /// [`PrefixSearch::next_probe`] is `None`.
    pub fn first_bad_index(&self) -> u64 {
        self.good
    }
}

/// Checks that the first `k` served leaves (their hashes in `served`) are the
/// first `k` leaves of the tree of `size` leaves with root `root`, with a
/// consistency proof from `k` to `size`. `0 < k < size`.
pub fn prefix_in_tree<P: AsRef<[u8]>>(
    served: &MemoryTree,
    k: u64,
    size: u64,
    root: &Hash,
    proof: &[P],
) -> Result<(), merkle::ProofError> {
    let prefix_root = served
        .root(k)
        .map_err(|_| merkle::ProofError::IndexOutOfRange {
            index: k,
            size: served.size(),
        })?;
    merkle::verify_consistency_bytes(k, size, &prefix_root, root, proof)
}

/// A log that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log inconsistent: {}", self.describe())]
pub struct Inconsistent {
    /// The first index whose entry is wrong, missing or unprovable, when one
    /// could be named.
    pub first_bad_index: Option<u64>,
    /// What is wrong, the problem at the first bad index first.
    pub problems: Vec<String>,
}

impl Inconsistent {
    fn describe(&self) -> String {
        let all = self.problems.join("; also: ");
        match self.first_bad_index {
            Some(i) => format!("first bad index {i}: {all}"),
            None => all,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub(super) index: Option<u64>,
    detail: String,
}

impl Finding {
    pub(super) fn at(index: u64, detail: String) -> Finding {
        Finding {
            index: Some(index),
            detail,
        }
    }
    pub(super) fn global(detail: String) -> Finding {
        Finding {
            index: None,
            detail,
        }
    }
}

pub(super) fn inconsistent(mut findings: Vec<Finding>) -> Inconsistent {
    // Indexed findings first, lowest index first; then the others in order.
    findings.sort_by_key(|f| f.index.unwrap_or(u64::MAX));
    Inconsistent {
        first_bad_index: findings.first().and_then(|f| f.index),
        problems: findings.into_iter().map(|f| f.detail).collect(),
    }
}

pub(super) fn short_hash(h: &[u8]) -> String {
    let hex = hex::encode(h);
    if hex.len() > 16 {
        format!("{}…", &hex[..16])
    } else {
        hex
    }
}

/// Runs [`PrefixSearch`] against the broker and explains the index found.
pub(super) async fn search_first_bad(
    auditor: &mut Auditor,
    served: &MemoryTree,
    size: u64,
    root: &Hash,
    good: u64,
    bad: u64,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut search = PrefixSearch::new(good, bad);
    while let Some(k) = search.next_probe() {
        let proof = auditor.prove_consistency(k, size).await?;
        findings.extend(check_proof_checkpoint(&auditor.trust, &proof, root));
        let ok = prefix_in_tree(served, k, size, root, &proof.proof).is_ok();
        search.record(k, ok);
    }
    let f = search.first_bad_index();
    if f >= size {
        return Ok(findings);
    }
    let served_hash = (f < served.size()).then(|| served.read_leaf(f)).flatten();
    // Which leaf does the checkpoint hold at f? An inclusion proof says.
    let committed = match grpc(
        "ProveInclusion",
        auditor
            .api
            .prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::Index(f)),
                tree_size: size,
            })
            .await,
    ) {
        Ok(p) => {
            let h = merkle::leaf_hash(&p.leaf);
            if p.index == f
                && p.tree_size == size
                && merkle::verify_inclusion_bytes(f, size, &h, &p.proof, root).is_ok()
            {
                Some((h, p.leaf))
            } else {
                None
            }
        }
        Err(_) => None,
    };
    let served_text = match served_hash {
        Some(h) => {
            let ev = match auditor.entries(f, f + 1).await {
                Ok(e) => e
                    .into_iter()
                    .find(|e| e.index == f)
                    .and_then(|e| v1::AuditEvent::decode(e.leaf.as_slice()).ok()),
                Err(_) => None,
            };
            match ev {
                Some(ev) => format!(
                    "the entry served at {f} ({}, leaf {}) is not",
                    event_summary(&ev),
                    short_hash(&h)
                ),
                None => format!("the entry served at {f} (leaf {}) is not", short_hash(&h)),
            }
        }
        None => format!("the broker serves no entry {f}"),
    };
    let detail = match committed {
        Some((h, leaf)) => {
            let what = v1::AuditEvent::decode(leaf.as_slice())
                .map(|ev| event_summary(&ev))
                .unwrap_or_else(|_| "not an AuditEvent".to_string());
            format!(
                "entries 0..{f} are proven in the checkpoint of size {size}, but {served_text}: \
                 the checkpoint commits to leaf {} there ({what})",
                short_hash(&h)
            )
        }
        None => format!(
            "entries 0..{f} are proven in the checkpoint of size {size}, but {served_text}, \
             and the broker gives no valid inclusion proof for index {f}"
        ),
    };
    findings.push(Finding::at(f, detail));
    Ok(findings)
}

trait ReadLeaf {
    fn read_leaf(&self, index: u64) -> Option<Hash>;
}

impl ReadLeaf for MemoryTree {
    fn read_leaf(&self, index: u64) -> Option<Hash> {
        use merkle::HashReader as _;
        self.read_node(merkle::NodeId::new(0, index)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::test_support::*;

    /// Runs the search as `verify_log` does, with `honest` as the broker's
    /// real tree; returns the index and the number of proofs asked for.
    fn search(honest: &MemoryTree, served: &MemoryTree, good: u64, bad: u64) -> (u64, usize) {
        let size = honest.size();
        let root = honest.current_root();
        let mut s = PrefixSearch::new(good, bad);
        let mut probes = 0;
        while let Some(k) = s.next_probe() {
            probes += 1;
            let proof = merkle::consistency_proof(honest, k, size).expect("proof");
            s.record(k, prefix_in_tree(served, k, size, &root, &proof).is_ok());
        }
        (s.first_bad_index(), probes)
    }

    #[test]
    fn finds_the_first_altered_leaf_in_every_position() {
        for n in 1..=40u64 {
            let honest_leaves = leaves(n, "e");
            let honest = tree(&honest_leaves);
            let log2 = 64 - n.leading_zeros() as usize;
            for j in 0..n {
                let mut served_leaves = honest_leaves.clone();
                served_leaves[j as usize] = merkle::leaf_hash(b"forged");
                // A second alteration later must not hide the first.
                if j + 3 < n {
                    served_leaves[(j + 3) as usize] = merkle::leaf_hash(b"forged too");
                }
                let served = tree(&served_leaves);
                assert_ne!(served.current_root(), honest.current_root());
                let (found, probes) = search(&honest, &served, 0, n);
                assert_eq!(found, j, "n {n}, altered {j}");
                assert!(probes <= log2, "n {n}: {probes} proofs");
            }
        }
    }

    #[test]
    fn a_known_good_prefix_narrows_the_search() {
        let honest_leaves = leaves(100, "e");
        let honest = tree(&honest_leaves);
        let mut served_leaves = honest_leaves.clone();
        served_leaves[77] = merkle::leaf_hash(b"forged");
        let served = tree(&served_leaves);
        assert_eq!(search(&honest, &served, 60, 100).0, 77);
        // A wrong "good" bound beyond the bad one is clamped, not trusted.
        assert_eq!(PrefixSearch::new(200, 100).next_probe(), None);
        assert_eq!(PrefixSearch::new(200, 100).first_bad_index(), 99);
    }

    #[test]
    fn missing_entries_are_found_where_they_stop() {
        // The broker served only 30 of 50 entries, the first 30 correct:
        // the prefix of 31 cannot be checked, so the bound is 31.
        let honest_leaves = leaves(50, "e");
        let honest = tree(&honest_leaves);
        let served = tree(&honest_leaves[..30]);
        assert_eq!(search(&honest, &served, 0, 31).0, 30);
        // With an alteration among the 30 it is that one.
        let mut short = honest_leaves[..30].to_vec();
        short[4] = merkle::leaf_hash(b"x");
        assert_eq!(search(&honest, &tree(&short), 0, 31).0, 4);
    }

    #[test]
    fn a_forged_proof_cannot_clear_a_bad_prefix() {
        let honest = tree(&leaves(16, "e"));
        let mut served_leaves = leaves(16, "e");
        served_leaves[3] = merkle::leaf_hash(b"forged");
        let served = tree(&served_leaves);
        let root = honest.current_root();
        // A broker answering with the proof for the served tree instead.
        let forged = merkle::consistency_proof(&served, 8, 16).expect("proof");
        assert!(prefix_in_tree(&served, 8, 16, &root, &forged).is_err());
        let honest_proof = merkle::consistency_proof(&honest, 3, 16).expect("proof");
        assert!(prefix_in_tree(&served, 3, 16, &root, &honest_proof).is_ok());
        // Beyond what was served.
        assert!(prefix_in_tree(&tree(&leaves(2, "e")), 3, 16, &root, &honest_proof).is_err());
    }

    #[test]
    fn inconsistency_names_the_lowest_index_first() {
        let e = inconsistent(vec![
            Finding::global("fork".into()),
            Finding::at(17, "leaf differs".into()),
            Finding::at(9, "missing".into()),
        ]);
        assert_eq!(e.first_bad_index, Some(9));
        assert_eq!(
            e.to_string(),
            "log inconsistent: first bad index 9: missing; also: leaf differs; also: fork"
        );
        let e = inconsistent(vec![Finding::global("fork".into())]);
        assert_eq!(e.to_string(), "log inconsistent: fork");
    }
}

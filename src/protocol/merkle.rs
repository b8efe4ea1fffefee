//! RFC 9162 Merkle tree hashing, inclusion proofs and consistency proofs.
//!
//! The audit log is a transparency log: each audit event is a leaf of a
//! Merkle tree, the broker publishes signed checkpoints of the tree (see
//! [`crate::protocol::note`]), and anyone holding a checkpoint can be convinced that an
//! event is in the log (inclusion proof) or that a later checkpoint extends an
//! earlier one without rewriting history (consistency proof). Nodes cosign a
//! checkpoint only after checking its consistency with the last one they saw,
//! so the broker cannot show different histories to different countries.
//!
//! This module is the pure core of that: SHA-256 with the RFC 9162 domain
//! separation (leaf = `SHA-256(0x00 || leaf)`, node =
//! `SHA-256(0x01 || left || right)`), proof generation and proof verification.
//! It does no I/O and reads no clock. It is tested against the
//! transparency-dev/merkle vectors in `tests/vectors/merkle`.
//!
//! # Persisting the tree
//!
//! Proof generation never rebuilds the tree. It reads node hashes through the
//! [`HashReader`] trait, one hash per [`NodeId`] `(level, index)`: the root of
//! the *perfect* subtree covering leaves `index·2^level .. (index+1)·2^level`.
//! A store needs exactly the nodes of **complete** subtrees:
//!
//! - level 0, index `i`: the leaf hash of entry `i`;
//! - level `l`, index `i`: stored once leaf `(i+1)·2^l − 1` is appended; it
//!   never changes afterwards.
//!
//! Appending leaf `n` completes `1 + trailing_ones(n)` nodes, returned by
//! [`completed_nodes`]; write them in the same transaction as the leaf. A tree
//! of `n` leaves holds fewer than `2n` nodes. Nodes that would cover leaves
//! beyond the tree size (the "ephemeral" right edge) are never stored: roots
//! and proofs at any size `≤ n` are composed from at most `log2(n)` stored
//! perfect subtrees, so [`inclusion_proof`], [`consistency_proof`] and
//! [`tree_root`] each read `O(log n)` nodes and hash `O(log n)` times.
//!
//! # Verifying
//!
//! [`verify_inclusion`] and [`verify_consistency`] take typed hashes; proofs
//! that arrive from a peer as byte strings go through
//! [`verify_inclusion_bytes`] and [`verify_consistency_bytes`], which check
//! every length and report which value was wrong. Errors say precisely what
//! failed ([`ProofError`]); a different root for the same tree size is
//! reported as such ([`ProofError::RootsDiffer`]), because it is evidence of
//! a fork.
//!
//! [`MemoryTree`] is the reference in-memory store: tests use it, and a
//! persistent store (sled trees keyed by `(level, index)`) should behave
//! exactly like it.

use std::fmt;

use ring::digest;

/// Length of a SHA-256 hash in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node or a tree root.
pub type Hash = [u8; HASH_LEN];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The RFC 9162 leaf hash `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(leaf);
    finish(ctx)
}

/// The RFC 9162 interior node hash `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&digest::SHA256))
}

fn finish(ctx: digest::Context) -> Hash {
    let digest = ctx.finish();
    let mut out = [0u8; HASH_LEN];
    // SHA-256 digests are always HASH_LEN bytes.
    out.copy_from_slice(digest.as_ref());
    out
}

/// The Merkle tree hash (MTH) of a list of leaf hashes, computed from
/// scratch: `n − 1` node hashes and `O(log n)` memory.
///
/// This is the definition auditors re-derive a root with; the broker uses
/// stored nodes instead ([`tree_root`]).
pub fn root_from_leaves(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::default();
    for leaf in leaf_hashes {
        frontier.push(*leaf);
    }
    frontier.root()
}

/// The root of a growing list of leaf hashes, in `O(log n)` memory: for a
/// check that streams over a long log instead of holding every hash.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// Perfect subtrees of strictly decreasing size, left to right: the
    /// binary decomposition of the number of leaves seen so far.
    stack: Vec<(u64, Hash)>,
}

impl Frontier {
    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut size = 1u64;
        let mut hash = leaf;
        while let Some(&(left_size, left)) = self.stack.last() {
            if left_size != size {
                break;
            }
            self.stack.pop();
            hash = node_hash(&left, &hash);
            size *= 2;
        }
        self.stack.push((size, hash));
    }

    /// The Merkle tree hash of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        fold_from_right(self.stack.iter().map(|(_, hash)| hash))
    }
}

/// Combines perfect subtrees listed left to right (decreasing sizes) into the
/// root of their concatenation, as RFC 9162's recursion does: the right part
/// of each split is folded first.
fn fold_from_right<'a>(hashes: impl DoubleEndedIterator<Item = &'a Hash>) -> Hash {
    let mut hashes = hashes.rev();
    let Some(last) = hashes.next() else {
        return empty_root();
    };
    hashes.fold(*last, |acc, left| node_hash(left, &acc))
}

/// The position of a stored node: the perfect subtree at `level` (0 = leaves)
/// covering leaves `index·2^level .. (index+1)·2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Height above the leaves; 0 for a leaf hash, at most 63.
    pub level: u8,
    /// Index among the nodes of this level, counted from the left.
    pub index: u64,
}

impl NodeId {
    /// The node at `level` and `index`.
    pub const fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.level, self.index)
    }
}

/// Read access to the stored node hashes of a tree (see the module docs for
/// which nodes exist).
///
/// Each call should be a point lookup, O(1) or O(log) in the store. Nodes are
/// immutable once written, so reads need no snapshot isolation.
pub trait HashReader {
    /// The store's error, e.g. an I/O error or a missing node.
    type Error;

    /// The hash of the complete subtree `node`. A node that is not (yet)
    /// complete must be an error, never a made-up value.
    fn read_node(&self, node: NodeId) -> Result<Hash, Self::Error>;
}

impl<R: HashReader + ?Sized> HashReader for &R {
    type Error = R::Error;

    fn read_node(&self, node: NodeId) -> Result<Hash, Self::Error> {
        (**self).read_node(node)
    }
}

/// The nodes completed by appending leaf `index` with hash `leaf_hash` to a
/// tree of `index` leaves: the leaf itself at level 0, then one parent per
/// trailing one bit of `index`, bottom up.
///
/// Reads the left siblings (already complete) from `reader`; a persistent
/// store writes the returned nodes together with the leaf.
pub fn completed_nodes<R: HashReader>(
    reader: &R,
    index: u64,
    leaf_hash: Hash,
) -> Result<Vec<(NodeId, Hash)>, R::Error> {
    let mut nodes = vec![(NodeId::new(0, index), leaf_hash)];
    let mut hash = leaf_hash;
    let mut position = index;
    let mut level = 0u8;
    while position & 1 == 1 {
        let left = reader.read_node(NodeId::new(level, position - 1))?;
        hash = node_hash(&left, &hash);
        position >>= 1;
        level += 1;
        nodes.push((NodeId::new(level, position), hash));
    }
    Ok(nodes)
}

/// The root of the first `size` leaves of the tree behind `reader`, from at
/// most `log2(size) + 1` stored nodes.
pub fn tree_root<R: HashReader>(reader: &R, size: u64) -> Result<Hash, R::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(reader, 0, size)
}

/// Largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The stored perfect subtree of `size` (a power of two) leaves at `start`
/// (a multiple of `size`).
fn perfect_hash<R: HashReader>(reader: &R, start: u64, size: u64) -> Result<Hash, R::Error> {
    debug_assert!(size.is_power_of_two() && start % size == 0);
    let level = size.trailing_zeros();
    // `trailing_zeros` of a non-zero u64 is at most 63.
    reader.read_node(NodeId::new(level as u8, start >> level))
}

/// MTH of leaves `start..end`, a subtree of RFC 9162's recursion: `start` is a
/// multiple of a power of two at least `end − start`. Composed from the
/// perfect subtrees of the binary decomposition of `end − start`.
fn range_hash<R: HashReader>(reader: &R, start: u64, end: u64) -> Result<Hash, R::Error> {
    let mut parts: Vec<Hash> = Vec::with_capacity(64);
    let mut position = start;
    while position < end {
        let remaining = end - position;
        let size = 1u64 << (63 - remaining.leading_zeros());
        parts.push(perfect_hash(reader, position, size)?);
        position += size;
    }
    Ok(fold_from_right(parts.iter()))
}

/// Why a proof could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ProveError<E> {
    /// Inclusion of a leaf at or beyond the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// Consistency proofs exist for `0 < size1 ≤ size2` only.
    #[error("no consistency proof from tree size {size1} to tree size {size2}")]
    BadSizes { size1: u64, size2: u64 },
    /// The store failed, or lacks a node (e.g. a size beyond the tree).
    #[error("reading a node hash: {0}")]
    Read(#[source] E),
}

/// The RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of the
/// first `size` leaves, ordered from the leaf's sibling up to the root's
/// child. Reads at most `2·log2(size) + 1` nodes.
pub fn inclusion_proof<R: HashReader>(
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    // Walk RFC 9162's PATH(m, D[lo:hi]) recursion from the top, collecting
    // the sibling subtrees; the proof lists them bottom up.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        let mid = lo + k;
        if index < mid {
            // Only the first right sibling can be imperfect: afterwards the
            // range is a perfect subtree.
            proof.push(range_hash(reader, mid, hi).map_err(ProveError::Read)?);
            hi = mid;
        } else {
            proof.push(perfect_hash(reader, lo, k).map_err(ProveError::Read)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The RFC 9162 §2.1.4.1 consistency proof from the tree of the first `size1`
/// leaves to the tree of the first `size2` leaves; empty when the sizes are
/// equal. Reads at most `2·log2(size2) + 1` nodes.
pub fn consistency_proof<R: HashReader>(
    reader: &R,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProveError<R::Error>> {
    if size1 == 0 || size1 > size2 {
        return Err(ProveError::BadSizes { size1, size2 });
    }
    // RFC 9162's SUBPROOF(m, D[lo:hi], b), iteratively; `whole` is b: true
    // while the range is the whole new tree's left edge and the old tree's
    // root need not be sent.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, size2);
    let mut whole = true;
    loop {
        if size1 == hi {
            if !whole {
                // A perfect subtree: reaching it took at least one step left.
                proof.push(range_hash(reader, lo, hi).map_err(ProveError::Read)?);
            }
            break;
        }
        let k = split_point(hi - lo);
        let mid = lo + k;
        if size1 <= mid {
            proof.push(range_hash(reader, mid, hi).map_err(ProveError::Read)?);
            hi = mid;
        } else {
            proof.push(perfect_hash(reader, lo, k).map_err(ProveError::Read)?);
            lo = mid;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Which value of a proof check had the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashField {
    /// The leaf hash of an inclusion proof.
    LeafHash,
    /// The root of an inclusion proof.
    Root,
    /// `root1`, the older root of a consistency proof.
    OldRoot,
    /// `root2`, the newer root of a consistency proof.
    NewRoot,
    /// The proof element at this position.
    ProofNode(usize),
}

impl fmt::Display for HashField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashField::LeafHash => f.write_str("leaf hash"),
            HashField::Root => f.write_str("root"),
            HashField::OldRoot => f.write_str("old root"),
            HashField::NewRoot => f.write_str("new root"),
            HashField::ProofNode(i) => write!(f, "proof hash {i}"),
        }
    }
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Inclusion of a leaf at or beyond the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof claiming the tree shrank.
    #[error("tree size {size1} is larger than the later tree size {size2}")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    /// Every tree extends the empty tree, so such a "proof" proves nothing; a
    /// verifier that has seen no checkpoint has nothing to check.
    #[error("no consistency proof from the empty tree (to size {size2})")]
    FromEmptyTree { size2: u64 },
    /// The proof has the wrong number of hashes for the sizes and index.
    #[error("proof has {got} hashes, this proof needs exactly {want}")]
    WrongProofLength { got: usize, want: usize },
    /// A value that is hashed or compared with a hash is not 32 bytes.
    #[error("{field} is {len} bytes, a SHA-256 hash is {HASH_LEN}")]
    BadHashLength { field: HashField, len: usize },
    /// A root for tree size 0 other than SHA-256 of the empty string.
    #[error("the root of the empty tree is SHA-256 of the empty string")]
    NotEmptyRoot,
    /// Two different roots for the same tree size: a fork, if both are signed.
    #[error("two different roots for tree size {size}")]
    RootsDiffer { size: u64 },
    /// The inclusion proof leads to a different root.
    #[error("inclusion proof does not lead to the expected root")]
    RootMismatch,
    /// The consistency proof does not lead to the older root.
    #[error("consistency proof does not lead to the old root")]
    OldRootMismatch,
    /// The consistency proof does not lead to the newer root.
    #[error("consistency proof does not lead to the new root")]
    NewRootMismatch,
}

/// Splits the inclusion proof of `index` in a tree of `size` leaves into its
/// inner part (levels where the path is below the right edge) and its border
/// part (left siblings along the right edge).
fn decompose(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

/// The number of hashes in the inclusion proof of `index` in a tree of
/// `size` leaves; `index < size`.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (inner, border) = decompose(index, size);
    inner + border
}

/// The number of hashes in the consistency proof from `size1` to `size2`;
/// `0 < size1 < size2`.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    // The proof is, after an optional seed, a suffix of the inclusion proof
    // of leaf size1−1 in the new tree, starting at the level of the largest
    // perfect subtree that ends at size1. That subtree's hash (the seed) is
    // root1 itself if size1 is a power of two, else the first element.
    let (inner, border) = decompose(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    usize::from(!size1.is_power_of_two()) + inner.saturating_sub(shift) + border
}

fn check_len(got: usize, want: usize) -> Result<(), ProofError> {
    if got == want {
        Ok(())
    } else {
        Err(ProofError::WrongProofLength { got, want })
    }
}

/// The root that `proof` leads to for leaf `leaf_index` of a tree of
/// `tree_size` leaves (RFC 9162 §2.1.3.2), after checking the index and the
/// proof length.
pub fn root_from_inclusion_proof(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    check_len(proof.len(), inclusion_proof_len(leaf_index, tree_size))?;
    let (inner, _) = decompose(leaf_index, tree_size);
    let (inner_proof, border_proof) = proof.split_at(inner);
    let mut hash = *leaf_hash;
    for (level, sibling) in inner_proof.iter().enumerate() {
        hash = if (leaf_index >> level) & 1 == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    for sibling in border_proof {
        hash = node_hash(sibling, &hash);
    }
    Ok(hash)
}

/// Verifies that `leaf_hash` is leaf `leaf_index` of the tree of `tree_size`
/// leaves with root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(leaf_index, tree_size, leaf_hash, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that hold whatever the hashes are; `Ok(true)` when the sizes are
/// equal and nothing is left to check.
fn consistency_precheck(
    size1: u64,
    size2: u64,
    proof_len: usize,
    root1: &[u8],
    root2: &[u8],
) -> Result<bool, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == size2 {
        if proof_len != 0 {
            return Err(ProofError::WrongProofLength {
                got: proof_len,
                want: 0,
            });
        }
        if root1 != root2 {
            return Err(ProofError::RootsDiffer { size: size1 });
        }
        if size1 == 0 && root1 != empty_root() {
            return Err(ProofError::NotEmptyRoot);
        }
        return Ok(true);
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree { size2 });
    }
    Ok(false)
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree
/// of `size1` leaves with root `root1` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots (a different root for the
/// same size is [`ProofError::RootsDiffer`], evidence of a fork). Size 0 has
/// the fixed root [`empty_root`]; a proof from size 0 to a larger size is
/// refused as vacuous ([`ProofError::FromEmptyTree`]): a witness that has no
/// previous checkpoint accepts the first one it sees without a proof.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if consistency_precheck(size1, size2, proof.len(), root1, root2)? {
        return Ok(());
    }
    // 0 < size1 < size2 from here (see `consistency_proof_len` for the
    // proof's layout).
    check_len(proof.len(), consistency_proof_len(size1, size2))?;
    let shift = size1.trailing_zeros() as usize;
    // size1 < size2 implies inner > shift; saturate rather than trust it.
    let inner = decompose(size1 - 1, size2).0.saturating_sub(shift);
    let seeded_by_root1 = size1.is_power_of_two();
    let skip = usize::from(!seeded_by_root1);
    let seed = if seeded_by_root1 { *root1 } else { proof[0] };
    let (inner_proof, border_proof) = proof[skip..].split_at(inner);
    let mask = (size1 - 1) >> shift;
    let (mut old, mut new) = (seed, seed);
    for (level, sibling) in inner_proof.iter().enumerate() {
        if (mask >> level) & 1 == 1 {
            // A left sibling: inside the old tree too.
            old = node_hash(sibling, &old);
            new = node_hash(sibling, &new);
        } else {
            // A right sibling: appended after size1, in the new tree only.
            new = node_hash(&new, sibling);
        }
    }
    for sibling in border_proof {
        old = node_hash(sibling, &old);
        new = node_hash(sibling, &new);
    }
    if old != *root1 {
        return Err(ProofError::OldRootMismatch);
    }
    if new != *root2 {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

fn to_hash(bytes: &[u8], field: HashField) -> Result<Hash, ProofError> {
    Hash::try_from(bytes).map_err(|_| ProofError::BadHashLength {
        field,
        len: bytes.len(),
    })
}

fn to_hashes<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, ProofError> {
    proof
        .iter()
        .enumerate()
        .map(|(i, p)| to_hash(p.as_ref(), HashField::ProofNode(i)))
        .collect()
}

/// [`verify_inclusion`] on unchecked bytes, e.g. decoded from a peer's
/// message: every value must be exactly 32 bytes
/// ([`ProofError::BadHashLength`]). The index and the number of proof hashes
/// are checked first.
pub fn verify_inclusion_bytes<P: AsRef<[u8]>>(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    check_len(proof.len(), inclusion_proof_len(leaf_index, tree_size))?;
    let leaf_hash = to_hash(leaf_hash, HashField::LeafHash)?;
    let proof = to_hashes(proof)?;
    let root = to_hash(root, HashField::Root)?;
    verify_inclusion(leaf_index, tree_size, &leaf_hash, &proof, &root)
}

/// [`verify_consistency`] on unchecked bytes, e.g. decoded from a peer's
/// message: proof elements, and the roots whenever anything is hashed, must be
/// exactly 32 bytes ([`ProofError::BadHashLength`]).
///
/// With equal sizes nothing is hashed and the roots are compared as byte
/// strings, as in transparency-dev/merkle (whose vector
/// `sizes-are-equal-one-and-proof-is-empty` pins this): two identical values
/// are consistent with each other whatever their length. A root that is not
/// 32 bytes never verifies against anything else.
pub fn verify_consistency_bytes<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[P],
) -> Result<(), ProofError> {
    if consistency_precheck(size1, size2, proof.len(), root1, root2)? {
        return Ok(());
    }
    check_len(proof.len(), consistency_proof_len(size1, size2))?;
    let proof = to_hashes(proof)?;
    let root1 = to_hash(root1, HashField::OldRoot)?;
    let root2 = to_hash(root2, HashField::NewRoot)?;
    verify_consistency(size1, size2, &root1, &root2, &proof)
}

/// A node that a [`MemoryTree`] does not have (not complete at its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {0} is not in the tree")]
pub struct MissingNode(pub NodeId);

/// An append-only Merkle tree in memory that stores every complete node by
/// `(level, index)`: the reference design for the broker's persistent store,
/// and the store the tests use.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is node `(l, i)`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf hash (see [`leaf_hash`]) and returns its index; stores
    /// the nodes it completes (the same as [`completed_nodes`] returns).
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size();
        let mut hash = leaf_hash;
        let mut position = index;
        let mut level = 0usize;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(hash);
            if position & 1 == 0 {
                break;
            }
            // The node just pushed has an odd index, so its left sibling is
            // the one before it.
            let left = nodes[nodes.len() - 2];
            hash = node_hash(&left, &hash);
            position >>= 1;
            level += 1;
        }
        index
    }

    /// The root of the first `size` leaves; [`MissingNode`] if `size` is
    /// larger than the tree.
    pub fn root(&self, size: u64) -> Result<Hash, MissingNode> {
        tree_root(self, size)
    }

    /// The root of the whole tree.
    pub fn current_root(&self) -> Hash {
        // Every node needed for the current size is stored.
        tree_root(self, self.size()).unwrap_or_else(|_| empty_root())
    }
}

impl HashReader for MemoryTree {
    type Error = MissingNode;

    fn read_node(&self, node: NodeId) -> Result<Hash, MissingNode> {
        usize::try_from(node.index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(node.level))?.get(i))
            .copied()
            .ok_or(MissingNode(node))
    }
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;

//! RFC 6962 Merkle trees (the construction Certificate Transparency logs use, restated in
//! RFC 9162 section 2.1): leaf and node hashing, tree heads, inclusion and consistency proofs,
//! and their verification.
//!
//! A tree over leaves `D[0..n)` is stored as its perfect subtrees: the node at `(level, index)`
//! is the hash of leaves `[index·2^level, (index+1)·2^level)`. Every hash a head or a proof needs
//! is a range of leaves whose start is aligned to its largest power-of-two part, so it is a fold
//! of at most log₂ n stored nodes. Proofs are built in two steps: [`inclusion_ranges`] /
//! [`consistency_ranges`] say which ranges the proof is made of, [`nodes_of`] which stored nodes
//! those need, and [`range_hash`] folds the nodes once read. The verifiers need nothing stored.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A stored perfect subtree: leaves `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

/// Leaves `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees `range` is made of, largest (leftmost) first.
pub fn nodes_of(range: Range) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut start = range.start;
    let mut left = range.end.saturating_sub(range.start);
    while left > 0 {
        let level = 63 - left.leading_zeros();
        let width = 1u64 << level;
        nodes.push(NodeId {
            level,
            index: start >> level,
        });
        start += width;
        left -= width;
    }
    nodes
}

/// `MTH(D[range])` from its perfect subtrees (`None` when one of them is not at hand).
pub fn range_hash(range: Range, node: impl Fn(NodeId) -> Option<Hash>) -> Option<Hash> {
    let mut hashes = nodes_of(range)
        .into_iter()
        .map(node)
        .collect::<Option<Vec<Hash>>>()?;
    let mut acc = hashes.pop()?;
    while let Some(left) = hashes.pop() {
        acc = node_hash(&left, &acc);
    }
    Some(acc)
}

/// The nodes that appending leaf `index` completes: the leaf itself at level 0, then each
/// parent whose right child it completes.
pub fn completed_by(index: u64) -> Vec<NodeId> {
    let mut completed = vec![NodeId { level: 0, index }];
    let mut at = index;
    let mut level = 0;
    while at & 1 == 1 {
        at >>= 1;
        level += 1;
        completed.push(NodeId { level, index: at });
    }
    completed
}

/// The ranges whose hashes make the inclusion proof of leaf `index` in a tree of `size` leaves,
/// in proof order (the leaf's sibling first). `None` when `index` is not below `size`.
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<Range>> {
    if index >= size {
        return None;
    }
    let mut path = Vec::new();
    path_of(
        index,
        Range {
            start: 0,
            end: size,
        },
        &mut path,
    );
    Some(path)
}

/// RFC 6962 PATH(m, D[n]), with `m` absolute.
fn path_of(m: u64, range: Range, out: &mut Vec<Range>) {
    let n = range.end - range.start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    let mid = range.start + k;
    if m < mid {
        path_of(
            m,
            Range {
                start: range.start,
                end: mid,
            },
            out,
        );
        out.push(Range {
            start: mid,
            end: range.end,
        });
    } else {
        path_of(
            m,
            Range {
                start: mid,
                end: range.end,
            },
            out,
        );
        out.push(Range {
            start: range.start,
            end: mid,
        });
    }
}

/// The ranges whose hashes prove the tree of `old` leaves a prefix of the tree of `new` leaves,
/// in proof order. `None` unless `0 < old ≤ new` (a proof from the empty tree proves nothing).
pub fn consistency_ranges(old: u64, new: u64) -> Option<Vec<Range>> {
    if old == 0 || old > new {
        return None;
    }
    let mut proof = Vec::new();
    if old < new {
        subproof(old, Range { start: 0, end: new }, true, &mut proof);
    }
    Some(proof)
}

/// RFC 6962 SUBPROOF(m, D[n], b), with `m` counted from the range's start.
fn subproof(m: u64, range: Range, whole: bool, out: &mut Vec<Range>) {
    let n = range.end - range.start;
    if m == n {
        if !whole {
            out.push(range);
        }
        return;
    }
    let k = split(n);
    let mid = range.start + k;
    if m <= k {
        subproof(
            m,
            Range {
                start: range.start,
                end: mid,
            },
            whole,
            out,
        );
        out.push(Range {
            start: mid,
            end: range.end,
        });
    } else {
        subproof(
            m - k,
            Range {
                start: mid,
                end: range.end,
            },
            false,
            out,
        );
        out.push(Range {
            start: range.start,
            end: mid,
        });
    }
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error(
        "sizes {old} and {new} cannot be proven consistent (the first must be at least 1 and at most the second)"
    )]
    BadSizes { old: u64, new: u64 },
}

/// Verify that `leaf` is leaf `index` of the tree of `size` leaves whose head is `root`
/// (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verify that the tree of `old` leaves with head `old_root` is a prefix of the tree of `new`
/// leaves with head `new_root` (RFC 9162, 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The head of the tree over `leaves` (leaf hashes), computed from all of them.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn hex32(s: &str) -> Hash {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    /// The leaf inputs of the RFC 6962 test vectors (Certificate Transparency's reference data).
    fn inputs() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).expect("hex"))
        .collect()
    }

    /// Their tree heads for sizes 1 to 8.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Inclusion proofs: (leaf index, tree size, proof).
    fn inclusion_vectors() -> Vec<(u64, u64, Vec<&'static str>)> {
        vec![
            (0, 1, vec![]),
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                vec![
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ]
    }

    /// Consistency proofs: (old size, new size, proof).
    fn consistency_vectors() -> Vec<(u64, u64, Vec<&'static str>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ]
    }

    /// Every perfect subtree of the vectors' 8 leaves, as a store would hold them after
    /// appending them one by one.
    fn stored() -> HashMap<NodeId, Hash> {
        let leaves: Vec<Hash> = inputs().iter().map(|d| leaf_hash(d)).collect();
        let mut nodes = HashMap::new();
        for (index, leaf) in leaves.iter().enumerate() {
            for node in completed_by(index as u64) {
                let hash = if node.level == 0 {
                    *leaf
                } else {
                    node_hash(
                        &nodes[&NodeId {
                            level: node.level - 1,
                            index: node.index * 2,
                        }],
                        &nodes[&NodeId {
                            level: node.level - 1,
                            index: node.index * 2 + 1,
                        }],
                    )
                };
                nodes.insert(node, hash);
            }
        }
        nodes
    }

    fn hashes_of(ranges: &[Range], nodes: &HashMap<NodeId, Hash>) -> Vec<Hash> {
        ranges
            .iter()
            .map(|r| range_hash(*r, |n| nodes.get(&n).copied()).expect("stored"))
            .collect()
    }

    #[test]
    fn tree_heads_match_the_rfc_6962_vectors() {
        let leaves: Vec<Hash> = inputs().iter().map(|d| leaf_hash(d)).collect();
        let nodes = stored();
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (size, want) in ROOTS.iter().enumerate().map(|(i, r)| (i + 1, hex32(r))) {
            assert_eq!(root_of(&leaves[..size]), want, "size {size}");
            let head = range_hash(
                Range {
                    start: 0,
                    end: size as u64,
                },
                |n| nodes.get(&n).copied(),
            );
            assert_eq!(head, Some(want), "size {size} from stored nodes");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_vectors_and_verify() {
        let nodes = stored();
        let leaves: Vec<Hash> = inputs().iter().map(|d| leaf_hash(d)).collect();
        for (index, size, want) in inclusion_vectors() {
            let want: Vec<Hash> = want.iter().map(|h| hex32(h)).collect();
            let ranges = inclusion_ranges(index, size).expect("in range");
            assert_eq!(hashes_of(&ranges, &nodes), want, "leaf {index} of {size}");
            let root = hex32(ROOTS[size as usize - 1]);
            assert_eq!(
                verify_inclusion(index, size, &leaves[index as usize], &want, &root),
                Ok(())
            );
        }
    }

    #[test]
    fn consistency_proofs_match_the_vectors_and_verify() {
        let nodes = stored();
        for (old, new, want) in consistency_vectors() {
            let want: Vec<Hash> = want.iter().map(|h| hex32(h)).collect();
            let ranges = consistency_ranges(old, new).expect("sizes");
            assert_eq!(hashes_of(&ranges, &nodes), want, "{old} -> {new}");
            let (old_root, new_root) = (
                hex32(ROOTS[old as usize - 1]),
                hex32(ROOTS[new as usize - 1]),
            );
            assert_eq!(
                verify_consistency(old, new, &old_root, &new_root, &want),
                Ok(())
            );
        }
    }

    /// Every proof between every pair of sizes up to 8 verifies, and every corruption of it the
    /// reference test data tries (wrong index or size, wrong leaf or root, a hash added, removed
    /// or with one bit flipped) is refused.
    #[test]
    fn every_proof_verifies_and_no_corruption_does() {
        let nodes = stored();
        let leaves: Vec<Hash> = inputs().iter().map(|d| leaf_hash(d)).collect();
        let root = |size: u64| hex32(ROOTS[size as usize - 1]);
        let some = hex32("abacaba000000000000000000000000000000000000000000060061e00123456");
        for size in 1..=8u64 {
            for index in 0..size {
                let proof = hashes_of(&inclusion_ranges(index, size).expect("in"), &nodes);
                let leaf = leaves[index as usize];
                assert_eq!(
                    verify_inclusion(index, size, &leaf, &proof, &root(size)),
                    Ok(())
                );
                let wrong_index = [index.wrapping_sub(1), index + 1, index ^ 2];
                for other in wrong_index.into_iter().filter(|i| *i != index) {
                    assert!(verify_inclusion(other, size, &leaf, &proof, &root(size)).is_err());
                }
                assert!(verify_inclusion(index, size * 2, &leaf, &proof, &root(size)).is_err());
                assert!(verify_inclusion(index, size, &some, &proof, &root(size)).is_err());
                assert!(verify_inclusion(index, size, &leaf, &proof, &some).is_err());
                let mut longer = proof.clone();
                longer.push(root(size));
                assert!(verify_inclusion(index, size, &leaf, &longer, &root(size)).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(index, size, &leaf, shorter, &root(size)).is_err());
                    for i in 0..proof.len() {
                        let mut flipped = proof.clone();
                        flipped[i][0] ^= 8;
                        assert!(
                            verify_inclusion(index, size, &leaf, &flipped, &root(size)).is_err()
                        );
                    }
                }
            }
            for old in 1..=size {
                let proof = hashes_of(&consistency_ranges(old, size).expect("sizes"), &nodes);
                assert_eq!(
                    verify_consistency(old, size, &root(old), &root(size), &proof),
                    Ok(()),
                    "{old} -> {size}"
                );
                if old == size {
                    continue;
                }
                assert!(verify_consistency(old, size, &root(size), &root(old), &proof).is_err());
                assert!(verify_consistency(old, size, &some, &root(size), &proof).is_err());
                assert!(verify_consistency(old, size, &root(old), &root(size), &[]).is_err());
                assert!(
                    verify_consistency(old, size, &root(old), &root(size), &proof[1..]).is_err()
                );
                for i in 0..proof.len() {
                    let mut flipped = proof.clone();
                    flipped[i][0] ^= 16;
                    assert!(
                        verify_consistency(old, size, &root(old), &root(size), &flipped).is_err()
                    );
                }
            }
        }
        assert!(verify_consistency(0, 1, &empty_root(), &empty_root(), &[]).is_err());
        assert!(verify_consistency(2, 1, &root(2), &root(1), &[]).is_err());
        assert!(inclusion_ranges(3, 3).is_none());
    }
}

"""Exact and near-duplicate removal of (query, positive) pairs, keeping the first.

A pair is a duplicate of an earlier kept pair when its query AND its positive are each
duplicates of that pair's query and positive; rows that merely share a query (several
positives) or a positive (several questions about one passage) are not duplicates.

Exact: the pair's normalised texts (``TextNormalizer``) hash to the same 16-byte digest.
Near: every distinct normalised text of a kept pair (queries and positives apart) gets an
id; two texts match when they are equal or, both at least ``min_chars`` long, their MinHash
signatures over character n-grams share a band of an LSH index (``datasketch`` picks
bands for ``threshold``, an estimated Jaccard similarity). A pair is a near duplicate when
an earlier kept pair's query matches its query and the same pair's positive its positive.
The relation is symmetric, so kept pairs never match each other (curating twice keeps
all). The indexes hold digests, band hashes and id pairs, never texts.
"""

from __future__ import annotations

from datasketch import MinHash, MinHashLSH

from ctem.curation.minhash import MinHasher
from ctem.curation.textnorm import TextNormalizer, text_digest

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


class NearDuplicateIndex:
    """Banded MinHash LSH over signatures: which indexed entries share a band with a signature."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._next_key = 0

    def __len__(self) -> int:
        return self._next_key

    def matches(self, signature: MinHash) -> list:
        """Keys of indexed entries sharing at least one band with ``signature``."""
        return self._lsh.query(signature)

    def insert(self, signature: MinHash, key: object | None = None) -> object:
        """Index ``signature`` under ``key`` (default: a running number); returns the key."""
        if key is None:
            key = self._next_key
        self._lsh.insert(key, signature, check_duplication=False)
        self._next_key += 1
        return key


class TextIndex:
    """Distinct normalised texts with ids: equal texts by digest, near duplicates by LSH
    (texts shorter than ``min_chars`` are matched exactly only; ``normalizer`` gives the
    n-gram shingles of a normalised text)."""

    def __init__(self, hasher: MinHasher, threshold: float, ngram: int, min_chars: int, normalizer: TextNormalizer) -> None:
        self.hasher = hasher
        self.normalizer = normalizer
        self.ngram = ngram
        self.min_chars = min_chars
        self._ids: dict[bytes, int] = {}
        self._near = NearDuplicateIndex(threshold, hasher.num_perm)

    def lookup(self, text: str) -> tuple[set[int], bytes, MinHash | None]:
        """Ids of the indexed texts matching normalised ``text``, plus its digest and
        signature (for ``add``)."""
        digest = text_digest(text)
        found = {self._ids[digest]} if digest in self._ids else set()
        signature = None
        if len(text) >= self.min_chars:
            signature = self.hasher.signature(self.normalizer.shingles(text, self.ngram))
            found.update(self._near.matches(signature))
        return found, digest, signature

    def add(self, digest: bytes, signature: MinHash | None) -> int:
        """The id of the text with ``digest`` (indexed now if new)."""
        if digest not in self._ids:
            self._ids[digest] = len(self._ids)
            if signature is not None:
                self._near.insert(signature, key=self._ids[digest])
        return self._ids[digest]


class PairDeduplicator:
    """Removes repeated (query, positive) pairs in stream order, keeping the first.

    Args:
        exact: drop pairs whose normalised query and positive equal an earlier pair's.
        near: drop pairs whose query and positive are both near duplicates of an earlier
            kept pair's query and positive.
        threshold: estimated Jaccard similarity of two texts' n-gram sets that counts as
            near duplicate.
        ngram: characters (or words, for texts written with spaces) per n-gram.
        num_perm: MinHash permutations (signature length).
        min_chars: normalised texts shorter than this are matched exactly only (their
            n-gram sets are too small for a meaningful similarity).
        seed: seed of the MinHash permutations.
        normalizer: text normalisation used by both checks.
    """

    def __init__(
        self,
        exact: bool = True,
        near: bool = True,
        threshold: float = 0.8,
        ngram: int = 3,
        num_perm: int = 128,
        min_chars: int = 10,
        seed: int = 1,
        normalizer: TextNormalizer = TextNormalizer(),
    ) -> None:
        self.exact = exact
        self.near = near
        self.normalizer = normalizer
        self._seen: set[bytes] = set()
        hasher = MinHasher(num_perm, seed)
        self._queries = TextIndex(hasher, threshold, ngram, min_chars, normalizer)
        self._positives = TextIndex(hasher, threshold, ngram, min_chars, normalizer)
        self._pairs: set[tuple[int, int]] = set()

    def check(self, query: str, positive: str) -> str | None:
        """``exact_duplicate`` / ``near_duplicate`` for a repeated pair, else ``None`` (and the
        pair is remembered)."""
        q, p = self.normalizer(query), self.normalizer(positive)
        if self.exact:
            digest = text_digest(q, p)
            if digest in self._seen:
                return EXACT_DUPLICATE
            self._seen.add(digest)
        if self.near:
            q_ids, q_digest, q_sig = self._queries.lookup(q)
            p_ids, p_digest, p_sig = self._positives.lookup(p)
            if any((i, j) in self._pairs for i in q_ids for j in p_ids):
                return NEAR_DUPLICATE
            self._pairs.add((self._queries.add(q_digest, q_sig), self._positives.add(p_digest, p_sig)))
        return None


__all__ = [
    "EXACT_DUPLICATE",
    "NEAR_DUPLICATE",
    "MinHasher",
    "NearDuplicateIndex",
    "PairDeduplicator",
    "TextIndex",
]

"""Exact and near-duplicate removal of (query, positive) pairs, keeping the first.

Exact: the pair's normalised texts (``TextNormalizer``) hash to the same 16-byte digest.
Near: MinHash signatures over character n-grams, indexed with banded LSH (``datasketch``),
whose band count and width are chosen for ``threshold`` (estimated Jaccard similarity).
A pair is a near duplicate when it shares a band with an earlier kept pair. The index holds
band hashes only (about ``num_perm * 8`` bytes per kept pair), never texts.
"""

from __future__ import annotations

from typing import Iterable

from datasketch import MinHash, MinHashLSH

from ctem.curation.textnorm import TextNormalizer, char_ngrams, text_digest

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"


class MinHasher:
    """MinHash signatures of n-gram sets with permutations drawn once from ``seed``."""

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.seed = seed
        template = MinHash(num_perm=num_perm, seed=seed)
        self._reuse: dict[str, object] = {"permutations": template.permutations}
        if hasattr(template, "scheme"):  # datasketch >= 2 must be told the hashing scheme
            self._reuse["scheme"] = template.scheme

    def signature(self, grams: Iterable[str]) -> MinHash:
        """The MinHash of a set of strings (deterministic for a given ``seed``)."""
        sig = MinHash(num_perm=self.num_perm, seed=self.seed, **self._reuse)
        sig.update_batch([g.encode("utf-8") for g in sorted(grams)])
        return sig


class NearDuplicateIndex:
    """Banded MinHash LSH over signatures; ``add_if_new`` keeps the first of near duplicates."""

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

    def add_if_new(self, signature: MinHash) -> bool:
        """True (and indexed) when nothing indexed so far is a near duplicate."""
        if self.matches(signature):
            return False
        self.insert(signature)
        return True


class PairDeduplicator:
    """Removes repeated (query, positive) pairs in stream order, keeping the first.

    Args:
        exact: drop pairs whose normalised query and positive equal an earlier pair's.
        near: drop pairs whose n-gram MinHash is a near duplicate of an earlier kept pair.
        threshold: estimated Jaccard similarity of the pairs' n-gram sets that counts as
            near duplicate (query and positive n-grams are kept apart in the set).
        ngram: characters per n-gram.
        num_perm: MinHash permutations (signature length).
        min_chars: pairs whose normalised query + positive are shorter skip the near check
            (their n-gram sets are too small for a meaningful similarity).
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
        self.ngram = ngram
        self.min_chars = min_chars
        self.normalizer = normalizer
        self._seen: set[bytes] = set()
        self._hasher = MinHasher(num_perm, seed)
        self._index = NearDuplicateIndex(threshold, num_perm) if near else None

    def pair_grams(self, query: str, positive: str) -> set[str]:
        """N-grams of a normalised pair: ``q``-prefixed query grams and ``p``-prefixed positive grams."""
        return {"q" + g for g in char_ngrams(query, self.ngram)} | {"p" + g for g in char_ngrams(positive, self.ngram)}

    def check(self, query: str, positive: str) -> str | None:
        """``exact_duplicate`` / ``near_duplicate`` for a repeated pair, else ``None`` (and the
        pair is remembered)."""
        q, p = self.normalizer(query), self.normalizer(positive)
        if self.exact:
            digest = text_digest(q, p)
            if digest in self._seen:
                return EXACT_DUPLICATE
            self._seen.add(digest)
        if self._index is not None and len(q) + len(p) >= self.min_chars:
            if not self._index.add_if_new(self._hasher.signature(self.pair_grams(q, p))):
                return NEAR_DUPLICATE
        return None


__all__ = [
    "EXACT_DUPLICATE",
    "NEAR_DUPLICATE",
    "MinHasher",
    "NearDuplicateIndex",
    "PairDeduplicator",
]

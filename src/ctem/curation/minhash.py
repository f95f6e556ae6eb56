"""MinHash signatures of many n-gram sets at once, and their LSH band keys.

The signatures are ``datasketch``'s, value for value: each n-gram is hashed with
``datasketch.hashfunc.sha1_hash32`` (the first 4 bytes of its SHA-1, little-endian) and
permuted with the parameters ``datasketch.MinHash(num_perm, seed)`` draws, in the scheme
of the installed ``datasketch`` (``affine32`` from 2.0, ``legacy`` before). Only the
per-text overhead is gone: the permutations of a whole batch of texts are one array
operation and one ``minimum.reduceat``.

Bands follow ``datasketch.MinHashLSH``: for a Jaccard ``threshold`` it splits the
``num_perm`` values into ``b`` bands of ``r`` (its false-positive / false-negative
optimum); two texts are candidates when all ``r`` values of one band are equal. A band is
kept as a 16-byte BLAKE2b digest of its values (``band_keys``), so equal bands have equal
keys and an index holds 16 bytes per band and text.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

# Hash values permuted at once (a [grams, num_perm] block of this many rows at most).
BLOCK_GRAMS = 4096
KEY_BYTES = 16


class MinHasher:
    """MinHash signatures ``[n, num_perm]`` of sets of strings, equal to datasketch's
    ``MinHash(num_perm, seed).update_batch`` of the UTF-8 encoded strings."""

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.seed = seed
        template = MinHash(num_perm=num_perm, seed=seed)
        self.scheme = getattr(template, "scheme", "legacy")  # datasketch < 2 has one scheme
        if self.scheme not in ("legacy", "affine32"):
            raise ValueError(f"datasketch's MinHash scheme {self.scheme!r} is not supported (legacy or affine32)")
        a, b = template.permutations
        self._permutations = template.permutations
        self.dtype = np.uint64 if self.scheme == "legacy" else np.uint32
        self._a = np.asarray(a, dtype=self.dtype)[None, :]
        self._b = np.asarray(b, dtype=self.dtype)[None, :]
        self._empty = np.asarray(template.hashvalues, dtype=self.dtype)

    def signature(self, grams: Iterable[str]) -> MinHash:
        """One set's signature as a ``datasketch.MinHash`` (for ``MinHashLSH`` indexes)."""
        values = self.signatures([grams])[0]
        return MinHash(num_perm=self.num_perm, seed=self.seed, hashvalues=values, permutations=self._permutations, scheme=self.scheme)

    def hash_grams(self, grams: Iterable[str]) -> np.ndarray:
        """``sha1_hash32`` of each string (UTF-8), as ``[n]`` integers of the scheme's dtype."""
        digests = b"".join([hashlib.sha1(g.encode("utf-8")).digest() for g in grams])
        return np.frombuffer(digests, dtype="<u4")[::5].astype(self.dtype)

    def _permute(self, hashes: np.ndarray) -> np.ndarray:
        if self.scheme == "legacy":
            prime, max_hash = np.uint64((1 << 61) - 1), np.uint64((1 << 32) - 1)
            return np.bitwise_and((hashes[:, None] * self._a + self._b) % prime, max_hash)
        h = hashes[:, None]
        h = h ^ (h >> np.uint32(16))  # MurmurHash3's 32-bit finaliser (datasketch's _fmix)
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        h = h ^ (h >> np.uint32(16))
        return h * self._a + self._b

    def signatures(self, gram_sets: Sequence[Iterable[str]]) -> np.ndarray:
        """``[len(gram_sets), num_perm]`` signatures; an empty set has datasketch's initial
        values (all maximal)."""
        sets = [list(s) for s in gram_sets]
        out = np.repeat(self._empty[None, :], len(sets), axis=0)
        sizes = np.array([len(s) for s in sets], dtype=np.int64)
        hashes = self.hash_grams(g for s in sets for g in s)
        ends = np.cumsum(sizes)
        text = 0
        while text < len(sets):
            # the texts whose grams fit one block (at least one text)
            start = ends[text] - sizes[text]
            last = max(text + 1, int(np.searchsorted(ends, start + BLOCK_GRAMS, side="right")))
            block = slice(text, last)
            nonempty = np.flatnonzero(sizes[block]) + text
            if nonempty.size:
                permuted = self._permute(hashes[start : ends[last - 1]])
                offsets = ends[nonempty] - sizes[nonempty] - start
                out[nonempty] = np.minimum(out[nonempty], np.minimum.reduceat(permuted, offsets, axis=0))
            text = last
        return out


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(b, r)``: the bands and rows per band ``datasketch.MinHashLSH`` uses for
    ``threshold``; ``ValueError`` for a threshold outside (0, 1]."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``[n, bands, 16]`` uint8: a BLAKE2b digest of each band's ``rows`` values."""
    n = signatures.shape[0]
    data = np.ascontiguousarray(signatures[:, : bands * rows]).tobytes()
    step = rows * signatures.dtype.itemsize
    digests = b"".join([hashlib.blake2b(data[k : k + step], digest_size=KEY_BYTES).digest() for k in range(0, len(data), step)])
    return np.frombuffer(digests, dtype=np.uint8).reshape(n, bands, KEY_BYTES)

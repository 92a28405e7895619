"""The small tasks of Rumelhart, Hinton & Williams (1986) and the PDP chapter 8, as tensors.

Pure torch, deterministic (every task is its full pattern set), no downloads. Each
generator returns ``(inputs, targets)`` with 0/1 entries in ``dtype``:

- :func:`symmetry`      all 64 six-bit patterns -> 1 if mirror-symmetric (8 of them)
- :func:`family_trees`  the 104 (person, relation) cases of the two isomorphic family trees
- :func:`xor`           the 4 XOR patterns
- :func:`parity`        all 2^n n-bit patterns -> 1 if an odd number of bits is on

Pattern order is binary counting with the first input as the most significant bit, so
row ``k`` of ``symmetry()`` or ``parity(n)`` is the binary expansion of ``k``.
See ``experiments/paper1986/REFERENCE.md`` for the family-tree definitions.
"""
from __future__ import annotations

import torch

__all__ = [
    "binary_patterns", "symmetry", "xor", "parity",
    "PEOPLE", "ENGLISH", "ITALIAN", "RELATIONS", "family_tree_triples", "family_trees",
    "family_trees_split",
]


def binary_patterns(n_bits: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """All ``2**n_bits`` binary vectors, shape ``(2**n_bits, n_bits)``, row k = bits of k (MSB first)."""
    if n_bits < 1:
        raise ValueError(f"binary_patterns: n_bits must be >= 1, got {n_bits}")
    k = torch.arange(2 ** n_bits).unsqueeze(1)                     # (P, 1)
    shifts = torch.arange(n_bits - 1, -1, -1)                      # (n,) MSB first
    return ((k >> shifts) & 1).to(dtype or torch.get_default_dtype())


def symmetry(n_bits: int = 6, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror-symmetry detection (Nature Fig. 1): all ``2**n_bits`` patterns.

    Returns ``x`` of shape ``(2**n_bits, n_bits)`` and ``y`` of shape ``(2**n_bits, 1)``,
    ``y = 1`` iff ``x[i] == x[n_bits-1-i]`` for all i (8 of the 64 six-bit patterns).
    """
    x = binary_patterns(n_bits, dtype)
    y = (x == x.flip(1)).all(1, keepdim=True).to(x.dtype)
    return x, y


def xor(dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """XOR: ``x`` (4, 2) = 00, 01, 10, 11 and ``y`` (4, 1) = 0, 1, 1, 0."""
    return parity(2, dtype)


def parity(n_bits: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """N-bit parity (PDP ch. 8): ``x`` (2**n, n), ``y`` (2**n, 1) = 1 iff an odd number of bits is on."""
    x = binary_patterns(n_bits, dtype)
    y = (x.sum(1, keepdim=True).long() % 2).to(x.dtype)
    return x, y


# --- Family trees ---
# Unit order: the 12 English people, then their isomorphic Italian twins in the same positions.
ENGLISH = ("Christopher", "Penelope", "Andrew", "Christine", "Margaret", "Arthur",
           "Victoria", "James", "Jennifer", "Charles", "Colin", "Charlotte")
ITALIAN = ("Roberto", "Maria", "Pierro", "Francesca", "Gina", "Emilio",
           "Lucia", "Marco", "Angela", "Tomaso", "Alfonso", "Sophia")
PEOPLE = ENGLISH + ITALIAN
RELATIONS = ("father", "mother", "husband", "wife", "son", "daughter",
             "uncle", "aunt", "brother", "sister", "nephew", "niece")

_MARRIAGES = (("Christopher", "Penelope"), ("Andrew", "Christine"), ("Arthur", "Margaret"),
              ("James", "Victoria"), ("Charles", "Jennifer"))                 # (husband, wife)
_PARENTS = {"Arthur": ("Christopher", "Penelope"), "Victoria": ("Christopher", "Penelope"),
            "James": ("Andrew", "Christine"), "Jennifer": ("Andrew", "Christine"),
            "Colin": ("James", "Victoria"), "Charlotte": ("James", "Victoria")}  # child -> (father, mother)
_MALE = {"Christopher", "Andrew", "Arthur", "James", "Charles", "Colin"}


def _english_cases() -> list[tuple[str, str, tuple[str, ...]]]:
    """(person, relation, answers) for the English tree; "y is the r of x" gives (x, r) -> {y}."""
    spouse = {}
    for h, w in _MARRIAGES:
        spouse[h], spouse[w] = w, h

    def children(p):
        return [c for c, pa in _PARENTS.items() if p in pa]

    def sibs(p):
        if p not in _PARENTS:
            return []
        return [c for c, pa in _PARENTS.items() if pa == _PARENTS[p] and c != p]

    def by_sex(people, male):
        return [q for q in people if (q in _MALE) == male]

    cases = []
    for p in ENGLISH:
        parents = list(_PARENTS.get(p, ()))
        sp = [spouse[p]] if p in spouse else []
        kids = children(p)
        piblings = []                                              # parents' siblings and their spouses
        for q in parents:
            for s in sibs(q):
                piblings += [s] + ([spouse[s]] if s in spouse else [])
        sib_kids = [k for s in sibs(p) + [t for q in sp for t in sibs(q)] for k in children(s)]
        rel = {
            "father": by_sex(parents, True), "mother": by_sex(parents, False),
            "husband": by_sex(sp, True), "wife": by_sex(sp, False),
            "son": by_sex(kids, True), "daughter": by_sex(kids, False),
            "uncle": by_sex(piblings, True), "aunt": by_sex(piblings, False),
            "brother": by_sex(sibs(p), True), "sister": by_sex(sibs(p), False),
            "nephew": by_sex(sib_kids, True), "niece": by_sex(sib_kids, False),
        }
        for r in RELATIONS:
            ans = tuple(sorted(set(rel[r]), key=ENGLISH.index))
            if ans:
                cases.append((p, r, ans))
    return cases


def family_tree_triples() -> list[tuple[str, str, tuple[str, ...]]]:
    """The 104 cases as ``(person1, relation, (person2, ...))`` names; English first, then Italian."""
    eng = _english_cases()
    to_it = dict(zip(ENGLISH, ITALIAN))
    ita = [(to_it[p], r, tuple(to_it[a] for a in ans)) for p, r, ans in eng]
    cases = eng + ita
    assert len(cases) == 104 and sum(len(a) for _, _, a in cases) == 112
    return cases


def family_trees(dtype: torch.dtype | None = None):
    """Family-tree task (Nature Figs. 2-4): 104 cases, 8 of them with two correct answers.

    Returns ``(person, relation, target, names)``: ``person`` (104, 24) one-hot person 1,
    ``relation`` (104, 12) one-hot relation, ``target`` (104, 24) multi-hot person 2, and
    ``names = (PEOPLE, RELATIONS)`` for labelling units. Case order: :func:`family_tree_triples`.
    """
    dtype = dtype or torch.get_default_dtype()
    cases = family_tree_triples()
    person = torch.zeros(len(cases), len(PEOPLE), dtype=dtype)
    relation = torch.zeros(len(cases), len(RELATIONS), dtype=dtype)
    target = torch.zeros(len(cases), len(PEOPLE), dtype=dtype)
    for i, (p, r, ans) in enumerate(cases):
        person[i, PEOPLE.index(p)] = 1
        relation[i, RELATIONS.index(r)] = 1
        for a in ans:
            target[i, PEOPLE.index(a)] = 1
    return person, relation, target, (PEOPLE, RELATIONS)


def family_trees_split(n_test: int = 4, generator: torch.Generator | None = None,
                       single_answer_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/test split of the 104 case indices (the paper trains on 100, tests on 4).

    Test cases are drawn from the single-answer cases unless ``single_answer_only=False``.
    Returns ``(train_idx, test_idx)`` as sorted long tensors.
    """
    _, _, target, _ = family_trees()
    pool = torch.arange(len(target))
    if single_answer_only:
        pool = pool[target.sum(1) == 1]
    if not 0 <= n_test <= len(pool):
        raise ValueError(f"family_trees_split: n_test must be in [0, {len(pool)}], got {n_test}")
    test = pool[torch.randperm(len(pool), generator=generator)[:n_test]].sort().values
    mask = torch.ones(len(target), dtype=torch.bool)
    mask[test] = False
    return torch.arange(len(target))[mask], test

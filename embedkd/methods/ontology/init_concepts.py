"""Concept-aware initialisation of a static (bag-of-tokens) student from the ontology it distils.

A static student only learns the vectors of tokens that occur in its training pairs, and a rare
finding occurs in a handful of training reports or none, so its tokens keep their generic start. Here
every concept gets a seeded random unit direction (mixed with its ``is_a`` ancestors' at the teacher's
decay, so siblings start close), and each token of the tokenizer takes the weighted sum of the
directions of the concepts whose names, synonyms or plurals contain it::

    u(t) = Σ_{c ∋ t} w(c) · d(c) / |{c ∋ t}| ** power       (w: the teacher's type weight)
    v(t) = (1 − mix) · e(t) + mix · s · u(t)                   (e: the model's vector, s: mean |e|)

Two reports that name the same rare concept therefore share a distinctive direction before training;
CoSENT on the real pairs then tunes the tokens it sees (negations, common findings). Tokens in no
concept keep the model's vector.

Python API::

    from embedkd.methods.ontology.init_concepts import init_from_concepts
    student = build_pair_student("static:sentence-transformers/all-MiniLM-L6-v2")
    init_from_concepts(student, TverskySimilarity(graph), mix=1.0, seed=0)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from enum import Enum

import numpy as np

from embedkd.errors import EmbedkdError
from embedkd.ontology.extract import _plural_variants
from embedkd.ontology.graph import normalize

logger = logging.getLogger(__name__)


class StudentInit(str, Enum):
    """How the student's token vectors start: the model's own, or concept-aware (:func:`init_from_concepts`)."""

    MODEL = "model"
    CONCEPTS = "concepts"


def concept_directions(sim, dim: int, seed: int) -> dict[str, np.ndarray]:
    """A unit direction per weighted concept: its own seeded random vector plus its ancestors' (decayed).

    Args:
        sim: the teacher :class:`~embedkd.ontology.TverskySimilarity` (graph, depth, decay).
        dim: vector dimension.
        seed: random seed; concepts are drawn in sorted id order, so the result is reproducible.
    """
    ids = sorted(sim.graph.ids())
    raw = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    row = {cid: i for i, cid in enumerate(ids)}
    out: dict[str, np.ndarray] = {}
    for cid in ids:
        if sim.weight(cid) <= 0:
            continue
        vec = raw[row[cid]].copy()
        for anc, dist in sim.graph.ancestors(cid, sim.config.depth).items():
            vec += sim.config.decay**dist * raw[row[anc]]
        out[cid] = vec / np.linalg.norm(vec)
    return out


def _token_concepts(sim, tokenizer, domain_only: bool) -> dict[int, set[str]]:
    """Token id -> the weighted concepts whose surface forms (plurals too, as the extractor) contain it."""
    domain = sim.graph.concept(next(sim.graph.ids())).source  # concepts are kept in loading order
    terms: dict[str, str] = {}
    for term, cid in sim.graph.surface_forms():
        norm = normalize(term)
        if domain_only and sim.graph.concept(cid).source != domain:
            continue
        if norm and sim.weight(cid) > 0:
            for form in (norm, *_plural_variants(norm)):
                terms.setdefault(form, cid)
    forms = sorted(terms)
    found: dict[int, set[str]] = defaultdict(set)
    for form, enc in zip(forms, tokenizer.encode_batch(forms, add_special_tokens=False)):
        for tid in enc.ids:
            found[tid].add(terms[form])
    return found


def concept_token_vectors(sim, tokenizer, dim: int, seed: int, power: float = 0.5, domain_only: bool = False):
    """``u(t)`` for every token in some concept: ``(token ids, (n, dim) array)``, ids ascending.

    Args:
        sim: the teacher similarity.
        tokenizer: a ``tokenizers.Tokenizer`` (the static student's).
        dim: vector dimension.
        seed: seed of the concept directions.
        power: a token in ``n`` concepts divides their sum by ``n ** power`` (0.5 keeps a unit-ish
            norm; 1 shrinks tokens shared by many concepts, such as "of").
        domain_only: use only the concepts of the first ontology loaded (the domain vocabulary, with
            the synonyms its aliases in later ontologies folded in).
    """
    directions = concept_directions(sim, dim, seed)
    found = _token_concepts(sim, tokenizer, domain_only)
    ids = sorted(found)
    vecs = np.zeros((len(ids), dim), dtype=np.float32)
    for k, tid in enumerate(ids):
        concepts = sorted(found[tid])
        for cid in concepts:
            vecs[k] += sim.weight(cid) * directions[cid]
        vecs[k] /= len(concepts) ** power
    return np.asarray(ids, dtype=np.int64), vecs


def init_from_concepts(
    model, sim, *, mix: float = 1.0, power: float = 0.5, domain_only: bool = False, seed: int = 0
) -> int:
    """Set the token vectors of a static student from the ontology (in place); returns tokens changed.

    Args:
        model: a SentenceTransformer whose first module is a ``StaticEmbedding``.
        sim: the teacher :class:`~embedkd.ontology.TverskySimilarity`.
        mix: share of the concept vector (1: replace the model's vector; 0: keep it).
        power, domain_only: see :func:`concept_token_vectors`.
        seed: seed of the concept directions.

    Raises:
        EmbedkdError: when the first module is not a ``StaticEmbedding``.
    """
    import torch

    static = model[0]
    if type(static).__name__ != "StaticEmbedding":
        raise EmbedkdError(
            f"concept initialisation needs a static student (static:MODEL), got a {type(static).__name__}"
        )
    weight = static.embedding.weight
    ids, vecs = concept_token_vectors(sim, static.tokenizer, weight.shape[1], seed, power, domain_only)
    with torch.no_grad():
        rows = torch.from_numpy(ids).to(weight.device)
        scale = weight[rows].norm(dim=1).mean()  # concept vectors as long as the model's, on average
        concept = torch.from_numpy(vecs).to(weight.device, weight.dtype) * scale
        weight[rows] = (1 - mix) * weight[rows] + mix * concept
    logger.info(
        "concept init: %d of %d token vectors from the %s concepts (mix %.2f, power %.2f)",
        len(ids),
        weight.shape[0],
        "domain" if domain_only else "ontologies'",
        mix,
        power,
    )
    return len(ids)

"""Ontology concept sets: graphs, extraction with negation, weighted Tversky similarity, search, labeling.

Five lines from reports to an explained similarity::

    from embedkd.ontology import ConceptExtractor, TverskySimilarity, load_ontologies

    graph = load_ontologies(["chest-xray", "hp.obo"])
    extractor, sim = ConceptExtractor(graph), TverskySimilarity(graph)
    a, b = extractor.extract("Mild cardiomegaly."), extractor.extract("Enlarged heart. No effusion.")
    sim.score(a, b), sim.explain(a, b).shared

Submodules import their heavy dependencies (pronto, spaCy) only when used.
"""

from __future__ import annotations

from embedkd.ontology.extract import ConceptExtractor, ConceptSets, ExtractorConfig, Mention
from embedkd.ontology.graph import Concept, ConceptGraph, normalize
from embedkd.ontology.loaders import load_obo, load_ontologies, load_tsv, load_umls
from embedkd.ontology.search import SetIndex, exhaustive_search
from embedkd.ontology.similarity import Explanation, TverskyConfig, TverskySimilarity

__all__ = [
    "Concept",
    "ConceptExtractor",
    "ConceptGraph",
    "ConceptSets",
    "Explanation",
    "ExtractorConfig",
    "Mention",
    "SetIndex",
    "TverskyConfig",
    "TverskySimilarity",
    "exhaustive_search",
    "load_obo",
    "load_ontologies",
    "load_tsv",
    "load_umls",
    "normalize",
]

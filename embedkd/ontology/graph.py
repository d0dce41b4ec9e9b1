"""The concept graph: concepts with names, synonyms, types and ``is_a`` parents, merged across sources.

Loaders (:mod:`embedkd.ontology.loaders`) yield :class:`Concept` records; :class:`ConceptGraph` merges
them. Sources are added in priority order: a concept whose id was claimed by an earlier concept's xref,
or whose normalized name is already a name or synonym of an earlier source's concept, becomes an *alias*
of that concept (its synonyms and parents are folded in). Several ontologies therefore become one graph
in which HPO "Cardiomegaly", a curated "cardiomegaly" and a UMLS CUI are one concept.

Example::

    graph = ConceptGraph()
    graph.add_source("mine", [Concept("X:1", "lung opacity", synonyms=("opacity",), parents=())])
    graph.validate()
    graph.ancestors("X:1", depth=2)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from embedkd.errors import EmbedkdError

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Lower-case, non-alphanumerics to single spaces, stripped (the matching form of a term)."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


@dataclass(frozen=True)
class Concept:
    """One concept as a source states it.

    Attributes:
        id: identifier, unique across all sources (``HP:0001640``, ``CXR:0010``, ``C0018800``).
        name: preferred name.
        synonyms: other surface forms that mean the same concept.
        parents: ids of ``is_a`` parents (may name concepts of another source).
        type: semantic type, the key of the type weights (``finding``, ``disease``, ``device``...).
        source: the ontology the concept came from.
        xrefs: ids of the same concept elsewhere (``HP:0001640``, ``UMLS:C0018800``).
        heading: MeSH-style heading used when labeling reports (``Cardiomegaly``), if any.
    """

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    type: str = "finding"
    source: str = ""
    xrefs: tuple[str, ...] = ()
    heading: str | None = None


@dataclass
class _Node:
    concept: Concept
    synonyms: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    heading: str | None = None


class ConceptGraph:
    """Merged concepts of one or more ontologies, with alias resolution and ancestor walks."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        self._alias: dict[str, str] = {}
        self._surface: dict[str, str] = {}  # normalized name/synonym -> canonical id (first wins)
        self._declared_parents: list[tuple[str, str, str]] = []  # (child, parent, source) to validate
        self.sources: list[str] = []

    # -- building -------------------------------------------------------------------------------
    def add_source(self, source: str, concepts: Iterable[Concept], *, check_parents: bool = False) -> int:
        """Merge ``concepts`` of one source; returns how many became new (non-alias) concepts.

        Args:
            source: name of the source (file name), used in messages.
            concepts: the source's concepts.
            check_parents: record parent ids so :meth:`validate` rejects unknown ones (TSV tables).
        """
        self.sources.append(source)
        batch = list(concepts)
        new = 0
        canonical_of: dict[str, str] = {}
        for c in batch:
            target = self._merge_target(c)
            if target is None:
                self._nodes[c.id] = _Node(c, list(c.synonyms), [], c.heading)
                canonical_of[c.id] = c.id
                new += 1
            else:
                node = self._nodes[target]
                node.synonyms.extend(s for s in (c.name, *c.synonyms) if s not in node.synonyms)
                node.heading = node.heading or c.heading
                self._alias[c.id] = target
                canonical_of[c.id] = target
        for c in batch:  # surfaces and xrefs after the whole batch, so a source never merges with itself
            cid = canonical_of[c.id]
            for term in (c.name, *c.synonyms):
                self._surface.setdefault(normalize(term), cid)
            for x in c.xrefs:
                if x not in self._nodes:
                    self._alias.setdefault(x, cid)
        for c in batch:
            node = self._nodes[canonical_of[c.id]]
            for p in c.parents:
                if p not in node.parents:
                    node.parents.append(p)
                if check_parents:
                    self._declared_parents.append((c.id, p, source))
        return new

    def _merge_target(self, c: Concept) -> str | None:
        if c.id in self._nodes:
            raise EmbedkdError(f"concept id {c.id!r} of {c.source or 'a source'} is defined twice")
        if c.id in self._alias:
            return self._alias[c.id]
        for x in c.xrefs:
            if x in self._nodes:
                return x
            if x in self._alias:
                return self._alias[x]
        target = self._surface.get(normalize(c.name))
        return target

    def validate(self) -> None:
        """Check every parent id recorded with ``check_parents`` names a known concept.

        Raises:
            EmbedkdError: naming the first unknown parent, its child and the source.
        """
        for child, parent, source in self._declared_parents:
            if self.resolve(parent) is None:
                raise EmbedkdError(
                    f"{source}: concept {child!r} names unknown parent id {parent!r}; "
                    "use an id defined in this table or in another --ontology loaded with it"
                )

    # -- queries --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, cid: str) -> bool:
        return self.resolve(cid) is not None

    def resolve(self, cid: str) -> str | None:
        """Canonical id of ``cid`` (itself, or the concept it was merged into), or None."""
        if cid in self._nodes:
            return cid
        return self._alias.get(cid)

    def concept(self, cid: str) -> Concept:
        """The merged concept (synonyms and parents of its aliases folded in)."""
        canon = self.resolve(cid)
        if canon is None:
            raise EmbedkdError(f"unknown concept id {cid!r}")
        node = self._nodes[canon]
        c = node.concept
        return Concept(
            c.id,
            c.name,
            tuple(node.synonyms),
            tuple(self.parents(canon)),
            c.type,
            c.source,
            c.xrefs,
            node.heading,
        )

    def ids(self) -> Iterator[str]:
        """Canonical concept ids."""
        return iter(self._nodes)

    def name(self, cid: str) -> str:
        canon = self.resolve(cid)
        return self._nodes[canon].concept.name if canon else cid

    def type(self, cid: str) -> str:
        canon = self.resolve(cid)
        return self._nodes[canon].concept.type if canon else "unknown"

    def heading(self, cid: str) -> str | None:
        canon = self.resolve(cid)
        return self._nodes[canon].heading if canon else None

    def parents(self, cid: str) -> list[str]:
        """Canonical ids of the direct parents (unknown parents and self-loops dropped)."""
        canon = self.resolve(cid)
        if canon is None:
            return []
        out: list[str] = []
        for p in self._nodes[canon].parents:
            rp = self.resolve(p)
            if rp is not None and rp != canon and rp not in out:
                out.append(rp)
        return out

    def ancestors(self, cid: str, depth: int) -> dict[str, int]:
        """Ancestors within ``depth`` ``is_a`` steps, as ``{id: shortest distance}`` (self excluded)."""
        canon = self.resolve(cid)
        if canon is None or depth <= 0:
            return {}
        seen: dict[str, int] = {canon: 0}
        frontier = [canon]
        for dist in range(1, depth + 1):
            nxt = []
            for node in frontier:
                for p in self.parents(node):
                    if p not in seen:
                        seen[p] = dist
                        nxt.append(p)
            frontier = nxt
        del seen[canon]
        return seen

    def surface_forms(self) -> Iterator[tuple[str, str]]:
        """``(term, canonical id)`` for every name and synonym, for the matcher."""
        for cid, node in self._nodes.items():
            yield node.concept.name, cid
            for s in node.synonyms:
                yield s, cid

"""Tiny hand-made vocabularies shared by the ontology tests."""

from __future__ import annotations

from pathlib import Path

TINY_TSV = """\
# a hand-made chest vocabulary for tests
id\tname\tsynonyms\tparents\ttype\theading
T:1\tchest finding\t\t\tgroup\t
T:2\topacity\topacification\tT:1\tfinding\tOpacity
T:3\tairspace consolidation\tconsolidation\tT:2\tfinding\t
T:4\tpleural effusion\teffusion\tT:1\tfinding\tPleural Effusion
T:5\tcardiomegaly\tenlarged heart|heart enlargement\tT:1\tfinding\tCardiomegaly
T:6\tpacemaker\tpacer\t\tdevice\tPacemaker, Artificial
T:7\tgranuloma\t\tT:1\tfinding\tGranuloma
T:8\tcalcified granuloma\t\tT:7\tfinding\tCalcified Granuloma
T:9\tpneumonia\t\tT:2\tdisease\tPneumonia
"""

TINY_OBO = """\
format-version: 1.2
ontology: tiny

[Term]
id: TO:0000001
name: abnormality of the thorax

[Term]
id: TO:0000002
name: Pleural effusion
synonym: "Hydrothorax" EXACT []
synonym: "fluid in the chest" RELATED []
synonym: "pleural thing" BROAD []
is_a: TO:0000001 ! abnormality of the thorax

[Term]
id: TO:0000003
name: Pneumothorax
xref: MeSH:D011030 "Pneumothorax"
is_a: TO:0000001 ! abnormality of the thorax

[Term]
id: TO:0000004
name: old thing
is_obsolete: true
"""

# Synthetic UMLS files (made-up CUIs, real field layout): 18 MRCONSO fields, 16 MRREL fields.
MRCONSO = """\
C9000001|ENG|P|L1|PF|S1|Y|A1||||SRC|PT|X1|Lung disease|0|N||
C9000002|ENG|P|L2|PF|S2|Y|A2||||SRC|PT|X2|Pneumonia|0|N||
C9000002|ENG|S|L3|VO|S3|N|A3||||SRC|SY|X2|Lung infection|0|N||
C9000002|FRE|P|L4|PF|S4|Y|A4||||SRC|PT|X2|Pneumonie|0|N||
C9000003|ENG|P|L5|PF|S5|Y|A5||||SRC|PT|X3|Lobar pneumonia|0|N||
C9000004|ENG|P|L6|PF|S6|Y|A6||||SRC|PT|X4|Suppressed name|0|O||
"""
MRREL = """\
C9000002|A2|SCUI|PAR|C9000001|A1|SCUI|isa|R1||SRC|SRC|||N||
C9000003|A5|SCUI|PAR|C9000002|A2|SCUI|isa|R2||SRC|SRC|||N||
C9000001|A1|SCUI|CHD|C9000002|A2|SCUI|inverse_isa|R3||SRC|SRC|||N||
"""
MRSTY = """\
C9000001|T047|B2.2.1.2.1|Disease or Syndrome|AT1||
C9000002|T047|B2.2.1.2.1|Disease or Syndrome|AT2||
C9000003|T047|B2.2.1.2.1|Disease or Syndrome|AT3||
"""


def write_tiny(folder: Path) -> dict[str, Path]:
    """Write the tiny TSV, OBO and UMLS files into ``folder``; returns their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.tsv").write_text(TINY_TSV)
    (folder / "tiny.obo").write_text(TINY_OBO)
    umls = folder / "umls"
    umls.mkdir(exist_ok=True)
    (umls / "MRCONSO.RRF").write_text(MRCONSO)
    (umls / "MRREL.RRF").write_text(MRREL)
    (umls / "MRSTY.RRF").write_text(MRSTY)
    return {"tsv": folder / "tiny.tsv", "obo": folder / "tiny.obo", "umls": umls / "MRCONSO.RRF"}

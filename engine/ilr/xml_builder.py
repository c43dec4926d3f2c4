"""ILR items' data as the XML elements of ``schemafile25.xsd``, in the order its sequences demand.

Each element made from a field is remembered with the JSON pointer of that field, so an XSD
error can be reported on the field of the learner's record it comes from.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: each learner field: (key in the item's data, XSD element), in the order of the XSD's sequence
LEARNER_FIELDS = (
    ("learn_ref_number", "LearnRefNumber"),
    ("uln", "ULN"),
    ("family_name", "FamilyName"),
    ("given_names", "GivenNames"),
    ("date_of_birth", "DateOfBirth"),
    ("ethnicity", "Ethnicity"),
    ("sex", "Sex"),
    ("llddhealthprob", "LLDDHealthProb"),
    ("ni_number", "NINumber"),
    ("postcode_prior", "PostcodePrior"),
    ("postcode", "Postcode"),
    ("tel_no", "TelNo"),
    ("email", "Email"),
)
LLDD_FIELDS = (("lldd_cat", "LLDDCat"), ("primary_lldd", "PrimaryLLDD"))
LEARNER_FAM_FIELDS = (("type", "LearnFAMType"), ("code", "LearnFAMCode"))
DELIVERY_FIELDS = (
    ("learn_aim_ref", "LearnAimRef"),
    ("aim_type", "AimType"),
    ("aim_seq_number", "AimSeqNumber"),
    ("learn_start_date", "LearnStartDate"),
    ("orig_learn_start_date", "OrigLearnStartDate"),
    ("learn_plan_end_date", "LearnPlanEndDate"),
    ("fund_model", "FundModel"),
    ("otj_act_hours", "OTJActHours"),
    ("prog_type", "ProgType"),
    ("std_code", "StdCode"),
    ("del_loc_postcode", "DelLocPostCode"),
    ("con_ref_number", "ConRefNumber"),
    ("epa_org_id", "EPAOrgID"),
    ("comp_status", "CompStatus"),
    ("learn_act_end_date", "LearnActEndDate"),
    ("withdraw_reason", "WithdrawReason"),
    ("outcome", "Outcome"),
    ("ach_date", "AchDate"),
    ("out_grade", "OutGrade"),
)
DELIVERY_FAM_FIELDS = (
    ("type", "LearnDelFAMType"),
    ("code", "LearnDelFAMCode"),
    ("date_from", "LearnDelFAMDateFrom"),
    ("date_to", "LearnDelFAMDateTo"),
)
APP_FIN_FIELDS = (("type", "AFinType"), ("code", "AFinCode"), ("date", "AFinDate"), ("amount", "AFinAmount"))

PROTECTIVE_MARKING = "OFFICIAL-SENSITIVE-Personal"
SOFTWARE = "Tracker"


@dataclass(frozen=True)
class Collection:
    """One ILR collection year: its ``Year`` (``2526``), namespace and schema file."""

    year: str
    namespace: str
    schema_file: str


#: the years whose ESFA schema ships with Tracker (tracker_types/ilr/)
COLLECTIONS = {"2526": Collection("2526", "ESFA/ILR/2025-26", "schemafile25.xsd")}


@dataclass
class Document:
    """The ``Message`` element and what each element came from: ``sources`` maps an element to
    ``(learner index, JSON pointer)``; ``learners`` are the Learner elements in file order."""

    root: ET.Element
    learners: list[ET.Element] = field(default_factory=list)
    sources: dict[ET.Element, tuple[int, str]] = field(default_factory=dict)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class _Builder:
    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.doc: Document | None = None

    def tag(self, name: str) -> str:
        return f"{{{self.ns}}}{name}"

    def sub(self, parent: ET.Element, name: str, text: Any = None) -> ET.Element:
        element = ET.SubElement(parent, self.tag(name))
        if text is not None:
            element.text = _text(text)
        return element

    def fields(self, parent: ET.Element, data: dict, spec: Iterable[tuple[str, str]], at: str, learner: int) -> None:
        for key, name in spec:
            value = data.get(key)
            if value is None or value == "" or (key == "primary_lldd" and value is False):
                continue
            element = self.sub(parent, name, value)
            self.doc.sources[element] = (learner, f"{at}/{key}")

    def rows(self, parent: ET.Element, data: dict, key: str, name: str, spec, at: str, learner: int) -> None:
        for i, row in enumerate(data.get(key) or ()):
            if isinstance(row, dict):
                element = self.sub(parent, name)
                self.doc.sources[element] = (learner, f"{at}/{key}/{i}")
                self.fields(element, row, spec, f"{at}/{key}/{i}", learner)

    def learner(self, parent: ET.Element, data: dict, index: int) -> ET.Element:
        element = self.sub(parent, "Learner")
        self.doc.sources[element] = (index, "")
        self.fields(element, data, LEARNER_FIELDS, "", index)
        self.rows(element, data, "lldd_and_health_problems", "LLDDandHealthProblem", LLDD_FIELDS, "", index)
        self.rows(element, data, "learner_fams", "LearnerFAM", LEARNER_FAM_FIELDS, "", index)
        for i, delivery in enumerate(data.get("learning_deliveries") or ()):
            at = f"/learning_deliveries/{i}"
            node = self.sub(element, "LearningDelivery")
            self.doc.sources[node] = (index, at)
            self.fields(node, delivery, DELIVERY_FIELDS, at, index)
            self.rows(node, delivery, "delivery_fams", "LearningDeliveryFAM", DELIVERY_FAM_FIELDS, at, index)
            self.rows(node, delivery, "app_fin_records", "AppFinRecord", APP_FIN_FIELDS, at, index)
        return element


def build(
    records: list[dict], *, ukprn: str, collection: Collection, serial: int, prepared: datetime, release: str
) -> Document:
    """The ``Message`` for ``records`` (items' data), header first, learners in the given order."""
    builder = _Builder(collection.namespace)
    root = ET.Element(builder.tag("Message"))
    builder.doc = doc = Document(root)
    header = builder.sub(root, "Header")
    details = builder.sub(header, "CollectionDetails")
    builder.sub(details, "Collection", "ILR")
    builder.sub(details, "Year", collection.year)
    builder.sub(details, "FilePreparationDate", prepared.date().isoformat())
    source = builder.sub(header, "Source")
    builder.sub(source, "ProtectiveMarking", PROTECTIVE_MARKING)
    builder.sub(source, "UKPRN", ukprn)
    builder.sub(source, "SoftwareSupplier", SOFTWARE)
    builder.sub(source, "SoftwarePackage", SOFTWARE)
    builder.sub(source, "Release", release[:20])
    builder.sub(source, "SerialNo", f"{serial:02d}")
    builder.sub(source, "DateTime", prepared.replace(microsecond=0).isoformat())
    provider = builder.sub(root, "LearningProvider")
    builder.sub(provider, "UKPRN", ukprn)
    for index, data in enumerate(records):
        doc.learners.append(builder.learner(root, data, index))
    return doc


def to_bytes(doc: Document) -> bytes:
    """The document as UTF-8 XML with a declaration, indented for people who open it."""
    ET.register_namespace("", doc.root.tag[1 : doc.root.tag.index("}")])
    ET.indent(doc.root, space="  ")
    return ET.tostring(doc.root, encoding="utf-8", xml_declaration=True)

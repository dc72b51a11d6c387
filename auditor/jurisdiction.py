"""Where a region is, in GDPR terms, and who the provider's parent answers to.

Location alone does not decide a transfer (EDPB Guidelines 05/2021), but the reading must name
it: an EEA region of a US-parented provider still leaves third-country access to weigh under
Art. 28(1), 32 and 48. Which countries have an adequacy decision, the EU-US Data Privacy
Framework and the providers' parents are versioned data (`legal.yaml`), printed with their
version and review date, never hard-coded: they change, and the tool cannot know whether an
importer is certified on the day a report is read, so the reading says "may apply, if ...".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

LEGAL_DATA = Path(__file__).with_name("legal.yaml")


@dataclass(frozen=True)
class Place:
    name: str
    country: str  # "" when only the continent is known

    @property
    def status(self) -> str:
        """`EEA`, `adequacy decision`, `third country` or `unknown`."""
        data = legal_data()
        if not self.country:
            return "unknown"
        if self.country in data["eea"]:
            return "EEA"
        decision = data["adequacy"].get(self.country)
        if decision is None:
            return "third country"
        if decision.get("scope"):
            return "third country"  # the decision covers some importers only: see transfer_words
        return "adequacy decision"


@dataclass(frozen=True)
class Parent:
    name: str
    country: str
    dpf: str


@lru_cache(maxsize=1)
def legal_data() -> dict[str, Any]:
    """legal.yaml, read once: {version, reviewed, adequacy, parents, eea, note}."""
    data = yaml.safe_load(LEGAL_DATA.read_text(encoding="utf-8"))
    data["eea"] = frozenset(data["eea"])
    return dict(data)


def legal_version() -> str:
    data = legal_data()
    return f"cc-auditor legal data {data['version']} (reviewed {data['reviewed']})"


def parent_of(provider: str) -> Parent | None:
    raw = legal_data()["parents"].get(provider)
    if raw is None:
        return None
    return Parent(str(raw["name"]), str(raw["country"]), str(raw.get("dpf", "")))


def _parent_text(provider: str) -> str:
    parent = parent_of(provider)
    return f"{parent.name} ({parent.country})" if parent else "unknown provider"


#: Provider legal parent and its jurisdiction, as reports print it (from legal.yaml). A libvirt
#: host has no cloud provider: whoever runs it is the operator the owner configured.
PROVIDER_PARENT: dict[str, str] = {
    **{p: _parent_text(p) for p in ("aws", "gcp", "azure")},
    "libvirt": "none: the host's operator, as the owner configured it",
}

_AWS: dict[str, Place] = {
    "eu-west-1": Place("Ireland", "Ireland"),
    "eu-west-2": Place("United Kingdom", "United Kingdom"),
    "eu-west-3": Place("France", "France"),
    "eu-central-1": Place("Germany", "Germany"),
    "eu-central-2": Place("Switzerland", "Switzerland"),
    "eu-north-1": Place("Sweden", "Sweden"),
    "eu-south-1": Place("Italy", "Italy"),
    "eu-south-2": Place("Spain", "Spain"),
    "us-east-1": Place("United States (N. Virginia)", "United States"),
    "us-east-2": Place("United States (Ohio)", "United States"),
    "us-west-1": Place("United States (N. California)", "United States"),
    "us-west-2": Place("United States (Oregon)", "United States"),
    "ca-central-1": Place("Canada", "Canada"),
    "ap-northeast-1": Place("Japan", "Japan"),
    "ap-northeast-2": Place("Republic of Korea", "Republic of Korea"),
    "il-central-1": Place("Israel", "Israel"),
}

_GCP: dict[str, Place] = {
    "europe-west1": Place("Belgium", "Belgium"),
    "europe-west3": Place("Germany", "Germany"),
    "europe-west4": Place("Netherlands", "Netherlands"),
    "europe-west9": Place("France", "France"),
    "europe-north1": Place("Finland", "Finland"),
    "europe-southwest1": Place("Spain", "Spain"),
    "europe-west8": Place("Italy", "Italy"),
    "europe-west2": Place("United Kingdom", "United Kingdom"),
    "europe-west6": Place("Switzerland", "Switzerland"),
    "asia-northeast1": Place("Japan", "Japan"),
}

_AZURE: dict[str, Place] = {
    "westeurope": Place("Netherlands", "Netherlands"),
    "northeurope": Place("Ireland", "Ireland"),
    "germanywestcentral": Place("Germany", "Germany"),
    "francecentral": Place("France", "France"),
    "swedencentral": Place("Sweden", "Sweden"),
    "italynorth": Place("Italy", "Italy"),
    "spaincentral": Place("Spain", "Spain"),
    "switzerlandnorth": Place("Switzerland", "Switzerland"),
    "uksouth": Place("United Kingdom", "United Kingdom"),
    "eastus": Place("United States (Virginia)", "United States"),
    "eastus2": Place("United States (Virginia)", "United States"),
    "westus": Place("United States (California)", "United States"),
    "centralus": Place("United States (Iowa)", "United States"),
}

_BY_PROVIDER: dict[str, dict[str, Place]] = {"aws": _AWS, "gcp": _GCP, "azure": _AZURE}

#: Region-name prefixes whose country we know when the exact region is not listed.
_PREFIX: dict[str, Place] = {
    "us-": Place("United States", "United States"),
    "eu-": Place("Europe", ""),
}


def place_of(provider: str, region: str) -> Place:
    if provider == "libvirt":  # the region is the country the owner says the host is in
        return Place(region, region if _is_country(region) else "")
    known = _BY_PROVIDER.get(provider, {})
    if region in known:
        return known[region]
    for prefix, place in _PREFIX.items():
        if region.startswith(prefix):
            return place
    return Place(region, "")


def _is_country(name: str) -> bool:
    data = legal_data()
    return name in data["eea"] or name in data["adequacy"] or name in _KNOWN_COUNTRIES


#: Countries a region table above names: a libvirt location may name them too.
_KNOWN_COUNTRIES = frozenset(
    p.country for table in (_AWS, _GCP, _AZURE) for p in table.values() if p.country
)


def describe(provider: str, region: str, operator: str = "") -> str:
    """One line for reports: `eu-west-1: Ireland (EEA); provider parent Amazon.com, Inc. (US)`.

    A libvirt host has no provider parent; the line names the operator the owner configured.
    """
    place = place_of(provider, region)
    if provider == "libvirt":
        who = operator or "not configured (the owner runs it)"
        return f"{region}: {place.name} ({place.status}); host operator {who}"
    parent = PROVIDER_PARENT.get(provider, "unknown provider")
    return f"{region}: {place.name} ({place.status}); provider parent {parent}"


def adequacy_of(country: str) -> dict[str, str] | None:
    raw = legal_data()["adequacy"].get(country)
    return {str(k): str(v) for k, v in raw.items()} if raw else None


def non_eea_parent(provider: str) -> Parent | None:
    """The provider's parent when it sits outside the EEA (a third country can compel it)."""
    parent = parent_of(provider)
    if parent is None or parent.country in legal_data()["eea"]:
        return None
    return parent


def transfer_words(provider: str, region: str) -> str:
    """What the location and the parent mean for Chapter V, as far as this tool can know it."""
    place = place_of(provider, region)
    parent = non_eea_parent(provider)
    parts: list[str] = []
    adequacy = adequacy_of(place.country) or {}
    if place.status == "EEA":
        parts.append(f"{region} is in the EEA ({place.name}): storing data there is no transfer")
    elif place.status == "unknown":
        parts.append(f"where {region} is could not be told: whether Chapter V applies is open")
    elif adequacy.get("scope"):
        parts.append(
            f"{region} is in a third country ({place.name}); {adequacy['decision']} may be the "
            f"transfer basis (GDPR Art. 45) only for {adequacy['scope']}, otherwise Art. 46 "
            "safeguards apply"
        )
    elif adequacy:
        parts.append(
            f"{region} is in {place.name}, covered by {adequacy['decision']} (GDPR Art. 45)"
        )
    else:
        parts.append(
            f"{region} is in a third country ({place.name}) without an adequacy decision: "
            "Art. 46 safeguards and a transfer impact assessment apply"
        )
    if parent is not None:
        dpf = ""
        if (adequacy_of(parent.country) or {}).get("scope") and parent.dpf:
            dpf = f" (DPF List: {parent.dpf}; check it)"
        parts.append(
            f"the provider's parent, {parent.name}, can be compelled under {parent.country} "
            f"law (GDPR Art. 48){dpf}"
        )
    return "; ".join(parts) + "."

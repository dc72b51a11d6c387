"""Where a region is, in GDPR terms, and who the provider's parent answers to.

Location alone does not decide a transfer (EDPB Guidelines 05/2021), but the reading must name
it: an EEA region of a US-parented provider still leaves third-country access to weigh under
Art. 28(1), 32 and 48.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    name: str
    status: str  # "EEA", "adequacy decision", "third country", "unknown"


#: Provider legal parent and its jurisdiction.
PROVIDER_PARENT: dict[str, str] = {
    "aws": "Amazon.com, Inc. (United States)",
    "gcp": "Google LLC (United States)",
    "azure": "Microsoft Corporation (United States)",
}

_AWS: dict[str, Place] = {
    "eu-west-1": Place("Ireland", "EEA"),
    "eu-west-2": Place("United Kingdom", "adequacy decision"),
    "eu-west-3": Place("France", "EEA"),
    "eu-central-1": Place("Germany", "EEA"),
    "eu-central-2": Place("Switzerland", "adequacy decision"),
    "eu-north-1": Place("Sweden", "EEA"),
    "eu-south-1": Place("Italy", "EEA"),
    "eu-south-2": Place("Spain", "EEA"),
    "us-east-1": Place("United States (N. Virginia)", "third country"),
    "us-east-2": Place("United States (Ohio)", "third country"),
    "us-west-1": Place("United States (N. California)", "third country"),
    "us-west-2": Place("United States (Oregon)", "third country"),
    "ca-central-1": Place("Canada", "adequacy decision"),
    "ap-northeast-1": Place("Japan", "adequacy decision"),
    "ap-northeast-2": Place("Republic of Korea", "adequacy decision"),
    "il-central-1": Place("Israel", "adequacy decision"),
}

_GCP: dict[str, Place] = {
    "europe-west1": Place("Belgium", "EEA"),
    "europe-west3": Place("Germany", "EEA"),
    "europe-west4": Place("Netherlands", "EEA"),
    "europe-west9": Place("France", "EEA"),
    "europe-north1": Place("Finland", "EEA"),
    "europe-southwest1": Place("Spain", "EEA"),
    "europe-west8": Place("Italy", "EEA"),
    "europe-west2": Place("United Kingdom", "adequacy decision"),
    "europe-west6": Place("Switzerland", "adequacy decision"),
    "asia-northeast1": Place("Japan", "adequacy decision"),
}

_AZURE: dict[str, Place] = {
    "westeurope": Place("Netherlands", "EEA"),
    "northeurope": Place("Ireland", "EEA"),
    "germanywestcentral": Place("Germany", "EEA"),
    "francecentral": Place("France", "EEA"),
    "swedencentral": Place("Sweden", "EEA"),
    "italynorth": Place("Italy", "EEA"),
    "spaincentral": Place("Spain", "EEA"),
    "switzerlandnorth": Place("Switzerland", "adequacy decision"),
    "uksouth": Place("United Kingdom", "adequacy decision"),
    "eastus": Place("United States (Virginia)", "third country"),
    "eastus2": Place("United States (Virginia)", "third country"),
    "westus": Place("United States (California)", "third country"),
    "centralus": Place("United States (Iowa)", "third country"),
}

_BY_PROVIDER: dict[str, dict[str, Place]] = {"aws": _AWS, "gcp": _GCP, "azure": _AZURE}

#: Region-name prefixes whose country we know when the exact region is not listed.
_PREFIX: dict[str, Place] = {
    "us-": Place("United States", "third country"),
    "eu-": Place("Europe", "unknown"),
}


def place_of(provider: str, region: str) -> Place:
    known = _BY_PROVIDER.get(provider, {})
    if region in known:
        return known[region]
    for prefix, place in _PREFIX.items():
        if region.startswith(prefix):
            return place
    return Place(region, "unknown")


def describe(provider: str, region: str) -> str:
    """One line for reports: `eu-west-1: Ireland (EEA); provider parent Amazon.com, Inc. (US)`."""
    place = place_of(provider, region)
    parent = PROVIDER_PARENT.get(provider, "unknown provider")
    return f"{region}: {place.name} ({place.status}); provider parent {parent}"

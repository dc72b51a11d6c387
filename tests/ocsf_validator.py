"""Validate OCSF events against the published schema (tests/data/ocsf: the compiled 1.8.0
Compliance Finding class and every object it reaches, from ocsf/ocsf-schema).

What is checked, as the OCSF validator does: every attribute is defined for its class or object
(nothing invented), required attributes are present (those of a profile only when the event
declares the profile in `metadata.profiles`), attributes of a profile appear only with that
profile, types match (objects recursively, arrays where `is_array`), enumerated integer
attributes hold a defined value, and object constraints (`at_least_one`, `just_one`) hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).parent / "data" / "ocsf" / "compliance_finding-1.8.0.json"

_SCALARS: dict[str, tuple[type, ...]] = {
    "string_t": (str,),
    "integer_t": (int,),
    "long_t": (int,),
    "float_t": (int, float),
    "boolean_t": (bool,),
    "json_t": (object,),
}


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


class _Validator:
    def __init__(self, data: dict[str, Any], profiles: set[str]) -> None:
        self.data = data
        self.profiles = profiles
        self.errors: list[str] = []

    def scalar_base(self, type_name: str) -> str:
        seen = set()
        while type_name not in _SCALARS and type_name in self.data["types"]:
            if type_name in seen:
                break
            seen.add(type_name)
            base = self.data["types"][type_name].get("type")
            if base is None:
                break
            type_name = base
        return type_name

    def value(self, where: str, spec: dict[str, Any], value: Any) -> None:
        type_name = spec["type"]
        if type_name == "object":  # OCSF's open object (`unmapped`, `data`): any keys
            if not isinstance(value, dict):
                self.errors.append(f"{where}: expected an object")
            return
        if type_name in self.data["objects"]:
            if not isinstance(value, dict):
                self.errors.append(f"{where}: expected an object ({type_name})")
                return
            self.obj(where, self.data["objects"][type_name], value)
            return
        base = self.scalar_base(type_name)
        allowed = _SCALARS.get(base)
        if allowed is None:
            self.errors.append(f"{where}: unknown type {type_name}")
            return
        if bool in allowed and not isinstance(value, bool):
            self.errors.append(f"{where}: expected a boolean")
        elif bool not in allowed and isinstance(value, bool):
            self.errors.append(f"{where}: expected {base}, got a boolean")
        elif not isinstance(value, allowed):
            self.errors.append(f"{where}: expected {base}, got {type(value).__name__}")
        enum = spec.get("enum")
        if enum and isinstance(value, int) and str(value) not in enum:
            self.errors.append(f"{where}: {value} is not one of {sorted(enum, key=int)}")

    def obj(self, where: str, definition: dict[str, Any], value: dict[str, Any]) -> None:
        attributes = definition["attributes"]
        for name, item in value.items():
            spec = attributes.get(name)
            path = f"{where}.{name}" if where else name
            if spec is None:
                self.errors.append(f"{path}: not an attribute of {definition['name']}")
                continue
            profile = spec.get("profile")
            if profile and profile not in self.profiles:
                self.errors.append(f"{path}: belongs to profile {profile}, not declared")
            if spec.get("is_array"):
                if not isinstance(item, list):
                    self.errors.append(f"{path}: expected an array")
                    continue
                for n, element in enumerate(item):
                    self.value(f"{path}[{n}]", spec, element)
            else:
                self.value(path, spec, item)
        for name, spec in attributes.items():
            profile = spec.get("profile")
            needed = spec.get("requirement") == "required" and (
                not profile or profile in self.profiles
            )
            if needed and name not in value:
                self.errors.append(f"{where or definition['name']}: required {name} missing")
        constraints = definition.get("constraints") or {}
        for kind, names in constraints.items():
            present = [n for n in names if n in value]
            if kind == "at_least_one" and not present:
                self.errors.append(f"{where}: needs at least one of {names}")
            if kind == "just_one" and len(present) != 1:
                self.errors.append(f"{where}: needs exactly one of {names}")


def validate(event: dict[str, Any], class_name: str = "compliance_finding") -> list[str]:
    """Every way `event` departs from the schema (empty: it validates)."""
    data = schema()
    profiles = set((event.get("metadata") or {}).get("profiles") or [])
    unknown = profiles - set(data["profiles"])
    checker = _Validator(data, profiles)
    definition = data["classes"][class_name]
    checker.obj("", definition, event)
    if unknown:
        checker.errors.append(f"unknown profiles {sorted(unknown)}")
    return checker.errors

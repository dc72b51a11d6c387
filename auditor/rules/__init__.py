"""Rule packs (YAML, readable by compliance officers) and their loader."""

from auditor.rules.loader import (
    CompiledRule,
    Rule,
    RulePack,
    RulePackError,
    builtin_pack_paths,
    load_pack,
    load_packs,
)

__all__ = [
    "CompiledRule",
    "Rule",
    "RulePack",
    "RulePackError",
    "builtin_pack_paths",
    "load_pack",
    "load_packs",
]

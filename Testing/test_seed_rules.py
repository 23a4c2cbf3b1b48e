"""Every numeric rule of the seed standards is in the catalogue, with its value and its clause.

The list (Testing/seed_rules.toml) was typed from the seed texts, independently of the
protocol files: a rule missing from the catalogue, a value that differs, or a source that
does not cite the seed clause fails here. Conversely, every catalogue entry that cites a
seed must be on the list (no invented rule hides behind a seed citation).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from sbrtstandards.catalogue import load_protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
SEEDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "seeds"  # CI clones main beside shared/
SEED_DOCS = {
    "000": "T/CNHAW-B-0017-2025 explanatory note",
    "001": "T/CNHAW-B-0020-2025 explanatory note",
    "002": "T/CNHAW-B-0017-2025 draft",
}
DATA = tomllib.loads((HERE / "seed_rules.toml").read_text(encoding="utf-8"))
ENTRIES: list[dict[str, Any]] = DATA["entry"]
KINDS = ("rule", "qa", "fractionation", "note")


def _items(protocol_id: str, kind: str) -> dict[str, Any]:
    p = load_protocol(protocol_id)
    seq = {"rule": p.rules, "qa": p.qa_items, "fractionation": p.fractionation, "note": p.notes}[kind]
    return {item.id: item for item in seq}


def _cites(source: str, doc: str, clause: str) -> bool:
    """``clause`` appears after ``doc`` and before the next document named in ``source``."""
    for m in re.finditer(re.escape(doc), source):
        rest = source[m.end() :]
        nxt = rest.find("T/CNHAW")
        if clause in (rest if nxt < 0 else rest[:nxt]):
            return True
    return False


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return isinstance(actual, tuple) and len(actual) == len(expected) and all(map(_same, actual, expected))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and float(actual) == float(expected)
    return actual == expected


def _check_expect(item: Any, expect: dict[str, Any], label: str) -> None:
    for key, want in expect.items():
        if key == "conditions":
            for ck, cv in want.items():
                have = item.conditions.get(ck)
                want_v = tuple(cv) if isinstance(cv, list) else cv
                assert have == want_v, f"{label}: condition {ck} is {have!r}, the seed says {want_v!r}"
        elif key == "prior_dose_discount_percent":
            for band, pct in want.items():
                have = item.prior_dose_discount_percent[band]
                assert have == pct, f"{label}: discount {band} is {have}, the seed says {pct}"
        elif key == "bed10_gy":
            assert _same(item.bed10_stated_gy, want), f"{label}: BED {item.bed10_stated_gy} != seed {want}"
        else:
            have = getattr(item, key)
            assert _same(have, want), f"{label}: {key} is {have!r}, the seed says {want!r}"


@pytest.mark.parametrize(
    "entry", ENTRIES, ids=[f"{e['seed']}-{e['at'].split()[-1]}-{i}" for i, e in enumerate(ENTRIES)]
)
def test_seed_rule_is_in_the_catalogue(entry: dict[str, Any]) -> None:
    protocol_id, kind, item_id = entry["at"].split()
    label = f"seed {entry['seed']} {entry['clause']} ({entry['text']})"
    assert kind in KINDS
    item = _items(protocol_id, kind).get(item_id)
    assert item is not None, f"{label}: missing from {protocol_id} ({kind} {item_id})"
    source = item.source
    doc = SEED_DOCS[entry["seed"]]
    assert _cites(source, doc, entry["clause"]), f"{label}: source {source!r} does not cite {doc} {entry['clause']}"
    _check_expect(item, entry.get("expect", {}), label)


def test_every_seed_citation_in_the_catalogue_is_listed() -> None:
    listed = {(e["at"].split()[1], e["at"].split()[2]) for e in ENTRIES}
    unlisted = []
    for pid in ("cn-lung-sbrt", "cn-liver-sbrt", "uk-sabr-liver-5fx", "michigan-reirradiation", "tg101"):
        for kind in KINDS:
            for item_id, item in _items(pid, kind).items():
                if getattr(item, "included_from", ""):
                    continue
                first = item.source.split(";")[0].strip()
                if any(first.startswith(doc) for doc in SEED_DOCS.values()) and (kind, item_id) not in listed:
                    unlisted.append(f"{pid} {kind} {item_id}")
    assert unlisted == []


def test_the_list_covers_all_three_seeds_and_every_kind() -> None:
    seeds = {e["seed"] for e in ENTRIES}
    kinds = {e["at"].split()[1] for e in ENTRIES}
    assert seeds == {"000", "001", "002"}
    assert kinds == set(KINDS)
    assert len(ENTRIES) > 200


@pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason="seed texts are not in this checkout")
@pytest.mark.parametrize("seed", ["000", "001", "002"])
def test_clause_numbers_exist_in_the_seed_text(seed: str) -> None:
    text = next(SEEDS_DIR.glob(f"{seed}_*.txt")).read_text(encoding="utf-8")
    missing = []
    for e in ENTRIES:
        if e["seed"] != seed:
            continue
        m = re.search(r"(A\.\d)|§(\d+(?:\.\d+)*)", e["clause"])
        assert m, e["clause"]
        number = m.group(1) or m.group(2)
        if number not in text:
            missing.append(e["clause"])
    assert missing == []

"""The embedded default dataset: a seeded, realistic tool catalog with labeled intents.

``synthesize(cfg)`` needs no download and no model. Tools come from category
archetypes (recipe search, flight search, ...) with invented brands and specialties;
capabilities chain 1 to N tools (mostly within a category, some across); intents are
written in the users' words, not the catalog's, with slot values, typos and casing noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from caprank.config import CaprankConfig, SynthConfig
from caprank.data.dataset import Dataset
from caprank.data.schemas import CAPABILITIES, INTENTS, INTERACTIONS, LABELS, TOOLS
from caprank.data.synth_vocab import (
    BRAND_HEADS,
    BRAND_TAILS,
    CATEGORIES,
    CONNECTORS,
    DIRECT_OPENERS,
    OPENERS,
    SELF_DIRECTED,
    SLOTS,
    Archetype,
    Category,
    Qualifier,
)
from caprank.errors import ConfigError

# Share of capabilities with 1, 2, 3, 4, ... tools (cut at max_tools_per_capability).
SIZE_WEIGHTS = (0.30, 0.35, 0.22, 0.13)
QUALIFIED_TOOL_RATE = 0.6  # share of tools that have a specialty
MENTION_QUALIFIER_RATE = 0.6  # chance an intent mentions its capability's specialty
DROP_STEP_RATE = 0.3  # chance a request for 3+ steps leaves one middle step unsaid
TOOL_POPULARITY_EXPONENT = 0.8  # Zipf exponent of how often a tool is reused
MAX_REPEATED_DRAWS = 2000  # give up: the catalog is too small for that many capabilities
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class _Tool:
    tool_id: str
    name: str
    description: str
    category: int
    archetype: Archetype
    qualifier: Qualifier | None


def start_datetime(synth: SynthConfig) -> datetime:
    """Midnight UTC of ``start_date``; a bad date is a config error naming the key."""
    if synth.start_date is None:
        today = datetime.now(UTC).date()
        day = today - timedelta(days=synth.days)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        day = date.fromisoformat(synth.start_date)
    except ValueError as exc:
        raise ConfigError(
            "data.synth.start_date", f"not an ISO date: {synth.start_date!r}", allowed="YYYY-MM-DD"
        ) from exc
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _conjugate(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def third_person(phrase: str) -> str:
    """'^search recipes and ^book' -> 'searches recipes and books' (marked verbs)."""
    return re.sub(r"\^(\w+)", lambda m: _conjugate(m.group(1)), phrase)


def base_form(phrase: str) -> str:
    """'^search recipes and ^book' -> 'search recipes and book'."""
    return phrase.replace("^", "")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, n + 1)]


# --------------------------------------------------------------------------- tools


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    combos = [h + t for h in BRAND_HEADS for t in BRAND_TAILS]
    order = rng.permutation(len(combos))
    return [combos[order[i % len(combos)]] for i in range(n)]


def _tool_description(
    rng: np.random.Generator, brand: str, noun: str, arch: Archetype, qual: Qualifier | None
) -> str:
    does, does3 = base_form(arch.does), third_person(arch.does)
    spec = f" {qual.desc}" if qual else ""
    forms = (
        f"{_cap(does3)}{spec}.",
        f"{brand} API: {does3}{spec}.",
        f"A {noun.lower()} service that {does3}{spec}.",
        f"Lets applications {does}{spec}.",
        f"{noun} endpoint to {does}{spec}; returns JSON.",
    )
    return _pick(rng, forms)


def _make_tools(
    rng: np.random.Generator, synth: SynthConfig, cats: tuple[Category, ...]
) -> list[_Tool]:
    per_cat = np.full(len(cats), synth.n_tools // len(cats))
    per_cat[: synth.n_tools % len(cats)] += 1
    brands = _brand_names(rng, synth.n_tools)
    ids = _ids("tool", synth.n_tools)
    tools: list[_Tool] = []
    seen: set[str] = set()
    for c, cat in enumerate(cats):
        start = int(rng.integers(len(cat.archetypes)))
        for j in range(int(per_cat[c])):
            arch = cat.archetypes[(start + j) % len(cat.archetypes)]
            qual = _pick(rng, cat.qualifiers) if rng.random() < QUALIFIED_TOOL_RATE else None
            brand = brands[len(tools)]
            noun = _pick(rng, arch.nouns)
            name = f"{brand} {noun}"
            k = 2
            while name in seen:  # large catalogs exhaust brand x noun pairs
                name = f"{brand} {noun} {k}"
                k += 1
            seen.add(name)
            desc = _tool_description(rng, brand, noun, arch, qual)
            tools.append(_Tool(ids[len(tools)], name, desc, c, arch, qual))
    return tools


# --------------------------------------------------------------------------- capabilities


def _size_probs(max_tools: int) -> np.ndarray:
    w = np.array(SIZE_WEIGHTS[:max_tools] + (0.05,) * max(0, max_tools - len(SIZE_WEIGHTS)))
    return w / w.sum()


def _make_capabilities(
    rng: np.random.Generator, synth: SynthConfig, tools: list[_Tool], n_cats: int
) -> list[list[int]]:
    """Ordered tool-index lists, unique, reusing popular tools (Zipf weights)."""
    pop = rng.permutation(len(tools)) + 1.0
    pop = pop**-TOOL_POPULARITY_EXPONENT
    by_cat_arch: dict[int, dict[str, list[int]]] = {}
    for i, t in enumerate(tools):
        by_cat_arch.setdefault(t.category, {}).setdefault(t.archetype.key, []).append(i)
    arch_order = {
        c: [a.key for a in CATEGORIES[c].archetypes if a.key in by_cat_arch.get(c, {})]
        for c in range(n_cats)
    }
    cats_with_tools = [c for c in range(n_cats) if arch_order[c]]
    size_p = _size_probs(synth.max_tools_per_capability)

    def draw(c: int, key: str) -> int:
        members = by_cat_arch[c][key]
        w = pop[members] / pop[members].sum()
        return members[int(rng.choice(len(members), p=w))]

    caps: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    misses = 0  # draws in a row that repeated an existing composition
    while len(caps) < synth.n_capabilities:
        if misses > MAX_REPEATED_DRAWS:
            raise ConfigError(
                "data.synth.n_capabilities",
                f"cannot form {synth.n_capabilities} distinct capabilities from "
                f"{len(tools)} tools; lower it or raise data.synth.n_tools",
            )
        size = int(rng.choice(len(size_p), p=size_p)) + 1
        cat = _pick(rng, cats_with_tools)
        cross = (
            size >= 2 and len(cats_with_tools) > 1 and rng.random() < synth.cross_category_fraction
        )
        n_in = min(size - 1 if cross else size, len(arch_order[cat]))
        keys = rng.choice(len(arch_order[cat]), size=n_in, replace=False)
        chosen = [draw(cat, arch_order[cat][k]) for k in sorted(keys)]
        if cross:
            other = _pick(rng, [c for c in cats_with_tools if c != cat])
            chosen.append(draw(other, _pick(rng, arch_order[other])))
        key = tuple(chosen)
        if key in seen or len(set(chosen)) != len(chosen):
            misses += 1
            continue
        misses = 0
        seen.add(key)
        caps.append(chosen)
    return caps


def _capability_description(rng: np.random.Generator, steps: list[_Tool]) -> str:
    def phrase(t: _Tool, third: bool) -> str:
        does = third_person(t.archetype.does) if third else base_form(t.archetype.does)
        return does + (f" {t.qualifier.desc}" if t.qualifier else "")

    if len(steps) == 1:
        t = steps[0]
        forms = (
            f"{_cap(phrase(t, True))} with {t.name}.",
            f"Uses {t.name} to {phrase(t, False)}.",
            f"{t.name}: {phrase(t, False)}.",
        )
        return _pick(rng, forms)
    names = [t.name for t in steps]
    third = [phrase(t, True) for t in steps]
    base = [phrase(t, False) for t in steps]
    forms = (
        "Workflow that " + ", then ".join(third) + ".",
        "; then ".join(
            f"{_cap(b) if i == 0 else b} with {n}"
            for i, (b, n) in enumerate(zip(base, names, strict=True))
        )
        + ".",
        f"Chains {', '.join(names[:-1])} and {names[-1]}: "
        + ", ".join(third[:-1])
        + f" and {third[-1]}.",
        " ".join(
            f"Step {i + 1}: {b} ({n})." for i, (b, n) in enumerate(zip(base, names, strict=True))
        ),
    )
    return _pick(rng, forms)


# --------------------------------------------------------------------------- intents


def _fill_slots(rng: np.random.Generator, text: str) -> str:
    return _SLOT.sub(lambda m: _pick(rng, SLOTS[m.group(1)]), text)


def _typo(rng: np.random.Generator, text: str) -> str:
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long_words:
        return text
    i = _pick(rng, long_words)
    w = words[i]
    j = int(rng.integers(1, len(w) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # swap two neighbours
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == 1:  # drop a letter
        w = w[:j] + w[j + 1 :]
    else:  # double a letter
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _noise(rng: np.random.Generator, text: str) -> str:
    kind = int(rng.integers(4))
    if kind == 0:
        return text.lower()
    if kind == 1:
        return _typo(rng, text.lower().rstrip(".?"))
    if kind == 2:
        return _typo(rng, _typo(rng, text))
    return text.upper() if len(text) < 40 else _typo(rng, text)


def _intent_text(rng: np.random.Generator, steps: list[_Tool], noise_rate: float) -> str:
    clauses = [_pick(rng, t.archetype.asks) for t in steps]
    if len(clauses) >= 3 and rng.random() < DROP_STEP_RATE:
        del clauses[int(rng.integers(1, len(clauses) - 1))]
    body = clauses[0]
    for clause in clauses[1:]:
        body += _pick(rng, CONNECTORS) + clause
    quals = [t.qualifier for t in steps if t.qualifier is not None]
    if quals and rng.random() < MENTION_QUALIFIER_RATE:
        body += ", " + _pick(rng, _pick(rng, quals).asks)
    openers = OPENERS if not clauses[0].startswith(SELF_DIRECTED) else DIRECT_OPENERS
    opener, end = _pick(rng, openers)
    text = _fill_slots(rng, opener + body + end)
    text = _cap(text) if not opener.startswith("hey") else text
    if rng.random() < noise_rate:
        text = _noise(rng, text)
    return text


def _split_counts(rng: np.random.Generator, n: int, fraction: float) -> tuple[int, int]:
    """(test, valid) sizes for n intents: stochastic rounding, one train intent kept."""
    exact = fraction * n
    n_test = int(exact) + int(rng.random() < exact - int(exact))
    n_valid = int(exact) + int(rng.random() < exact - int(exact))
    while n_test + n_valid > n - 1 and n_test + n_valid > 0:
        if n_valid >= n_test and n_valid > 0:
            n_valid -= 1
        else:
            n_test -= 1
    return n_test, n_valid


# --------------------------------------------------------------------------- entry point


def _creation_days(rng: np.random.Generator, cfg: CaprankConfig, n_caps: int) -> np.ndarray:
    """Day index each capability enters the catalog: 0 for most, later for a few."""
    synth = cfg.data.synth
    days = np.zeros(n_caps, dtype=np.int64)
    n_new = round(synth.new_capability_fraction * n_caps)
    if synth.new_capability_fraction > 0 and n_caps >= 2:
        n_new = max(1, n_new)
    if n_new == 0 or synth.days < 2:
        return days
    new = rng.choice(n_caps, size=n_new, replace=False)
    launch = cfg.data.simulate.drift_new_capabilities_day
    if launch is not None and 1 <= launch < synth.days:
        days[new] = launch
    else:
        days[new] = rng.integers(max(1, synth.days // 2), synth.days, size=n_new)
    return days


def synthesize(cfg: CaprankConfig) -> Dataset:
    """The embedded default dataset, a pure function of ``cfg.data.seed`` and ``cfg.data.synth``.

    When ``cfg.data.simulate.drift_new_capabilities_day`` is set, the late capabilities
    are created on that day, so the catalog and the simulated launch agree.
    """
    synth = cfg.data.synth
    rng = np.random.default_rng([cfg.data.seed, 0x5EED])
    start = start_datetime(synth)
    if synth.n_categories > len(CATEGORIES):
        raise ConfigError("data.synth.n_categories", f"at most {len(CATEGORIES)} are built in")
    cats = CATEGORIES[: synth.n_categories]

    tools = _make_tools(rng, synth, cats)
    caps = _make_capabilities(rng, synth, tools, len(cats))
    cap_ids = _ids("cap", len(caps))
    created_days = _creation_days(rng, cfg, len(caps))
    cap_rows = [
        {
            "capability_id": cap_ids[k],
            "description": _capability_description(rng, [tools[i] for i in members]),
            "tool_ids": [tools[i].tool_id for i in members],
            "created_at": start + timedelta(days=int(created_days[k])),
        }
        for k, members in enumerate(caps)
    ]

    pending: list[tuple[str, int, str]] = []  # (text, capability index, split)
    for k, members in enumerate(caps):
        steps = [tools[i] for i in members]
        n = synth.intents_per_capability
        texts = [_intent_text(rng, steps, synth.noise_rate) for _ in range(n)]
        n_test, n_valid = _split_counts(rng, n, synth.test_fraction)
        splits = ["test"] * n_test + ["valid"] * n_valid + ["train"] * (n - n_test - n_valid)
        splits = [splits[j] for j in rng.permutation(n)]
        pending += [(t, k, s) for t, s in zip(texts, splits, strict=True)]
    order = rng.permutation(len(pending))  # ids carry no hint of their capability
    intent_ids = _ids("int", len(pending))
    intent_rows, label_rows = [], []
    for new_pos, old in enumerate(order):
        text, k, split = pending[old]
        intent_rows.append({"intent_id": intent_ids[new_pos], "text": text})
        label_rows.append(
            {
                "intent_id": intent_ids[new_pos],
                "capability_id": cap_ids[k],
                "grade": 1,
                "split": split,
            }
        )

    tool_rows = [
        {
            "tool_id": t.tool_id,
            "name": t.name,
            "description": t.description,
            "category": cats[t.category].name,
        }
        for t in tools
    ]
    manifest = {
        "source": "synth",
        "seed": cfg.data.seed,
        "synth": synth.model_dump(mode="json"),
        "categories": [c.name for c in cats],
        "new_capabilities": [cap_ids[k] for k in np.flatnonzero(created_days > 0)],
    }
    return Dataset(
        tools=pa.Table.from_pylist(tool_rows, schema=TOOLS),
        capabilities=pa.Table.from_pylist(cap_rows, schema=CAPABILITIES),
        intents=pa.Table.from_pylist(intent_rows, schema=INTENTS),
        labels=pa.Table.from_pylist(label_rows, schema=LABELS),
        interactions=INTERACTIONS.empty_table(),
        manifest=manifest,
    )

"""penchant in a minute: rank a handful of items for a user, explain the order, and register a
catalog for repeated rankings. Runs on embedded defaults: no servers needed."""

from __future__ import annotations

import penchant

items = [
    {"id": "dune", "score": 0.72, "features": ["genre:sci-fi", "tag:desert"], "attributes": {"price": 9.99}},
    {"id": "emma", "score": 0.80, "features": ["genre:romance", "tag:regency"], "attributes": {"price": 4.99}},
    {"id": "solaris", "score": 0.65, "features": ["genre:sci-fi", "tag:ocean"], "attributes": {"price": 12.0}},
    {"id": "dracula", "score": 0.70, "features": ["genre:horror", "tag:gothic"], "attributes": {"price": 3.5}},
    {"id": "neuromancer", "score": 0.60, "features": ["genre:sci-fi", "tag:cyberpunk"], "attributes": {"price": 25.0}},
]

# A user who likes science fiction and does not like horror.
interests = {"genre:sci-fi": 1.0, "tag:ocean": 0.4, "genre:horror": -0.8}

print("Search order:      ", [item["id"] for item in items])
ranked = penchant.rank_items(interests, items, k=3, explain=True)
print("Personalised top 3:", [r.id for r in ranked])
for r in ranked:
    assert r.contributions is not None
    parts = ", ".join(f"{name} {value:+.2f}" for name, value in r.contributions.items() if value)
    print(f"  {r.id:<12} score {r.score:.2f}  ({parts})")

# Hard rules: never horror, nothing over 20.
filters = penchant.Filters(blocked_features=frozenset({"genre:horror"}), attribute_ranges={"price": (None, 20)})
print("Filtered:          ", [r.id for r in penchant.rank_items(interests, items, filters=filters)])

# Register the catalog once; later requests pass only candidate ids and the search scores.
catalog = penchant.Catalog(items)
top = catalog.rank(interests, ["emma", "solaris", "dune"], [0.9, 0.5, 0.4], k=2)
print("From the catalog:  ", [r.id for r in top])

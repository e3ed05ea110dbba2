"""penchant in a minute: rank items for a user, record what they do, rank again with a query,
and read why. Runs on embedded defaults: no servers needed."""

from __future__ import annotations

import penchant

items = [
    {"id": "dune", "score": 0.72, "features": ["genre:sci-fi", "tag:desert"], "attributes": {"price": 9.99}},
    {"id": "emma", "score": 0.80, "features": ["genre:romance", "tag:regency"], "attributes": {"price": 4.99}},
    {"id": "solaris", "score": 0.65, "features": ["genre:sci-fi", "tag:ocean"], "attributes": {"price": 12.0}},
    {"id": "dracula", "score": 0.70, "features": ["genre:horror", "tag:gothic"], "attributes": {"price": 3.5}},
    {"id": "neuromancer", "score": 0.60, "features": ["genre:sci-fi", "tag:cyberpunk"], "attributes": {"price": 25.0}},
]

# penchant.Engine() keeps profiles in a SQLite file in your data directory; this throwaway
# database forgets them when the script ends.
with penchant.Engine(database_url="sqlite:///:memory:") as engine:
    # A user penchant knows nothing about gets the search's order.
    print("New user:        ", [r.id for r in engine.rank("alice", items, k=3)])

    # What alice does teaches her profile; the query she typed teaches the query expander.
    engine.record("alice", items[2], "click", context={"query": "space"})
    engine.record("alice", items[2], "dwell", 240.0)
    engine.record("alice", items[0], "rating", 5)
    engine.record("alice", items[1], "skip")
    engine.record_many([{"user_id": "alice", "item": items[4], "feedback_type": "bookmark"}])
    engine.profiles.set_preference("alice", "never", "genre:horror")  # a hard rule

    # Retrieval with a query, explained.
    print("Query expansion: ", engine.expand_query("alice", "space").to_text())
    for r in engine.rank("alice", items, k=3, query="space", explain=True):
        assert r.explanation is not None
        print(f"  {r.id:<12} {r.score:5.2f}  {r.explanation.why}")
    print("Rules in force:  ", r.explanation.filters)
    print("Excluded:        ", [(e.id, e.rule, e.detail, e.source) for e in engine.exclusions("alice", items)])

    # Register the catalog once; later requests pass candidate ids and the search's scores.
    catalog = penchant.Catalog(items)
    top = engine.rank("alice", catalog, candidate_ids=["emma", "solaris", "dune"], base_scores=[0.9, 0.5, 0.4], k=2)
    print("From the catalog:", [r.id for r in top])

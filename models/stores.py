"""Opening an outcome store from its command-line spec, for every `--outcomes` of the `models` commands
(`models fit`, `models canary`, `calibrate`, `drift`).

`sqlite:PATH` is the router's own SQLite store. Any other `KIND:WHERE` is looked up among the entry
points of the group `hybrid_router.outcome_stores`: a callable taking `WHERE` and returning an
`OutcomeStore`. `hyrouter.cloud.aws` registers `dynamodb` (`dynamodb:TABLE`, with AWS credentials);
models/ does not import cloud/ (the layering test), so this seam is how it reads a DynamoDB table.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from hyrouter.router import ConfigError
from hyrouter.router._outcomes import OutcomeStore

#: The entry point group other packages register outcome store kinds under.
ENTRY_POINT_GROUP = "hybrid_router.outcome_stores"


def open_store(spec: str) -> OutcomeStore:
    """The outcome store `spec` names: `sqlite:PATH` (an existing file), or `KIND:WHERE` for a kind
    registered under `ENTRY_POINT_GROUP` (`dynamodb:TABLE`). A `ConfigError` says what is wrong."""
    kind, _, where = spec.partition(":")
    if not where:
        raise ConfigError(f"--outcomes {spec!r}: expected sqlite:PATH or dynamodb:TABLE")
    if kind == "sqlite":
        from hyrouter.router._outcome_sqlite import SqliteOutcomeStore

        if not Path(where).is_file():
            raise ConfigError(f"--outcomes {spec!r}: no such file")
        return SqliteOutcomeStore(where)
    kinds = ["sqlite"]
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == kind:
            store: OutcomeStore = entry.load()(where)
            return store
        kinds.append(entry.name)
    raise ConfigError(f"--outcomes {spec!r}: no outcome store of kind {kind!r} ({', '.join(kinds)})")

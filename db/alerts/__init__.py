"""Regression alerts on ratio drops, in one package. The data flows one way through its modules:

- `config`: the rule per metric (defaults from core.metrics), the thresholds file, suppressions, device pairs;
- `series`: which series a job has and their points, from stored runs paired by db.pairing;
- `detect`: pure detection over one series (no store, no network): verdicts and episodes;
- `evaluate`: judge every series of the store and upsert one alert row per episode, reporting state changes;
- `listing`: stored alerts read back (CLI list, dashboard, trend markers);
- `deliver`: the signed webhook for state changes, and `evaluate_and_deliver` for after a push;
- `ci`: the rule behind `runner alerts check`'s exit code.
"""

"""Scoring learners on fixed held-out prompts: prompts.py (the prompts, in chunks, one query
each), shots.py (the context/query rule), scores.py (errors by number of examples, query metrics:
`evaluate_learners`, behind a run's evaluation and a comparison's errors), intervals.py, tables.py
(a run's CSV/JSON files) and plots.py."""

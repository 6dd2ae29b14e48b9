"""Scoring learners on fixed held-out prompts: the prompts, the context/query rule, intervals,
tables and plots."""

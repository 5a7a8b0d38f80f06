"""Behavioural detection rules shipped with log_analyser (YAML files; see behaviour_rules.py)."""

"""The OWASP Core Rule Set over access logs: seclang (reading rule files), compile (what a log can
run), variables, transforms and operators (ModSecurity's, as Polars expressions), engine
(evaluation per distinct value), stage (evidence per client) and install (rules update --crs)."""

"""log_analyser's report stage."""

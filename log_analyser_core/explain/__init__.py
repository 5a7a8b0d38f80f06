"""log_analyser's explain stage."""

"""log_analyser's cli stage."""

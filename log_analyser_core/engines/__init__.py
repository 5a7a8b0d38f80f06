"""log_analyser's engines stage."""

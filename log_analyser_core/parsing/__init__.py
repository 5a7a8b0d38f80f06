"""log_analyser's parsing stage."""

"""log_analyser's rules stage."""

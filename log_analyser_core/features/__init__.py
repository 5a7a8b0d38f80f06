"""log_analyser's features stage."""

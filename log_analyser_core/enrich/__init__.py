"""log_analyser's enrich stage."""

"""log_analyser's detectors stage."""

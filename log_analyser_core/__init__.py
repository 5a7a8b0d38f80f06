"""log_analyser's pipeline, one sub-package per stage.

The five stage modules a user reads first stand at the top level: ``log_analyser`` (the CLI),
``file_parser``, ``anomaly_detector``, ``enrichment`` and ``reporting``. Everything they use lives
here: ``parsing`` (readers, formats, the events table), ``features`` (per-client features),
``detectors`` (autoencoder, attribution, saved models), ``rules`` (behaviour rules, payload
signatures, Sigma; the built-in packs as package data), ``verdict``, ``enrich`` (cache, geography),
``explain`` (explanations, LLM notes), ``report`` (the writers), ``engines`` (Spark), ``cli``
(configuration), ``pipeline`` (``analyse``) and ``results`` (the vocabulary every writer reads).
"""

"""Live mode (``--follow``): follow growing logs, alert within seconds, keep blocklists current.

tail (files, rotation) -> monitor (the batch stages over each client's kept events; store bounds
memory) -> follow (the loop: alerts, reports rewritten atomically, checkpoint, signals).
"""

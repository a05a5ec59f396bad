"""The bottom floor: the types and small helpers every stage shares (probe results, the injected clock,
durations, redaction, label matching, logging). Imports nothing from the rest of ``watchdog``."""

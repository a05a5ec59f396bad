"""Probe kinds (config in ``probes/*.yaml`` defines instances; code here defines kinds): HTTP, journeys,
PostgreSQL, and a scripted fake. ``registry`` is the one place a kind is registered. Probes return
results; they never touch the store. Imports config, sources and core."""

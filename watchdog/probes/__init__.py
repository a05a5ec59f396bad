"""Probe kinds. Config (``probes/*.yaml``) defines instances; code here defines kinds."""

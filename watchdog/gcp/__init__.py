"""Google Cloud integrations that sit beside the pipeline rather than in it: the watchdog's own log in
Cloud Logging (``cloud_logging``) and its own errors in Error Reporting (``error_reporting``).

Each module imports its Google library at the top, so a module here is imported only when its feature is
configured (``watchdog.cli._logging`` does that): a watchdog without ``google_cloud`` loads nothing Google.
This package imports nothing of the watchdog's above ``watchdog.core``.
"""

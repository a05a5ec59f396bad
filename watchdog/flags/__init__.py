"""Flag backends: where the YAML/DB content-source flag lives and how the watchdog reads and flips it,
behind the ``FlagBackend`` protocol in ``base``: the flagd-format file (default), PostgreSQL, Redis, a GCS
object, a generic HTTP webhook, Unleash's admin API, and memory (the fake); ``registry`` builds one from a
``watchdog.config.flags.FlagConfig``. Imports core and config only: the kill switch must not share fate
with anything it guards (and no backend may depend on the monitored database)."""

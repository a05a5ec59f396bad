"""Flag backends: where the YAML/DB content-source flag lives and how the watchdog flips it."""

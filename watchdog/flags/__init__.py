"""Flag backends: where the YAML/DB content-source flag lives and how the watchdog reads and flips it,
behind the ``FlagBackend`` protocol in ``base`` (flagd-format file, memory). Imports core only: the kill
switch must not share fate with anything it guards."""

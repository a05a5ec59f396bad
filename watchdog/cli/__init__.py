"""The ``watchdog`` command, one module per verb group (``main`` holds the group and registers the others
lazily, so ``watchdog run`` never imports rich, asyncpg or matplotlib). The top floor: may import anything."""

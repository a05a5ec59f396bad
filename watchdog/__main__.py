"""``python -m watchdog`` is the ``watchdog`` command."""

from watchdog.cli.main import main

main()

"""The running daemon: ``wiring`` turns config into live objects (the one composition root), ``daemon``
schedules the jobs, ``leader`` holds the replicas' lease, ``buffer`` carries results to the store, ``serve``
runs it all with the HTTP face. May import every stage below it; nothing but the CLI imports it."""

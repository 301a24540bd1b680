"""The ``ehrsync`` subcommands, one module per area; ``ehrsync.cli`` assembles them into one group."""

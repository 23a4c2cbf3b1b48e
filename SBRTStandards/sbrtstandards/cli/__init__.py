"""The ``sbrt`` command: one module per subcommand, gathered in :mod:`sbrtstandards.cli.main`."""

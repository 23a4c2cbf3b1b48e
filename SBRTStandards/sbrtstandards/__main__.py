"""``python -m sbrtstandards`` runs the ``sbrt`` command."""

from sbrtstandards.cli.main import main

if __name__ == "__main__":
    main()

"""The ``juicer`` command line (:mod:`app.cli.main`) and its subcommands (:mod:`app.cli.commands`)."""

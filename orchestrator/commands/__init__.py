"""One module a subcommand, each with ``run(args, cwd) -> exit code``; cli.py parses and dispatches."""

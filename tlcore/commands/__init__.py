"""Built-in CLI commands; each module has ``add_command(subparsers)``."""

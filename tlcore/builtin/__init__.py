"""tlcore's built-in plugin: its traits, weight ops, specs and aliases, registered like any plugin's."""

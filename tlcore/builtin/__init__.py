"""tlcore's built-in plugin: traits, weight ops, specs and aliases, registered like any plugin's."""

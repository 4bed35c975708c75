"""Model registry: registered models, versions, aliases, flavors and safe loading."""

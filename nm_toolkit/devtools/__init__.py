"""Real services for development and tests, provisioned from package registries."""

"""Built-in plugins: integrations registered through the same hooks as third-party ones."""

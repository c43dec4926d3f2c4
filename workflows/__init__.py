"""Built-in status workflows. Data only: one YAML file per workflow."""

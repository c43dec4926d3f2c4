"""Built-in tracker type definitions. Data only: each folder holds schema.json and type.yaml."""

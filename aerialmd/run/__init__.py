"""Running stages: scene selection and sharding, settings markers, the pipeline and its executors (local, Ray)."""

"""Infrastructure every layer may use: keyed random streams (:mod:`~vtrial.infra.rng`),
progress reporting (:mod:`~vtrial.infra.progress`) and safe YAML parsing
(:mod:`~vtrial.infra.yamlsafe`). Nothing here knows about models, studies or
pharmacology; it imports only :mod:`vtrial.errors` and third-party libraries."""

"""The study file: loading, schema and semantic validation, defaults, and the
validated :class:`~vtrial.study.config.Study` (:mod:`~vtrial.study.config`). It
assembles the checks each feature owns and reports every problem at once, naming
the file, the key path, the rule and the value, before anything is computed."""

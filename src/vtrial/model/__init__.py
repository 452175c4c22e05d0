"""Models as data: the built-in library of YAML model files (``library/``), the
whitelisting expression parser (:mod:`~vtrial.model.expressions`, with the whitelist
in :mod:`~vtrial.model.syntax`, the numpy evaluator in :mod:`~vtrial.model.evaluator`
and the kernel code generator in :mod:`~vtrial.model.emitter`: no ``eval`` of user
text), parsing and composition of model specs (:mod:`~vtrial.model.spec`) and the
residual error models of observations (:mod:`~vtrial.model.residual`). A model knows
its parameters, states, equations and outputs; it knows nothing of regimens,
populations or studies."""

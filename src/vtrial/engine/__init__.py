"""The numerical engine: code generation from a model spec
(:mod:`~vtrial.engine.codegen`), the compiled kernel (template
:mod:`~vtrial.engine._kernel_template`, generated per model, calling the fixed
numerics of :mod:`~vtrial.engine.numerics`, :mod:`~vtrial.engine.events` and
:mod:`~vtrial.engine.model_steps`: exact linear PK, adaptive Dormand-Prince and
Rosenbrock steppers, events, steady state, dose ledger), its host side
(:mod:`~vtrial.engine.host`: kernel inputs, the call, results, and the
:func:`~vtrial.engine.api.simulate` API) and the contract between the two, declared
once (:mod:`~vtrial.engine.interface`: shared integer codes and the kernel's
arguments). It simulates given parameters under given event tables; it does not
sample patients or compute endpoints."""

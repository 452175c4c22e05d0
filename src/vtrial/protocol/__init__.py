"""What is given to a patient and when: regimens and their expansion into event
tables (:mod:`~vtrial.protocol.dosing`), dose-modification rules evaluated at decision
times and adherence (:mod:`~vtrial.protocol.rules`). Below the engine: it produces the
event tables and rule programs the kernel consumes."""

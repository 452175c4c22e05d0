"""The trial layer on top of simulated patients: endpoints
(:mod:`~vtrial.trial.endpoints`), adverse-event grades drawn from model probabilities
(:mod:`~vtrial.trial.adverse`), dropout (:mod:`~vtrial.trial.dropout`) and RECIST-style
tumour response (:mod:`~vtrial.trial.recist`). Per patient; statistics across patients
belong to :mod:`vtrial.analysis`."""

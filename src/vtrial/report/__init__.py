"""Presentation: plots of the summary tables (:mod:`~vtrial.report.plots`,
:mod:`~vtrial.report.trial_plots`) and HTML pages of tables and of the study
(:mod:`~vtrial.report.pages`). Reads tables, draws and renders; computes no
statistics of its own."""

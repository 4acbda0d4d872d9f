"""Closure campaigns: many pseudo-data replicas from a known truth, each fitted by one or more methods, and the
statistics that say whether a method's quoted errors are right (coverage, bias-variance ratio, pulls, SBC ranks).

- :mod:`qcf_studio.engine.campaign.section`: the spec's ``campaign`` section;
- :mod:`qcf_studio.engine.campaign.plan`: replicas (seeds, truths), the fits' specs and the campaign's folder;
- :mod:`qcf_studio.engine.campaign.stats`: the estimators and their intervals;
- :mod:`qcf_studio.engine.campaign.summary`: the summary Dataset (the campaign contract, design.md);
- :mod:`qcf_studio.engine.campaign.driver`: fits spread over a Dask cluster, resumable (the one module here that imports
Dask).
"""

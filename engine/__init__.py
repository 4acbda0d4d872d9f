"""qcf-studio engine: the science and the training of the SAGIPS-style inverse-problem solver.

By pipeline stage:

- :mod:`qcf_studio.engine.problems`: the theories (parameters → QCFs → observables) and their tabulation grids;
- :mod:`qcf_studio.engine.samplers`: differentiable sampling of events from the observables' densities;
- :mod:`qcf_studio.engine.detector`: detector effects (smearing, acceptance, background, a learned surrogate);
- :mod:`qcf_studio.engine.data`: measured data (pseudo-data from a truth, data files), histograms and marginals;
- :mod:`qcf_studio.engine.gan`: the GAN fit (networks, the training step, checkpoints); :mod:`qcf_studio.engine.mle`:
the likelihood fit;
- :mod:`qcf_studio.engine.accel`: the GAN step's speed machinery, behind :mod:`qcf_studio.engine.gan.accelerator`
(removable);
- :mod:`qcf_studio.engine.run`: running fits (members and data-parallel ranks on Dask, metric sinks, devices);
- :mod:`qcf_studio.engine.results`: the results contract, closure metrics, safe file writing;
- :mod:`qcf_studio.engine.campaign`: closure campaigns over many pseudo-data replicas;
- :mod:`qcf_studio.engine.spec`: the run specification and its validation, torch-free, with its sections
  (:mod:`qcf_studio.engine.spec_sections`, :mod:`qcf_studio.engine.spec_detector`, :mod:`qcf_studio.engine.specfields`),
  the values of its
  choice fields (:mod:`qcf_studio.engine.choices`), the problems' facts (:mod:`qcf_studio.engine.problem_catalog`) and
  its JSON
  Schema (:mod:`qcf_studio.engine.spec_schema`).

Pure torch/numpy/xarray. Nothing here imports Panel, HoloViews or Bokeh (nor ``app`` or ``layouts``), and only
:mod:`qcf_studio.engine.run.distributed`, :mod:`qcf_studio.engine.run.cluster` (the embedded cluster) and the campaign
driver import Dask.
"""

__version__ = "0.1.0"

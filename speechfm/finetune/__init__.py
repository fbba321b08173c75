"""``speechfm finetune``: a new language from a base model in one command.

The stages (data check and held-out split -> optional continued self-supervised
pretraining -> fine-tuning -> export -> dev/test evaluation -> RESULTS.md) call the
existing recipes' ``train(config)`` functions; this package decides what to run:

- :mod:`speechfm.finetune.data`: reading any supported data set, validation (bad items
  reported by name and left out), the deterministic speaker-/text-disjoint held-out split,
  mixing related-language data;
- :mod:`speechfm.finetune.plan`: the base model's kind, the method matrix and the one
  table of data-size rules (:data:`~speechfm.finetune.plan.RULES`), printed as a plan;
- :mod:`speechfm.finetune.pipeline`: the stages, resumable (``--resume``);
- :mod:`speechfm.finetune.report`: the printed data summary and RESULTS.md.

Submodules are imported on use (``from speechfm.finetune.pipeline import finetune``).
"""

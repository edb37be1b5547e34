"""bftweb's distillation engine: DSPy + transformers + peft, with no Django anywhere.

Modules: ``types`` (plain data), ``model_store`` (where local models come from, and the engine's
directories: see ``model_store.configure``), ``local_lm`` (a local model as a DSPy LM) and
``decoding`` (its continuous batching), ``programs`` (declarative program specs, without DSPy),
``program_module`` (the ``dspy.Module`` a spec builds), ``trainsets`` (streaming readers),
``metrics``, ``demos`` (stratified demo sets and their search), ``tracing`` (one example traced and
scored), ``bootstrap`` (teacher traces, best-of-N), ``evaluate`` (candidates scored on rows) and
``comparison`` (its statistics), ``training_data`` (DSPy-identical fine-tuning rows), ``finetune``
(LoRA SFT) with ``training_plan`` (epochs and steps), ``precision`` (bf16 only where it pays),
``packing`` (tokenization, padding-free packed attention) and ``checkpoints`` (resumable state),
``adapters`` (many LoRA students of one base in one batch), and ``export`` (the compiled program
file). Usable from a plain script.
"""

from __future__ import annotations

import os

# LiteLLM (imported by DSPy, and for prices by jobs.engine.evaluate) fetches its price map from
# GitHub at import unless told otherwise: nothing here downloads at run time, so use the map its
# wheel ships. An operator may still set it to "False" to fetch.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

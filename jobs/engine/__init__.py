"""bftweb's distillation engine: DSPy + transformers + peft, with no Django anywhere.

Modules: ``types`` (plain data), ``model_store`` (where local models come from), ``local_lm``
(a local model as a DSPy LM, micro-batched), ``programs`` (declarative program specs),
``trainsets`` (streaming readers), ``metrics``, ``bootstrap`` (teacher traces), ``training_data``
(DSPy-identical fine-tuning rows) and ``finetune`` (LoRA SFT). Usable from a plain script.
"""

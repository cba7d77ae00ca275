"""A copy of the tiny test model whose LoRA can fit: training tests need a loss that can fall.

The stock tiny model is random with a small final RMSNorm weight and tied embeddings, so its
logits stay near zero and a LoRA adapter alone cannot move the loss far; scaling the final
norm up lets the answer-only loss drop, so a wrong label mask shows as a loss that does not.
"""

import shutil

from vlm2vla_ros.policy.tiny_model import ensure_tiny_model


def fittable_tiny_model(target):
    import torch
    from transformers import AutoModelForImageTextToText

    shutil.copytree(ensure_tiny_model(), target)
    model = AutoModelForImageTextToText.from_pretrained(target, local_files_only=True, dtype=torch.float32)
    with torch.no_grad():
        model.model.language_model.norm.weight.fill_(7.0)
    model.save_pretrained(target)
    return target

"""LoRA adapters merged into a model's weights at load: W += B @ A * scale, once, so a tuned model decodes at
exactly the untuned model's speed.

An adapter folder is what `edit model train-edit` writes (peft's `save_pretrained`): adapter_config.json,
adapter_model.safetensors, and our card.json. The merge is done here, without peft (whose import alone takes
seconds), and refuses what it does not implement (DoRA, trained biases, per-module ranks, saved whole modules)
instead of merging it wrongly.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .model_registry import ModelError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "card.json"
PEFT_PREFIX = "base_model.model."  # peft's name for the wrapped model, before the model's own module names
# adapter_config.json settings that, set, change what a merge must do: not implemented here.
UNSUPPORTED = ("use_dora", "bias", "lora_bias", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save",
               "layer_replication", "trainable_token_indices", "target_parameters")
UNSET = (None, False, "none", {}, [])


def check_folder(folder: Path) -> Path:
    """`folder` if it holds an adapter; ModelError naming what is missing otherwise."""
    folder = Path(folder).expanduser()
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} is not a LoRA adapter folder: no {' or '.join(missing)} "
                         f"(`edit model train-edit` writes both)")
    return folder


def adapter_key(folder: Path) -> str:
    """A short name for the adapter's weights (sha256 of adapter_model.safetensors): results made with
    different adapters must never share a cache entry."""
    digest = hashlib.sha256((Path(folder) / WEIGHTS_FILE).read_bytes()).hexdigest()
    return digest[:16]


def read_card(folder: Path) -> dict:
    card = Path(folder) / CARD_FILE
    return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}


def lora_pairs(folder: Path) -> tuple[dict[str, tuple], float, bool]:
    """({module name: (A [r, in], B [out, r])}, lora_alpha, use_rslora) of an adapter folder."""
    from safetensors.torch import load_file

    folder = check_folder(folder)
    config_path = folder / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelError(f"{config_path}: not valid JSON ({error})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{config_path}: a {config['peft_type']} adapter; only LoRA adapters merge")
    unsupported = [f"{key}={config[key]!r}" for key in UNSUPPORTED if config.get(key) not in UNSET]
    if unsupported:
        raise ModelError(f"{config_path}: {', '.join(unsupported)} is not supported by the merge at load")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    pairs: dict[str, dict] = {}
    for name, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if name.startswith(PEFT_PREFIX) and name.endswith(suffix):
                pairs.setdefault(name[len(PEFT_PREFIX):-len(suffix)], {})[part] = tensor
                break
        else:
            raise ModelError(f"{folder / WEIGHTS_FILE}: unexpected tensor {name!r} (not a LoRA A or B matrix)")
    incomplete = sorted(module for module, pair in pairs.items() if len(pair) != 2)
    if incomplete:
        raise ModelError(f"{folder / WEIGHTS_FILE}: {incomplete[0]} has only one of lora_A, lora_B")
    return ({module: (pair["lora_A"], pair["lora_B"]) for module, pair in pairs.items()},
            float(config["lora_alpha"]), bool(config.get("use_rslora")))


def merge_adapter(model, folder: Path) -> int:
    """Add the adapter at `folder` into `model`'s float Linear weights in place; the number of layers changed.
    ModelError when it names a module the model lacks or one of another shape (an adapter of another model)."""
    import torch

    pairs, alpha, rslora = lora_pairs(folder)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            layer = modules.get(name)
            weight = getattr(layer, "weight", None)
            # a: [r, in], b: [out, r]; weight: [out, in]
            if not isinstance(weight, torch.Tensor) or weight.shape != (b.shape[0], a.shape[1]) or \
                    a.shape[0] != b.shape[1]:
                raise ModelError(f"the adapter at {folder} does not fit this model: {name} is "
                                 f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else 'missing'}, the "
                                 f"adapter's update is {(b.shape[0], a.shape[1])}; it was trained for another model")
            rank = a.shape[0]
            scale = alpha / math.sqrt(rank) if rslora else alpha / rank
            weight += (b.double() @ a.double() * scale).to(weight.dtype)
    return len(pairs)

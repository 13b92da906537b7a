"""Multi-token-prediction (MTP) heads: load, run, save.

An MTP layer predicts the token two positions ahead from the target's last hidden state h_t and the
embedding of the token x_{t+1} that the target produced from it:

    u_t    = proj(concat[norm_e(embed(x_{t+1})), norm_h(h_t)])       # [H]   (MiMo: concat[norm_h(h), norm_e(e)])
    b_t    = block(u_<=t)                                            # one decoder layer, causal over pairs
    logits = head(norm_f(b_t))                                       # predicts x_{t+2}; head = the target's lm_head

Drafting k > 1 tokens feeds a layer its own output again with the token it just predicted (vLLM and
llama.cpp do the same); with several layers, draft step s uses layer s mod L.

Three checkpoint layouts (tensor names as in vLLM's qwen3_next_mtp.py, deepseek_mtp.py, mimo_mtp.py):

    qwen3_5   mtp.{pre_fc_norm_embedding, pre_fc_norm_hidden, fc, norm}, mtp.layers.0.*      norms store w, scale 1 + w
    deepseek  model.layers.{N+i}.{enorm, hnorm, eh_proj, shared_head.norm, shared_head.head}  norms scale w
              + model.layers.{N+i}.* for the block (N = the base model's num_hidden_layers)
    mimo      model.mtp_layers.{i}.{token_layernorm, hidden_layernorm, input_proj, final_layernorm}
              + model.mtp_layers.{i}.* for the block; projection input is concat[hidden, embedding]

Which target hidden state feeds norm_h differs by family: Qwen3.5/3.6 and MiMo heads read the final,
post-norm state (vLLM, llama.cpp #24025); DeepSeek/GLM heads read it before the final norm (llama.cpp; vLLM
feeds post-norm). `MTPHeads.hidden_norm` ("pre" | "post") records the choice; the same kind of state is
recycled between draft steps (post: norm_f(b), pre: b).

The block is the base model's own decoder-layer class built from a one-layer copy of its config, so block
weights load under the base model's names.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

from decoding.cpu_linear import linear_weight, quantize_int8, speed_up_small_batches


@dataclass(frozen=True)
class Layout:
    name: str
    unit_offset_norms: bool  # norms store w and scale by (1 + w)
    hidden_first: bool  # projection input is concat[hidden, embedding]
    hidden_norm: str  # default target hidden state the heads read: "pre" or "post" the final norm
    specials: dict[str, str]  # checkpoint module name -> internal module name (norms, projection, head)


LAYOUTS = {
    "qwen3_5": Layout(
        "qwen3_5", True, False, "post",
        {"pre_fc_norm_embedding": "embed_norm", "pre_fc_norm_hidden": "hidden_norm", "fc": "proj", "norm": "final_norm"},
    ),
    "deepseek": Layout(
        "deepseek", False, False, "pre",
        {"enorm": "embed_norm", "hnorm": "hidden_norm", "eh_proj": "proj",
         "shared_head.norm": "final_norm", "shared_head.head": "head"},
    ),
    "mimo": Layout(
        "mimo", False, True, "post",
        {"token_layernorm": "embed_norm", "hidden_layernorm": "hidden_norm", "input_proj": "proj",
         "final_layernorm": "final_norm"},
    ),
}
NORM_MODULES = ("embed_norm", "hidden_norm", "final_norm")


class MTPError(ValueError):
    """An MTP checkpoint that does not fit the base model or the layout."""


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, unit_offset: bool):
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(hidden_size) if unit_offset else torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        scale = 1.0 + self.weight.float() if self.unit_offset else self.weight.float()
        return (h * scale).to(x.dtype)


class MTPLayer(nn.Module):
    def __init__(self, block: nn.Module, hidden_size: int, eps: float, layout: Layout, own_head: nn.Linear | None):
        super().__init__()
        self.hidden_first = layout.hidden_first
        self.embed_norm = RMSNorm(hidden_size, eps, layout.unit_offset_norms)
        self.hidden_norm = RMSNorm(hidden_size, eps, layout.unit_offset_norms)
        self.proj = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.block = block
        self.final_norm = RMSNorm(hidden_size, eps, layout.unit_offset_norms)
        self.head = own_head

    def project(self, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        # hidden, embeds: [1, T, H] -> [1, T, H]
        e, h = self.embed_norm(embeds), self.hidden_norm(hidden)
        return self.proj(torch.cat([h, e] if self.hidden_first else [e, h], dim=-1))


@dataclass
class MTPState:
    """The heads' KV caches (one per layer) over the pairs (h_t, x_{t+1}), t < length, whose h_t came from
    the target, plus the last layer-0 block output (the start of the next draft)."""

    caches: list[DynamicCache]
    length: int = 0
    last_block_out: torch.Tensor | None = None  # [1, 1, H]

    def truncate(self, length: int) -> None:
        if length < self.length:
            for cache in self.caches:
                cache.crop(-(cache.get_seq_length() - length))
            self.length = length
            self.last_block_out = None


class MTPHeads(nn.Module):
    def __init__(self, base_model: nn.Module, layout: str, num_layers: int = 1, own_head: bool = False,
                 hidden_norm: str | None = None):
        super().__init__()
        if layout not in LAYOUTS:
            raise MTPError(f"unknown MTP layout {layout!r}; known: {', '.join(LAYOUTS)}")
        if num_layers < 1:
            raise MTPError(f"an MTP head set needs at least one layer, got {num_layers}")
        if layout == "qwen3_5" and num_layers != 1:
            raise MTPError(f"the qwen3_5 layout shares mtp.fc and its norms, so it holds one layer, not {num_layers}")
        self.layout = LAYOUTS[layout]
        self.hidden_norm = hidden_norm or self.layout.hidden_norm
        if self.hidden_norm not in ("pre", "post"):
            raise MTPError(f"hidden_norm must be 'pre' or 'post', got {self.hidden_norm!r}")
        self._base = (base_model,)  # a tuple keeps the base model's weights out of this module's state_dict
        decoder = base_model.get_decoder()
        text_config = base_model.config.get_text_config()
        self.block_config = block_config(text_config)
        layer_cls = type(decoder.layers[0])
        hidden, eps = text_config.hidden_size, text_config.rms_norm_eps
        vocab = base_model.get_output_embeddings().out_features
        self.layers = nn.ModuleList(
            MTPLayer(layer_cls(self.block_config, 0), hidden, eps, self.layout,
                     nn.Linear(hidden, vocab, bias=False) if own_head else None)
            for _ in range(num_layers)
        )
        # float32 whatever the decoder runs in (a bfloat16 decoder's hidden states are cast on the way in)
        self.to(device=base_model.get_input_embeddings().weight.device, dtype=torch.float32)
        self._draft_vocab: tuple[torch.Tensor, list[nn.Module]] | None = None  # see restrict_draft_vocab
        self.int8 = False  # see quantize_drafting

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    @property
    def vocab_size(self) -> int:
        return self.base.get_output_embeddings().out_features

    def new_state(self) -> MTPState:
        return MTPState([DynamicCache(config=self.block_config) for _ in self.layers])

    # --- running -------------------------------------------------------------------------------------------

    def _run_layer(self, index: int, hidden: torch.Tensor, next_tokens: list[int], start: int,
                   cache: DynamicCache) -> torch.Tensor:
        # hidden: [1, T, H], next_tokens: T tokens x_{t+1}, pair positions start..start+T-1 -> block out [1, T, H]
        layer = self.layers[index]
        decoder = self.base.get_decoder()
        ids = torch.tensor([next_tokens], device=hidden.device)
        positions = torch.arange(start, start + len(next_tokens), device=hidden.device)[None]
        x = layer.project(hidden.float(), decoder.embed_tokens(ids).float())
        mask = create_causal_mask(config=self.block_config, inputs_embeds=x, attention_mask=None, cache=cache,
                                  position_ids=positions)
        out = layer.block(x, attention_mask=mask, position_embeddings=decoder.rotary_emb(x, positions),
                          position_ids=positions, cache=cache, use_cache=True)
        return out[0] if isinstance(out, tuple) else out

    def _recycled(self, index: int, block_out: torch.Tensor) -> torch.Tensor:
        return self.layers[index].final_norm(block_out) if self.hidden_norm == "post" else block_out

    def logits(self, index: int, block_out: torch.Tensor) -> torch.Tensor:
        # block_out: [..., H] -> [..., V]
        layer = self.layers[index]
        head = layer.head if layer.head is not None else self.base.get_output_embeddings()
        return head(layer.final_norm(block_out))

    def restrict_draft_vocab(self, token_ids: torch.Tensor | None) -> None:
        """Draft only among `token_ids` (sorted, unique), or among all tokens again with None.

        The full lm_head is 152k rows for Qwen models: one draft step through it costs as much as a
        quarter of a target forward, which is most of what a draft costs. A vocabulary of the tokens the
        heads were trained on (EAGLE-3 does the same) cuts that to a few per cent; a token outside it is
        never drafted, which costs acceptance, never correctness. The rows are copied once here."""
        self._draft_vocab = None
        if token_ids is None:
            return
        token_ids = torch.as_tensor(token_ids, dtype=torch.long)
        if (token_ids.ndim != 1 or len(token_ids) == 0 or int(token_ids.min()) < 0
                or int(token_ids.max()) >= self.vocab_size):
            raise MTPError(f"a draft vocabulary must be a non-empty list of token ids below {self.vocab_size}")
        heads = []
        for layer in self.layers:
            full = layer.head if layer.head is not None else self.base.get_output_embeddings()
            part = nn.Linear(full.in_features, len(token_ids), bias=full.bias is not None)
            part.weight = nn.Parameter(linear_weight(full, token_ids).detach().contiguous(), requires_grad=False)
            if full.bias is not None:
                part.bias = nn.Parameter(full.bias.detach()[token_ids].contiguous(), requires_grad=False)
            heads.append(quantize_int8(part) if self.int8 else speed_up_small_batches(part))
        # Kept out of the module tree (a tuple) so state_dict and the checkpoint names stay the layout's.
        self._draft_vocab = (token_ids, heads)

    def quantize_drafting(self) -> MTPHeads:
        """Run the heads' own Linear layers (projection, block, an own or draft-vocabulary head) in int8
        (returns self). Drafting only: a draft step costs ~2.5x less, which is most of what MTP adds to a
        verification, and a draft that moves is verified like any other, so the output never changes. The
        base model's lm_head, which the full-vocabulary path shares, stays as it is. The weights are then
        no longer float tensors under the layout's names, so quantized heads cannot be saved or trained."""
        if not self.int8:
            self.int8 = True
            for layer in self.layers:
                quantize_int8(layer)
            if self._draft_vocab is not None:
                token_ids, heads = self._draft_vocab
                self._draft_vocab = (token_ids, [quantize_int8(head) for head in heads])
        return self

    def draft_logits(self, index: int, block_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # block_out: [H] -> (logits [V'] over the draft vocabulary, its token ids [V']), or ([V], None) without one
        row = block_out[None]  # [1, H]: int8 Linear layers take no 1-D input
        if self._draft_vocab is None:
            return self.logits(index, row)[0], None
        token_ids, heads = self._draft_vocab
        return heads[index](self.layers[index].final_norm(row))[0], token_ids

    @torch.no_grad()
    def extend(self, state: MTPState, hidden: torch.Tensor, next_tokens: list[int]) -> None:
        """Append the pairs (hidden[i], next_tokens[i]) at positions state.length.. to every layer's cache.
        hidden: [T, H] target hidden states."""
        if len(next_tokens) != hidden.shape[0]:
            raise MTPError(f"{hidden.shape[0]} hidden states but {len(next_tokens)} next tokens")
        for index, cache in enumerate(state.caches):
            out = self._run_layer(index, hidden[None], next_tokens, state.length, cache)
            if index == 0:
                state.last_block_out = out[:, -1:]
        state.length += len(next_tokens)

    @torch.no_grad()
    def draft(self, state: MTPState, known_tail: list[int], k: int, temperature: float = 0.0,
              rng: torch.Generator | None = None, min_confidence: float = 0.0) -> tuple[list[int], torch.Tensor | None]:
        """Draft up to k tokens after the last synced pair and the already known tokens `known_tail` (which
        are fed as chained steps). Returns (tokens, q [len(tokens), V] or None when greedy). The caches are
        left as they were.

        min_confidence: stop before a token that would bring the draft's confidence, the product of the
        heads' probabilities of its tokens, below this. A verification costs more the more tokens it
        checks, so a draft the heads themselves doubt is better not sent (0: always draft k)."""
        if state.last_block_out is None or k <= 0:
            return [], None
        grown = [0] * len(self.layers)
        block_out, index, position = state.last_block_out, 0, state.length
        drafted, probs = [], []
        confidence = 1.0

        def chain(token: int) -> None:
            nonlocal block_out, index, position
            next_index = (index + 1) % len(self.layers)
            block_out = self._run_layer(next_index, self._recycled(index, block_out), [token], position,
                                        state.caches[next_index])
            grown[next_index] += 1
            index, position = next_index, position + 1

        try:
            for token in known_tail:
                chain(token)
            for step in range(k):
                logits, token_ids = self.draft_logits(index, block_out[0, -1])  # [V'], [V'] or None
                q = torch.softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)
                pick = int(torch.multinomial(q, 1, generator=rng)) if temperature > 0 else int(logits.argmax())
                confidence *= float(q[pick])
                if confidence < min_confidence:
                    break
                token = pick if token_ids is None else int(token_ids[pick])
                drafted.append(token)
                if temperature > 0:  # q over the whole vocabulary: 0 outside the draft vocabulary
                    probs.append(q if token_ids is None else
                                 torch.zeros(self.vocab_size).index_copy_(0, token_ids, q))
                if step < k - 1:
                    chain(token)
        finally:
            for cache, extra in zip(state.caches, grown):
                if extra:
                    cache.crop(-extra)
        return drafted, torch.stack(probs) if probs else None


def block_config(text_config):
    """A one-layer, full-attention copy of the base config for the MTP block (layer index 0)."""
    config = copy.deepcopy(text_config)
    config.num_hidden_layers = 1
    config.layer_types = ["full_attention"]
    # MTP blocks of MoE models are MoE layers; these settings would otherwise make layer 0 a dense one.
    for name, value in (("first_k_dense_replace", 0), ("mlp_only_layers", [])):
        if hasattr(config, name):
            setattr(config, name, value)
    return config


# --- checkpoint names ----------------------------------------------------------------------------------------


def _num_base_layers(base_model) -> int:
    return base_model.config.get_text_config().num_hidden_layers


def _layer_prefix(layout: str, index: int, base_layers: int) -> tuple[str, str]:
    """(prefix of the layer's special tensors, prefix of its block tensors) in the checkpoint."""
    if layout == "qwen3_5":
        return "mtp.", f"mtp.layers.{index}."
    if layout == "deepseek":
        prefix = f"model.layers.{base_layers + index}."
        return prefix, prefix
    prefix = f"model.mtp_layers.{index}."
    return prefix, prefix


def checkpoint_names(heads: MTPHeads, layout: str | None = None) -> dict[str, str]:
    """Internal parameter name -> checkpoint tensor name, for every parameter of `heads`."""
    layout = layout or heads.layout.name
    inverse = {internal: ckpt for ckpt, internal in LAYOUTS[layout].specials.items()}
    base_layers = _num_base_layers(heads.base)
    names = {}
    for name in heads.state_dict():
        _, index, module, rest = name.split(".", 3)
        special_prefix, block_prefix = _layer_prefix(layout, int(index), base_layers)
        if module == "block":
            names[name] = block_prefix + rest
        elif module in inverse:
            names[name] = f"{special_prefix}{inverse[module]}.{rest}"
        else:
            raise MTPError(f"the {layout} layout has no tensor for {name}")
    return names


def _owned(layout: str, name: str, base_layers: int) -> int | None:
    """The MTP layer index a checkpoint tensor belongs to under `layout`, or None for non-MTP tensors."""
    if layout == "qwen3_5":
        if not name.startswith("mtp."):
            return None
        match = re.match(r"mtp\.layers\.(\d+)\.", name)
        return int(match.group(1)) if match else 0
    if layout == "deepseek":
        match = re.match(r"model\.layers\.(\d+)\.", name)
        return int(match.group(1)) - base_layers if match and int(match.group(1)) >= base_layers else None
    match = re.match(r"model\.mtp_layers\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def detect_layout(names) -> str:
    names = list(names)
    if any(name.startswith("mtp.") for name in names):
        return "qwen3_5"
    if any(name.startswith("model.mtp_layers.") for name in names):
        return "mimo"
    if any(re.match(r"model\.layers\.\d+\.(enorm|hnorm|eh_proj)\.", name) for name in names):
        return "deepseek"
    raise MTPError("no MTP tensors found (looked for mtp.*, model.mtp_layers.*, model.layers.N.{enorm,hnorm,eh_proj})")


def _read_tensors(source, wanted) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors whose names pass `wanted`, file metadata) from a state dict, a .safetensors file or a folder
    of them (only the wanted tensors are read)."""
    if isinstance(source, dict):
        return {name: t for name, t in source.items() if wanted(name)}, {}
    from safetensors import safe_open

    path = Path(source)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise MTPError(f"{path}: no .safetensors file to read MTP heads from")
    tensors, metadata = {}, {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            metadata.update(handle.metadata() or {})
            for name in handle.keys():
                if wanted(name):
                    tensors[name] = handle.get_tensor(name)
    return tensors, metadata


def _all_names(source) -> list[str]:
    if isinstance(source, dict):
        return list(source)
    from safetensors import safe_open

    path = Path(source)
    if not path.exists():
        raise MTPError(f"{path}: no such file or folder")
    names = []
    for file in sorted(path.glob("*.safetensors")) if path.is_dir() else [path]:
        with safe_open(str(file), framework="pt") as handle:
            names.extend(handle.keys())
    return names


def load_mtp_heads(source, base_model, layout: str = "auto", hidden_norm: str | None = None) -> MTPHeads:
    """MTP heads for `base_model` from a state dict, a .safetensors file or a checkpoint folder.

    Only tensors of the MTP layers are read; a tensor the layout expects but the checkpoint lacks, or an MTP
    tensor that fits no parameter, raises MTPError naming them. `hidden_norm` overrides the layout's default
    (or the value our own saved files record)."""
    base_layers = _num_base_layers(base_model)
    if layout == "auto":
        layout = detect_layout(_all_names(source))
    if layout not in LAYOUTS:
        raise MTPError(f"unknown MTP layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    tensors, metadata = _read_tensors(source, lambda name: _owned(layout, name, base_layers) is not None)
    if not tensors:
        raise MTPError(f"no {layout} MTP tensors found for a base model of {base_layers} layers")
    if layout == "deepseek":  # every DeepSeek MTP layer carries a copy of the shared embedding
        tensors = {n: t for n, t in tensors.items() if not n.endswith(".embed_tokens.weight")}
    indices = sorted({_owned(layout, name, base_layers) for name in tensors})
    if indices != list(range(len(indices))):
        raise MTPError(f"MTP layer indices {indices} are not consecutive from {base_layers if layout == 'deepseek' else 0}")
    own_head = any(".shared_head.head." in name for name in tensors)
    heads = MTPHeads(base_model, layout, len(indices), own_head, hidden_norm or metadata.get("hidden_norm"))
    names = checkpoint_names(heads)
    missing = sorted(ckpt for ckpt in names.values() if ckpt not in tensors)
    unexpected = sorted(set(tensors) - set(names.values()))
    if missing or unexpected:
        raise MTPError(f"{layout} MTP checkpoint does not match the base model's decoder layer: "
                       f"missing {missing or 'nothing'}; unexpected {unexpected or 'nothing'}")
    state = {internal: tensors[ckpt] for internal, ckpt in names.items()}
    for internal, tensor in state.items():
        expected = heads.state_dict()[internal].shape
        if tensor.shape != expected:
            raise MTPError(f"{names[internal]}: shape {tuple(tensor.shape)}, the base model needs {tuple(expected)}")
    heads.load_state_dict(state)
    return speed_up_small_batches(heads).eval()


def convert_state(heads: MTPHeads, layout: str) -> dict[str, torch.Tensor]:
    """The heads' tensors under `layout`'s names and conventions.

    The layouts compute the same function once two conventions are matched:
      norms      (1 + w') x / rms(x) == w x / rms(x)        <=>  w' = w - 1
      projection W [e; h] == W' [h; e]                     <=>  W' = [W[:, H:], W[:, :H]]  (column halves swap)
    The block is the same class with the same names in every layout. What cannot be converted: which
    target hidden state feeds the heads (pre/post final norm, see the module docstring) and a separate
    per-layer output head in layouts that always use the base lm_head."""
    if heads.int8:
        raise MTPError("these heads run in int8 for drafting; save them before quantize_drafting()")
    target = LAYOUTS[layout]
    source = heads.layout
    if layout in ("qwen3_5", "mimo") and heads.hidden_norm != "post":
        raise MTPError(f"{layout} heads are fed the post-norm hidden state by every runtime; these heads were "
                       f"trained on the {heads.hidden_norm}-norm state, which no weight change can account for")
    if layout == "qwen3_5" and len(heads.layers) != 1:
        raise MTPError(f"the qwen3_5 layout holds one MTP layer, these heads have {len(heads.layers)}")
    if "head" not in target.specials.values() and any(layer.head is not None for layer in heads.layers):
        raise MTPError(f"the {layout} layout has no per-layer output head, and these heads carry their own")
    names = checkpoint_names(heads, layout)
    hidden = heads.block_config.hidden_size
    offset = float(source.unit_offset_norms) - float(target.unit_offset_norms)
    out = {}
    for internal, tensor in heads.state_dict().items():
        module = internal.split(".")[2]
        if module in NORM_MODULES:
            tensor = tensor + offset
        elif module == "proj" and source.hidden_first != target.hidden_first:
            tensor = torch.cat([tensor[:, hidden:], tensor[:, :hidden]], dim=1)
        out[names[internal]] = tensor.detach().contiguous()
    return out


def save_mtp_heads(heads: MTPHeads, path, layout: str = "qwen3_5") -> None:
    """Write the heads as a .safetensors file under `layout`'s tensor names (default: Qwen3.5 `mtp.*`)."""
    from safetensors.torch import save_file

    save_file(convert_state(heads, layout), str(path), metadata={"layout": layout, "hidden_norm": heads.hidden_norm})

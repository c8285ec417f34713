"""Load a backbone trunk from a local checkpoint file (never a download).

``load_backbone_weights(backbone, path)``:

1. reads ``path`` with ``torch.load(weights_only=True)`` (tensors only; a Lightning ``.ckpt`` that
   pickles config objects is refused with the one-line command that extracts its state dict);
2. unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips a DDP ``module.`` prefix;
3. lets the family map the public layout to its own keys (``Backbone.convert_state_dict``), which also
   drops the known heads of those checkpoints (e.g. HRNet's keypoint ``final_layer``, ResNet's ``fc``);
4. loads strictly: every trunk key must be present with the same shape and nothing else may remain,
   otherwise one error lists the missing, unexpected and mis-shaped keys. The neck (pyramid) is new and
   is never required; if the file has ``neck.*`` keys (a mega backbone's own state dict) they load too.
   BatchNorm ``num_batches_tracked`` counters may be absent (old torchvision files).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mega.backbones.base import Backbone

logger = logging.getLogger(__name__)

_WRAPPERS = ("state_dict", "model", "module", "net")
_SHOW = 12


def _is_tensor_dict(d: object) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint file -> flat {key: tensor}, unwrapped and without a ``module.`` prefix.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or no tensor dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights not found: {path}; put the checkpoint file there or point backbone.weights at "
            "it (backbone.weights=null starts from random weights; nothing is ever downloaded)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for pickled objects / truncated files
        raise ValueError(
            f"{path}: cannot be read as tensors only ({type(e).__name__}: {str(e).splitlines()[0]}). If it is "
            'a Lightning/OmegaConf checkpoint you trust, extract its weights once with: python -c "import '
            f"torch; c = torch.load('{path}', weights_only=False); torch.save(c['state_dict'], "
            f"'{path.with_suffix('.weights.pt')}')\" and point backbone.weights at the new file"
        ) from e
    for _ in range(3):
        if _is_tensor_dict(obj):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not _is_tensor_dict(obj):
        keys = list(obj)[:_SHOW] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: no state dict of tensors found (top level: {keys})")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _listing(title: str, keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return f"{title} ({len(keys)}): {', '.join(keys[:_SHOW])}{more}"


def load_mapped_state(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly copy ``state`` (already in the backbone's key layout) into its trunk (and neck if given).

    Raises:
        ValueError: listing missing trunk keys, unexpected keys and shape mismatches (nothing is loaded).
    """
    own = backbone.state_dict()
    trunk = backbone.trunk_state_keys()
    neck = [k for k in own if k.startswith("neck.")]
    expected = trunk + (neck if any(k.startswith("neck.") for k in state) else [])
    # BatchNorm step counters are absent from files saved before PyTorch 0.4 (torchvision's ResNet-50
    # V1): those keep ours. Everything else is required.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            _listing("missing", missing) if missing else "",
            _listing("unexpected", unexpected) if unexpected else "",
            _listing("wrong shape", shapes) if shapes else "",
        ]
        raise ValueError(
            f"{source}: does not fit backbone '{backbone.registry_name}' "
            f"({'; '.join(p for p in parts if p)}). Check that the file is a checkpoint of this "
            "architecture and that the config (width, depth, input_size) matches it"
        )
    with torch.no_grad():
        for k in expected:
            if k in state:
                own[k].copy_(state[k].to(own[k].dtype))


def load_backbone_weights(backbone: Backbone, path: str | os.PathLike) -> None:
    """Read ``path``, map it with ``backbone.convert_state_dict`` and load it strictly (see module doc)."""
    state = read_state_dict(path)
    try:
        mapped = backbone.convert_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    load_mapped_state(backbone, mapped, str(path))
    logger.info("backbone %s: loaded %d tensors from %s", backbone.registry_name, len(mapped), path)


def take_prefix(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], int]:
    """If any key starts with ``prefix``, keep only those (prefix stripped) and count the dropped rest.

    Used for whole-model checkpoints (HMR2, ViTPose, mmpose) whose backbone sits under ``backbone.``
    next to heads that are not ours.
    """
    if not any(k.startswith(prefix) for k in state):
        return state, 0
    kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return kept, len(state) - len(kept)

"""Gendered bodies: each sample meshed with its own gender's model (as MEGA and Mesh-VQ-VAE do).

Motion data carry a gender per sequence (AMASS, BEDLAM, MOYO: ``neutral``, ``male`` or ``female``).
:class:`GenderedBody` holds one SMPL-format model per gender and behaves like a
:class:`mega.body.model.BodyModel` (the neutral one answers every attribute: ``faces``,
``J_regressor``, ``num_betas`` ...), except that its forward meshes each sample with the model of
that sample's gender, set around the call by :func:`sample_genders`::

    body = load_body_model("smpl", path=..., gender="per_sequence")
    with sample_genders(body, batch["gender"]):        # (B,) str or int ids; a no-op for other bodies
        loss = tokenizer.loss(batch, body)

Tokenizers and other callers need not know: the genders travel beside the call, not through it.
Without :func:`sample_genders` (or outside it) every sample uses the neutral model. Joints read off
a mesh with ``J_regressor`` use the neutral regressor for every gender.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from mega.body.model import BodyModel
from mega.types import BodyOutput

GENDERS = ("neutral", "male", "female")  # id = index (as mega.data.motion.amass.GENDERS)
PER_SEQUENCE = "per_sequence"


def gender_ids(gender: Sequence[str] | Tensor, batch: int | None = None) -> Tensor:
    """(B,) int64 gender ids from a list of names (``m``/``f``/``n`` accepted) or ids; checks B."""
    if isinstance(gender, Tensor):
        ids = gender.long().reshape(-1).cpu()
    else:
        short = {"m": "male", "f": "female", "n": "neutral"}
        names = [short.get(str(g).lower(), str(g).lower()) for g in gender]
        unknown = sorted(set(names) - set(GENDERS))
        if unknown:
            raise ValueError(f"unknown gender(s) {unknown}; expected one of {GENDERS}")
        ids = torch.tensor([GENDERS.index(n) for n in names], dtype=torch.long)
    if ids.numel() and (ids.min() < 0 or ids.max() >= len(GENDERS)):
        raise ValueError(f"gender ids must be in [0, {len(GENDERS)}), got {ids.tolist()}")
    if batch is not None and ids.numel() != batch:
        raise ValueError(f"{ids.numel()} genders for a batch of {batch} bodies")
    return ids


class GenderedBody(nn.Module):
    """One body model per gender, dispatched per sample (see the module docstring).

    Args:
        models: ``{"neutral": BodyModel, "male": ..., "female": ...}`` with the same topology.
        name: label for messages and cache keys.
    """

    def __init__(self, models: dict[str, BodyModel], name: str = "smpl-per_sequence") -> None:
        super().__init__()
        if set(models) != set(GENDERS):
            raise ValueError(f"GenderedBody needs models for {GENDERS}, got {sorted(models)}")
        sizes = {g: (m.num_vertices, m.num_betas) for g, m in models.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"gendered models differ in vertices or betas: {sizes}")
        self.models = nn.ModuleDict({g: models[g] for g in GENDERS})
        self.name = name
        self._genders: Tensor | None = None

    def __getattr__(self, attr: str):
        try:
            return super().__getattr__(attr)
        except AttributeError:
            return getattr(self._modules["models"]["neutral"], attr)

    def forward(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
    ) -> BodyOutput:
        """As :meth:`BodyModel.forward`; sample b uses the model of the gender set by :func:`sample_genders`."""
        batch = global_orient.shape[0]
        ids = self._genders
        if ids is None:
            return self.models["neutral"](global_orient, body_pose, betas, transl)
        if ids.numel() != batch:
            raise ValueError(f"sample_genders set {ids.numel()} genders for a batch of {batch} bodies")
        present = ids.unique().tolist()
        if len(present) == 1:
            return self.models[GENDERS[present[0]]](global_orient, body_pose, betas, transl)
        parts: dict[int, tuple[Tensor, BodyOutput]] = {}
        for g in present:
            idx = (ids == g).nonzero().squeeze(1).to(global_orient.device)
            pick = lambda t: None if t is None else t.index_select(0, idx)  # noqa: E731, B023  (used within this iteration)
            parts[g] = (
                idx,
                self.models[GENDERS[g]](pick(global_orient), pick(body_pose), pick(betas), pick(transl)),
            )
        first = next(iter(parts.values()))[1]
        out = {}
        for field in ("vertices", "joints", "rot_mats"):
            ref = getattr(first, field)
            if ref is None:
                out[field] = None
                continue
            full = ref.new_empty((batch, *ref.shape[1:]))
            for idx, res in parts.values():
                full[idx] = getattr(res, field)
            out[field] = full
        return BodyOutput(**out)

    def extra_repr(self) -> str:
        return f"name={self.name}, genders={GENDERS}"


@contextlib.contextmanager
def sample_genders(body: nn.Module, gender: Sequence[str] | Tensor | None) -> Iterator[None]:
    """Within the block, ``body`` meshes sample b with ``gender[b]``'s model (GenderedBody only;
    any other body, or ``gender=None``, leaves the call unchanged)."""
    if not isinstance(body, GenderedBody) or gender is None:
        yield
        return
    previous = body._genders
    body._genders = gender_ids(gender)
    try:
        yield
    finally:
        body._genders = previous

"""mega: masked generative human mesh recovery (MEGA and GenHMR in one package).

The spine: image -> backbone -> conditioning tokens -> masked transformer over body-token ids
-> logits (B, L, K) -> sampler -> token ids -> tokenizer decoder -> canonical mesh or body pose
-> body model (SMPL-format, 24 joints) -> vertices, joints -> projection -> losses / metrics.

Shapes: B batch, L tokens, K codebook size, V vertices, J joints, Q samples per image.
"""

from mega import tv_shim as _tv_shim

# Must run before anything imports torchvision (timm, lightning ...); see mega/tv_shim.py.
_tv_shim.install()

__version__ = "0.1.0"

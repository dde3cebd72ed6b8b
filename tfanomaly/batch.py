"""The training batch: one declaration of its keys, shared by the data pipeline
(which builds batches), the models (``train_step``, ``test_step``,
``sample_outputs``) and the training monitor (which reads them).

A batch is a dict of tensors, every image in [0, 1], shape [B, H, W, C]:

- ``IMAGE``: the clean good image (a tile of it, with tiling);
- ``PERTURBED``: the same image under the synthetic anomaly of ``perturb``
  (Perlin, own texture, strokes) or ``corrupt`` (patch corruptions); the image
  itself when the family trains on clean images;
- ``PERTURB_MASK``: [B, H, W, 1], where the synthetic anomaly is (0 = nowhere);
- ``NOISE``: the noise the perturbation blended in (GRD-Net's L_nse target);
- ``ABNORMAL``: two-domain families only (CycleGAN-AD): a defective image,
  unpaired with ``IMAGE``.
"""

from __future__ import annotations

IMAGE = "image"
PERTURBED = "perturbed"
PERTURB_MASK = "perturb_mask"
NOISE = "noise"
ABNORMAL = "abnormal"

KEYS = (IMAGE, PERTURBED, PERTURB_MASK, NOISE)


def make(image, perturbed=None, perturb_mask=None, noise=None) -> dict:
    """A training batch (or one element of one). What is not given means "not
    perturbed": the image itself, an empty mask, zero noise."""
    import tensorflow as tf

    return {
        IMAGE: image,
        PERTURBED: image if perturbed is None else perturbed,
        PERTURB_MASK: tf.zeros_like(image[..., :1]) if perturb_mask is None else perturb_mask,
        NOISE: tf.zeros_like(image) if noise is None else noise,
    }

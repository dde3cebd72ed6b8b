"""Guards against known crashes of the TensorFlow CPU kernels on these machines.

oneDNN strided 1x1 weight gradient (TF 2.21, AVX-512)
------------------------------------------------------
The weight gradient (Conv2DBackpropFilter) of a 1x1 convolution with stride 2
writes outside its buffer when the convolution has fewer than 16 input
channels: the process dies with a segfault, or glibc aborts with
"munmap_chunk(): invalid pointer" (heap corruption), depending on the size.
Measured here (bench/onednn_crash.py, one process per case): crashes for
input channels 1, 4 and 8 (any output channels, batch 1 to 8, 16 to 256 px);
no crash for 16 or 24 input channels, for 3x3 or 2x2 stride-2 kernels, or for
stride 1. A Conv2DTranspose with a 1x1 kernel and stride 2 reaches the same
kernel through its weight gradient. ``ONEDNN_MAX_CPU_ISA=AVX2`` is not a cure:
it fixes 8 input channels but 4 still crash. ``TF_ENABLE_ONEDNN_OPTS=0``
(Eigen kernels) avoids it entirely.

tfanomaly's blocks never use strided 1x1 convolutions (the residual shortcut
subsamples then applies a stride-1 1x1 conv, which is the same function), and
:func:`check_model` refuses any trainable model that still contains one, so
training stops with a clear message instead of dying.
"""

from __future__ import annotations

import os

import keras

from tfanomaly.errors import UserError


def _risky(layer) -> str | None:
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)) or not layer.trainable:
        return None
    if tuple(layer.kernel_size) != (1, 1) or max(layer.strides) < 2:
        return None
    # The weight gradient's "input" is the layer input for Conv2D and the
    # layer output (the upstream gradient) for Conv2DTranspose.
    in_ch = layer.filters if isinstance(layer, keras.layers.Conv2DTranspose) else layer.input.shape[-1]
    if in_ch is not None and in_ch < 16:
        return f"layer {layer.name}: 1x1 stride-{max(layer.strides)} conv with {in_ch} input channels"
    return None


def _walk(model):
    for layer in model.layers if hasattr(model, "layers") else []:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer
    for attr in vars(model).values() if isinstance(model, keras.Model) else []:
        if isinstance(attr, keras.Model) and attr is not model:
            yield from _walk(attr)


def onednn_active() -> bool:
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"


def check_model(model) -> None:
    """Raise a UserError if training ``model`` would hit the oneDNN strided 1x1 crash."""
    if not onednn_active():
        return
    seen = set()
    for layer in _walk(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        why = _risky(layer)
        if why:
            raise UserError(
                f"{why} would crash TensorFlow's oneDNN weight-gradient kernel (segfault); give it >= 16 input channels, use a subsample + stride-1 1x1 conv, or run with TF_ENABLE_ONEDNN_OPTS=0"
            )

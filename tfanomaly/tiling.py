"""Native-scale tiling: cut a whole image of any size into overlapping tiles,
score them with any family's ``score``, and stitch the results back.

The layout (``tile_starts``): along each axis, tiles start at 0, s, 2s, ... and
one more tile is placed flush with the far border if the last regular tile
does not reach it, so every pixel is covered and no tile reads padding. An
image smaller than a tile along an axis is reflect-padded (symmetric) up to the
tile; the stitched maps are cropped back to the image. Overlapping tiles are
averaged (each pixel: mean of the tiles covering it). The image score is the
max of the tile scores: the strip rule of the vial line (a product is as bad as
its worst patch).

Everything here is TensorFlow graph code with dynamic shapes, so one traced
function serves every image size, in Python and inside an exported SavedModel.
"""

from __future__ import annotations

import tensorflow as tf


def axis_starts(n, tile: int, stride: int):
    """Start offsets of the tiles along one axis of length ``n`` (>= tile)."""
    n = tf.convert_to_tensor(n, tf.int32)
    span = n - tile
    count = (span + stride - 1) // stride + 1  # ceil(span / stride) + 1
    return tf.minimum(tf.range(count) * stride, span)


def pad_to_tile(image, tile):
    """Reflect-pad [H, W, C] at the bottom/right up to at least ``tile`` = (th, tw)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ph, pw = tf.maximum(tile[0] - h, 0), tf.maximum(tile[1] - w, 0)

    def pad(img):
        # SYMMETRIC padding can add at most the axis length at a time: repeat until large enough
        def body(x):
            hh, ww = tf.shape(x)[0], tf.shape(x)[1]
            return (tf.pad(x, [[0, tf.minimum(tf.maximum(tile[0] - hh, 0), hh)], [0, tf.minimum(tf.maximum(tile[1] - ww, 0), ww)], [0, 0]], "SYMMETRIC"),)

        def cond(x):
            return tf.logical_or(tf.shape(x)[0] < tile[0], tf.shape(x)[1] < tile[1])

        return tf.while_loop(cond, body, (img,), shape_invariants=(tf.TensorShape([None, None, image.shape[-1]]),))[0]

    return tf.cond(tf.logical_or(ph > 0, pw > 0), lambda: pad(image), lambda: image)


def tile_starts(height, width, tile, stride):
    """(ys, xs): start offsets of the tile rows and columns of an image of at least tile size."""
    return axis_starts(height, tile[0], stride[0]), axis_starts(width, tile[1], stride[1])


def cut(image, ys, xs, tile):
    """Tiles [len(ys) * len(xs), th, tw, C] of ``image`` [H, W, C], row-major."""
    rows = ys[:, None] + tf.range(tile[0])[None, :]  # [ny, th]
    cols = xs[:, None] + tf.range(tile[1])[None, :]  # [nx, tw]
    t = tf.gather(image, rows, axis=0)  # [ny, th, W, C]
    t = tf.gather(t, cols, axis=2)  # [ny, th, nx, tw, C]
    t = tf.transpose(t, [0, 2, 1, 3, 4])  # [ny, nx, th, tw, C]
    return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))


def stitch(tiles, ys, xs, height, width):
    """Average of tiles [N, th, tw, C] (row-major over ys x xs) at their places
    in an [height, width, C] map; pixels covered by k tiles get the mean of k."""
    th, tw = tf.shape(tiles)[1], tf.shape(tiles)[2]
    rows = ys[:, None] + tf.range(th)[None, :]  # [ny, th]
    cols = xs[:, None] + tf.range(tw)[None, :]  # [nx, tw]
    ny, nx = tf.shape(ys)[0], tf.shape(xs)[0]
    r = tf.broadcast_to(rows[:, None, :, None], [ny, nx, th, tw])
    c = tf.broadcast_to(cols[None, :, None, :], [ny, nx, th, tw])
    idx = tf.reshape(tf.stack([r, c], -1), [-1, 2])
    ch = tf.shape(tiles)[-1]
    vals = tf.reshape(tf.cast(tiles, tf.float32), [-1, ch])
    total = tf.scatter_nd(idx, vals, tf.stack([height, width, ch]))
    count = tf.scatter_nd(idx, tf.ones_like(vals[:, :1]), tf.stack([height, width, 1]))
    return total / tf.maximum(count, 1.0)


def _chunked(score_fn, tiles, chunk: int):
    """``score_fn`` over tiles in chunks of at most ``chunk``, one chunk at a
    time (bounded memory); the last chunk is as small as the tiles left (no
    padding to a full chunk)."""
    n = tf.shape(tiles)[0]
    n_chunks = (n + chunk - 1) // chunk

    def arrays():
        return [tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False) for _ in range(3)]

    def body(i, s, h, r):
        o = score_fn(tiles[i * chunk : tf.minimum((i + 1) * chunk, n)])
        return (i + 1, s.write(i, tf.cast(o["score"], tf.float32)), h.write(i, tf.cast(o["heatmap"], tf.float32)), r.write(i, tf.cast(o["reconstruction"], tf.float32)))

    _, s, h, r = tf.while_loop(lambda i, *_: i < n_chunks, body, (tf.constant(0), *arrays()), parallel_iterations=1)
    return s.concat(), h.concat(), r.concat()


FLIP_AXES = {"h": [2], "v": [1], "hv": [1, 2]}  # of a batch [N, H, W, C]: left-right, top-bottom, both


def with_flips(score_fn, flips=()):
    """``score_fn`` that also scores each tile flipped (``flips``: any of "h"
    left-right, "v" top-bottom, "hv" both) in the same batch, flips the heatmaps
    and reconstructions back, and returns the mean over the plain tile and its
    flips of score, heatmap and reconstruction (test-time augmentation). With no
    flips it is ``score_fn`` itself."""
    axes = [FLIP_AXES[f] for f in flips]
    if not axes:
        return score_fn

    def fn(tiles):
        n = tf.shape(tiles)[0]
        o = score_fn(tf.concat([tiles, *[tf.reverse(tiles, a) for a in axes]], 0))

        def mean(x, spatial):
            views = [x[k * n : (k + 1) * n] for k in range(len(axes) + 1)]
            if spatial:
                views = [views[0], *[tf.reverse(v, a) for v, a in zip(views[1:], axes)]]
            return tf.add_n([tf.cast(v, tf.float32) for v in views]) / float(len(views))

        return {"score": mean(o["score"], False), "heatmap": mean(o["heatmap"], True), "reconstruction": mean(o["reconstruction"], True)}

    return fn


def score_image(score_fn, image, tile, stride, chunk: int = 64, flips=()):
    """Score one whole image [H, W, C] (any H, W) by tiles.

    Returns ``{score: [], heatmap: [H, W, 1], reconstruction: [H, W, C],
    tile_scores: [N], tile_ys: [ny], tile_xs: [nx]}``; ``score`` is the max
    of ``tile_scores``. With ``flips`` (:func:`with_flips`) every tile's score
    and maps are the mean over the tile and its flips; a chunk then holds
    ``chunk / (1 + len(flips))`` tiles, so one call of ``score_fn`` still sees
    at most ``chunk`` images."""
    score_fn = with_flips(score_fn, flips)
    chunk = max(1, int(chunk) // (1 + len(flips)))
    tile = (int(tile[0]), int(tile[1]))
    stride = (int(stride[0]), int(stride[1]))
    image = tf.convert_to_tensor(image, tf.float32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    padded = pad_to_tile(image, tile)
    ph, pw = tf.shape(padded)[0], tf.shape(padded)[1]
    ys, xs = tile_starts(ph, pw, tile, stride)
    tiles = cut(padded, ys, xs, tile)
    tiles = tf.ensure_shape(tiles, [None, tile[0], tile[1], image.shape[-1]])
    scores, heat, recon = _chunked(score_fn, tiles, chunk)
    heatmap = stitch(heat, ys, xs, ph, pw)[:h, :w]
    reconstruction = stitch(recon, ys, xs, ph, pw)[:h, :w]
    return {
        "score": tf.reduce_max(scores),
        "heatmap": heatmap,
        "reconstruction": reconstruction,
        "tile_scores": scores,
        "tile_ys": ys,
        "tile_xs": xs,
    }


def rescale(image, scale: float, method: str = "bilinear"):
    """Resize a float image [H, W, C] in [0, 1] by ``scale`` (aspect kept) as the
    data pipeline does: resize the 8-bit values, round, back to [0, 1]."""
    if scale == 1.0:
        return image
    hw = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
    out = tf.image.resize(tf.round(image * 255.0), hw, method=method)  # the 8-bit values, exactly
    return tf.clip_by_value(tf.round(out), 0.0, 255.0) / 255.0


class TiledScorer:
    """A model's ``score`` applied by tiles to whole images of any size.

    ``scorer(image)`` takes one float image [H, W, C] in [0, 1], already at the
    tiling scale, and returns the dict of :func:`score_image`. One
    ``tf.function`` (dynamic H, W) serves every image size."""

    def __init__(self, model, tile, stride, chunk: int = 64, flips=()):
        self.model = model
        self.tile = (int(tile[0]), int(tile[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        self.chunk = int(chunk)
        self.flips = tuple(flips)
        channels = int(model.image_shape[-1])
        self._fn = tf.function(
            lambda image: score_image(model.score, image, self.tile, self.stride, self.chunk, self.flips),
            input_signature=[tf.TensorSpec([None, None, channels], tf.float32)],
            reduce_retracing=True,
        )

    @classmethod
    def from_config(cls, model, cfg):
        return cls(model, cfg.data.image_size, cfg.data.tiling.stride, cfg.eval.batch_size, cfg.data.tiling.flips)

    def __call__(self, image):
        return self._fn(tf.convert_to_tensor(image, tf.float32))


def random_tile(image, mask, tile, seed, stride=None, grid_fraction: float = 0.0):
    """A random [th, tw] crop of an image [H, W, C] (reflect-padded to at least
    the tile) and the same crop of its mask [H, W, 1]; ``seed`` is a stateless
    seed pair.

    With ``grid_fraction`` > 0 (and the scoring ``stride``), each axis of the
    crop starts, with that probability, at one of the offsets the scorer cuts
    (``axis_starts``), else anywhere. The scorer puts the first and last tile of
    every row and column flush with the image border, so on small images most
    scored tiles hold a border or a corner; uniform crops show a border at
    exactly that place only once in (n - tile + 1) draws, and the model then
    learns borders and corners as rare, i.e. anomalous."""
    both = tf.concat([tf.cast(image, tf.float32), tf.cast(mask, tf.float32)], -1)
    both = pad_to_tile(both, tile)
    c = image.shape[-1]
    if not grid_fraction:
        out = tf.image.stateless_random_crop(both, [tile[0], tile[1], c + 1], seed)
    else:
        s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
        size = tf.shape(both)[:2]
        on_grid = tf.random.stateless_uniform([2], s[0]) < grid_fraction
        starts = []
        for axis in range(2):
            anywhere = tf.random.stateless_uniform([], s[1 + axis], 0, size[axis] - tile[axis] + 1, tf.int32)
            grid = axis_starts(size[axis], tile[axis], stride[axis])
            pick = tf.random.stateless_uniform([], s[3 + axis], 0, tf.size(grid), tf.int32)
            starts.append(tf.where(on_grid[axis], grid[pick], anywhere))
        out = both[starts[0] : starts[0] + tile[0], starts[1] : starts[1] + tile[1]]
    return tf.cast(out[..., :c], image.dtype), tf.cast(out[..., c:], mask.dtype)

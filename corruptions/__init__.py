"""Common corruptions: CIFAR-10-C (Hendrycks & Dietterich 2019) and MNIST-C (Mu & Gilmer 2019),
built here from the test splits we have, since the released sets cannot be downloaded.

Each corruption is one `Corruption` in its benchmark's registry (`BENCHMARKS`): name, family,
the reference generator's parameter at each severity, and the function. The parameters are
those of `make_cifar_c.py` (hendrycks/robustness, the CIFAR settings, not ImageNet-C's) and of
`corruptions.py` (google-research/mnist-c). Where the reference needs what we cannot have, the
entry says so: `replaced` names a documented replacement with the same parameters (ImageMagick's
motion blur), `missing` marks a corruption not built (frost needs the reference's photographs),
and both reach the report. Nothing is a silent stand-in.

A function (in `corruptions.ops`) takes one image as floats in [0, 1] (H, W, 3 for CIFAR-10-C;
28 x 28 grey for MNIST-C: the window where MNIST sits in our 32x32 frame, so the reference's own
coordinates hold), the severity's parameter and a numpy Generator, and returns floats in [0, 1]. `corrupt` runs one (corruption, severity)
over a batch with its own seeded generator and stores uint8 as the reference does (truncating,
`np.uint8(x * 255)`), so the same seed gives the same images.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from corruptions.ops import (MNIST_SIZE, MOTION, brightness, canny_edges, contrast, defocus_blur,
                             dotted_line, elastic_transform, fog, gaussian_noise, glass_blur,
                             impulse_noise, jpeg_compression, motion_blur, pixelate, rotate, scale,
                             shear, shot_noise, snow, spatter, stripe, translate, zigzag, zoom_blur)


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str
    severities: tuple  # the reference's parameter at severity 1..5 (one entry: no severity)
    apply: Callable  # (image in [0, 1], parameter, numpy Generator) -> image in [0, 1]
    released: tuple = (1, 2, 3, 4, 5)  # the severities the released benchmark holds
    replaced: str = ""  # how it departs from the reference, and why
    missing: str = ""  # why it is not built ("" where it is)
    monotone: Callable = None  # parameter -> a number that grows with severity (the tests)


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    grey: bool  # applied to one grey channel (digits), else to RGB
    corruptions: dict

    def built(self):
        return {n: c for n, c in self.corruptions.items() if not c.missing}


def _first(c):
    return c[0]


CIFAR10_C = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", (0.04, 0.06, .08, .09, .10), gaussian_noise),
    Corruption("shot_noise", "noise", (500, 250, 100, 75, 50), shot_noise, monotone=lambda c: -c),
    Corruption("impulse_noise", "noise", (.01, .02, .03, .05, .07), impulse_noise),
    Corruption("defocus_blur", "blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
               defocus_blur, monotone=_first),
    Corruption("glass_blur", "blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
               glass_blur, monotone=lambda c: (c[2], c[0])),
    Corruption("motion_blur", "blur", ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)), motion_blur,
               replaced=MOTION, monotone=lambda c: (c[0], c[1])),
    Corruption("zoom_blur", "blur", tuple(tuple(np.arange(1, top, 0.01))
                                          for top in (1.06, 1.11, 1.16, 1.21, 1.26)),
               zoom_blur, monotone=max),
    Corruption("snow", "weather", ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                                   (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                                   (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)), snow,
               replaced="its snow layer's motion blur: " + MOTION, monotone=lambda c: -c[6]),
    Corruption("frost", "weather", ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)), None,
               monotone=lambda c: c[1],
               missing="the reference blends crops of six frost photographs shipped with its code "
                       "(frost1.png ... frost6.jpg), which cannot be fetched here; no other picture "
                       "has the same parameters"),
    Corruption("fog", "weather", ((.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)), fog,
               monotone=_first),
    Corruption("brightness", "weather", (.05, .1, .15, .2, .3), brightness),
    Corruption("contrast", "digital", (.75, .5, .4, .3, .15), contrast, monotone=lambda c: -c),
    Corruption("elastic_transform", "digital", tuple((32 * a, 32 * s, 32 * m) for a, s, m in (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
        elastic_transform, monotone=lambda c: (c[0], -c[1])),
    Corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), pixelate, monotone=lambda c: -c),
    Corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40), jpeg_compression,
               monotone=lambda c: -c,
               replaced="the CIFAR-10 copy this study has is itself JPEG (quality 75), so this "
                        "recompresses; the released set compresses the PNG originals"),
)}


MNIST_C = {c.name: c for c in (
    Corruption("shot_noise", "noise", (60, 25, 12, 5, 3), shot_noise, released=(5,), monotone=lambda c: -c),
    Corruption("impulse_noise", "noise", (.03, .06, .09, .17, .27), impulse_noise, released=(4,)),
    Corruption("glass_blur", "blur", ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
               lambda x, c, rng: glass_blur(x, c, rng, skip_half=True), released=(1,), monotone=_first),
    Corruption("motion_blur", "blur", ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), motion_blur,
               released=(1,), replaced=MOTION, monotone=lambda c: (c[0], c[1])),
    Corruption("shear", "affine", (0.2, 0.4, 0.6, 0.8, 1.0), shear, released=(2,)),
    Corruption("scale", "affine", tuple(1 / s for s in (.9, .8, .7, .6, .5)), scale, released=(3,)),
    Corruption("rotate", "affine", (0.2, 0.4, 0.6, 0.8, 1.0), rotate, released=(2,)),
    Corruption("brightness", "weather", (.1, .2, .3, .4, .5), brightness, released=(5,)),
    Corruption("translate", "affine", (1, 2, 3, 4, 5), translate, released=(3,)),
    Corruption("stripe", "digital", (None,), stripe, released=(1,)),
    Corruption("fog", "weather", ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)),
               lambda x, c, rng: fog(x, c, rng, mapsize=256), released=(5,), monotone=_first),
    Corruption("spatter", "weather", ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                                      (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                                      (0.67, 0.4, 1, 0.65, 1.5, 1)), spatter, released=(4,),
               monotone=lambda c: -c[3],
               replaced="MNIST-C's code paints mud at every severity; only severity 4 (its "
                        "released one) is built"),
    Corruption("dotted_line", "digital", (None,), dotted_line, released=(1,)),
    Corruption("zigzag", "digital", (None,), zigzag, released=(1,)),
    Corruption("canny_edges", "digital", (None,), canny_edges, released=(1,)),
)}

BENCHMARKS = {b.name: b for b in (
    Benchmark("cifar10-c", "CIFAR-10-C (Hendrycks & Dietterich 2019; make_cifar_c.py's CIFAR "
              "parameters), built from our test split", False, CIFAR10_C),
    Benchmark("mnist-c", "MNIST-C (Mu & Gilmer 2019; google-research/mnist-c, each corruption at "
              "its released severity), built from our test split on the 28x28 window where MNIST "
              "sits in the 32x32 frame", True, MNIST_C),
)}


# ----------------------------------------------------------------------------- building

def corrupt(benchmark, name, severity, images, seed):
    """uint8 images (N, H, W, 3) under one corruption at one severity, from a generator seeded
    with (seed, the corruption's place in its registry, severity): the same call, the same
    images. A grey benchmark corrupts channel 0 on its 28x28 window and copies it to every channel."""
    b = BENCHMARKS[benchmark]
    c = b.corruptions[name]
    if c.missing:
        raise ValueError(f"{benchmark} {name} is not built: {c.missing}")
    if severity not in range(1, len(c.severities) + 1):
        raise ValueError(f"{benchmark} {name} has severities 1..{len(c.severities)}, not {severity}")
    rng = np.random.default_rng([seed, list(b.corruptions).index(name), severity])
    param = c.severities[severity - 1]
    out = images.copy()
    margin = (images.shape[1] - MNIST_SIZE) // 2
    for i, img in enumerate(images):
        if b.grey:
            window = img[margin:margin + MNIST_SIZE, margin:margin + MNIST_SIZE, 0] / 255.0
            out[i, margin:margin + MNIST_SIZE, margin:margin + MNIST_SIZE, :] = _to_uint8(
                c.apply(window, param, rng))[..., None]
        else:
            out[i] = _to_uint8(c.apply(img / 255.0, param, rng))
    return out


def _to_uint8(x):
    """The reference's np.uint8(x * 255), which truncates; the 1e-7 keeps exact 8-bit values
    (PIL's JPEG and pixelate) from falling a level on their way through [0, 1]."""
    return np.uint8(np.clip(x, 0, 1) * 255 + 1e-7)


def cells(benchmark):
    """[(corruption, severity)] the benchmark releases, built ones only, in registry order."""
    return [(n, s) for n, c in BENCHMARKS[benchmark].built().items() for s in c.released]


def recipe():
    """A digest of the corruptions' code and parameters: a cached set built from another recipe
    is rebuilt (any edit of this package counts, comments included: never a stale set)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(name.encode() + f.read())
    return digest.hexdigest()[:16]

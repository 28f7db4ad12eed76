"""The corruptions' operations: one function per corruption of CIFAR-10-C and MNIST-C, each
(image in [0, 1], the severity's parameter, numpy Generator) -> image in [0, 1], following the
reference generators (make_cifar_c.py, google-research/mnist-c) step by step with scipy, PIL and
scikit-image in place of OpenCV and ImageMagick; `corruptions` registers them."""

import io

import numpy as np
from PIL import Image
from scipy import ndimage


# ----------------------------------------------------------------------------- helpers

def _gaussian(x, sigma, mode="nearest", truncate=4.0):
    """skimage.filters.gaussian over the image plane only (its default mode, truncation)."""
    sigmas = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _disk(radius, alias_blur):
    """The reference's antialiased disk: an aliased disk of `radius` on a 17x17 grid, blurred
    by OpenCV's 3x3 Gaussian (kernel exp(-i^2 / 2 sigma^2) over -1..1, BORDER_REFLECT_101)."""
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    k = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    for axis in (0, 1):
        disk = ndimage.correlate1d(disk, k / k.sum(), axis=axis, mode="mirror")
    return disk


def _filter(x, kernel):
    """OpenCV's filter2D per channel: correlation, BORDER_REFLECT_101 (scipy's 'mirror')."""
    if x.ndim == 2:
        return ndimage.correlate(x, kernel, mode="mirror")
    return np.stack([ndimage.correlate(x[..., c], kernel, mode="mirror")
                     for c in range(x.shape[2])], axis=-1)


def _motion_blur(x, radius, sigma, angle):
    """ImageMagick's MotionBlurImage, reimplemented: a one-sided line kernel of 2*ceil(radius)+1
    taps at integer offsets along `angle` (degrees), weights exp(-i^2 / 2 sigma^2) normalized,
    edge pixels repeated. The reference calls ImageMagick through Wand, which we cannot install
    here; this follows its algorithm with the same parameters, not its bytes."""
    width = int(2 * np.ceil(radius) + 1)
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    out = np.zeros_like(x)
    for i, w in enumerate(weights):
        dx, dy = int(np.ceil(i * np.cos(a) - 0.5)), int(np.ceil(i * np.sin(a) - 0.5))
        shift = (-dy, -dx) + (0,) * (x.ndim - 2)
        out += w * ndimage.shift(x, shift, order=0, mode="nearest")
    return out


MOTION = ("ImageMagick's motion blur (the reference calls it through Wand, not installable "
          "here) reimplemented from its algorithm: same radius, sigma and angle range")


def plasma_fractal(mapsize, wibbledecay, rng):
    """The reference's diamond-square height map in [0, 1], side `mapsize` (a power of 2)."""
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)
    while step >= 2:
        corner = m[0:mapsize:step, 0:mapsize:step]
        square = corner + np.roll(corner, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        m[step // 2:mapsize:step, step // 2:mapsize:step] = wibbled(square)
        dr, ul = m[step // 2:mapsize:step, step // 2:mapsize:step], m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, step // 2:mapsize:step] = wibbled(dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1))
        m[step // 2:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0))
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def _clipped_zoom(x, factor):
    """The centre crop of side ceil(h / factor), zoomed back (linear) to about h and trimmed."""
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    z = ndimage.zoom(x[top:top + ch, top:top + ch], (factor, factor) + (1,) * (x.ndim - 2), order=1)
    trim = (z.shape[0] - h) // 2
    return z[trim:trim + h, trim:trim + h]


def _pil(x, op):
    """`op` on x as an 8-bit PIL image (as the reference stores it), back to [0, 1]."""
    img = Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255))
    return np.asarray(op(img), dtype=np.float64) / 255


def _jpeg(img, quality):
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


def _hsv_brightness(rgb, c):
    from skimage import color
    hsv = color.rgb2hsv(rgb)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return color.hsv2rgb(hsv)


# ----------------------------------------------------------------------------- both benchmarks

def gaussian_noise(x, c, rng):
    return x + rng.normal(size=x.shape, scale=c)


def shot_noise(x, c, rng):
    return rng.poisson(x * c) / c


def impulse_noise(x, c, rng):
    from skimage.util import random_noise
    return random_noise(x, mode="s&p", amount=c, rng=rng)


def glass_blur(x, c, rng, skip_half=False):
    """Blur, move pixels locally (c[2] passes over the image, each pixel with a random
    neighbour within c[1]), blur again. MNIST-C visits each pixel with probability 1/2
    (`skip_half`). As the reference's numpy code executes its "swap": on a grey image two
    scalars are swapped; on an RGB image the tuple assignment of two views copies the
    neighbour's pixel into (i, j) and leaves the neighbour as it was (CIFAR-10-C as released)."""
    sigma, delta, passes = c
    x = np.uint8(_gaussian(x, sigma) * 255)
    h, w = x.shape[:2]
    for _ in range(passes):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                if skip_half and rng.random() < 0.5:
                    continue
                dx, dy = rng.integers(-delta, delta, size=2)
                if x.ndim == 3:
                    x[i, j] = x[i + dy, j + dx]
                else:
                    x[i, j], x[i + dy, j + dx] = x[i + dy, j + dx], x[i, j]
    return _gaussian(x / 255, sigma)


def defocus_blur(x, c, rng):
    return _filter(x, _disk(*c))


def motion_blur(x, c, rng):
    return _motion_blur(x, c[0], c[1], rng.uniform(-45, 45))


def zoom_blur(x, factors, rng):
    out = sum(_clipped_zoom(x, f) for f in factors)
    return (x + out) / (len(factors) + 1)


def fog(x, c, rng, mapsize=32):
    h, w = x.shape[:2]
    peak = x.max()
    layer = plasma_fractal(mapsize, c[1], rng)[:h, :w]
    return (x + c[0] * (layer[..., None] if x.ndim == 3 else layer)) * peak / (peak + c[0])


def snow(x, c, rng):
    loc, scale, zoom, threshold, radius, sigma, keep = c
    layer = _clipped_zoom(rng.normal(size=x.shape[:2], loc=loc, scale=scale), zoom)
    layer[layer < threshold] = 0
    layer = np.uint8(np.clip(layer, 0, 1) * 255) / 255  # the reference's 8-bit PNG
    layer = np.uint8(np.clip(_motion_blur(layer, radius, sigma, rng.uniform(-135, -45)), 0, 1) * 255) / 255
    grey = x @ np.array([0.299, 0.587, 0.114]) if x.ndim == 3 else x  # OpenCV's RGB2GRAY
    lift = grey[..., None] if x.ndim == 3 else grey
    x = keep * x + (1 - keep) * np.maximum(x, lift * 1.5 + 0.5)
    layer = layer[..., None] if x.ndim == 3 else layer
    return x + layer + np.rot90(layer, k=2)


def contrast(x, c, rng):
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def brightness(x, c, rng):
    if x.ndim == 2:  # MNIST-C: grey to RGB, V + c, back to grey (rgb2gray's weights sum to 1)
        return _hsv_brightness(np.repeat(x[..., None], 3, axis=2), c).mean(axis=2)
    return _hsv_brightness(x, c)


def pixelate(x, c, rng):
    h, w = x.shape[:2]
    return _pil(x, lambda img: img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX))


def jpeg_compression(x, c, rng):
    return _pil(x, lambda img: _jpeg(img, c))


def elastic_transform(x, c, rng):
    """A random affine (three points moved by up to c[2]) then a smooth random displacement
    field (uniform noise blurred by c[1], scaled by c[0]), as the reference draws them."""
    h, w = x.shape[:2]
    centre, half = np.float64([h, w]) // 2, min(h, w) // 3
    src = np.array([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    dst = src + rng.uniform(-c[2], c[2], size=src.shape)
    # OpenCV's getAffineTransform maps src -> dst in (x, y); warpAffine samples the inverse
    forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # 2x3, (x, y) coordinates
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
    matrix, offset = swap @ inverse[:, :2] @ swap, swap @ inverse[:, 2]
    planes = [x] if x.ndim == 2 else [x[..., k] for k in range(x.shape[2])]
    planes = [ndimage.affine_transform(p, matrix, offset, order=1, mode="mirror") for p in planes]
    dx = _gaussian(rng.uniform(-1, 1, size=(h, w)), c[1], mode="reflect", truncate=3) * c[0]
    dy = _gaussian(rng.uniform(-1, 1, size=(h, w)), c[1], mode="reflect", truncate=3) * c[0]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [rows + dy, cols + dx]
    out = [ndimage.map_coordinates(p, coords, order=1, mode="reflect") for p in planes]
    return out[0] if x.ndim == 2 else np.stack(out, axis=-1)



MNIST_SIZE = 28  # MNIST-C's coordinates: applied to the 28x28 window where MNIST sits in our frame


def _affine(x, **params):
    """skimage's affine warp about the image centre, as MNIST-C builds it (13.5 at 28x28)."""
    from skimage import transform
    centre = (x.shape[0] - 1) / 2
    (a1, a2), (b1, b2) = transform.AffineTransform(**params).params[:2, :2]
    shift = [centre * (1 - a1 - a2), centre * (1 - b1 - b2)]
    return transform.warp(x, inverse_map=transform.AffineTransform(translation=shift, **params))


def shear(x, c, rng):
    return _affine(x, shear=c * rng.choice([-1, 1]))


def rotate(x, c, rng):
    return _affine(x, rotation=c * rng.choice([-1, 1]))


def scale(x, c, rng):
    return _affine(x, scale=(c, c))


def translate(x, c, rng):
    from skimage import transform
    dx, dy = c * rng.choice([-1, 1], 2)
    return transform.warp(x, inverse_map=transform.AffineTransform(translation=[dx, dy]))


def stripe(x, c, rng):
    x = x.copy()
    x[:, :7], x[:, 21:] = 1 - x[:, :7], 1 - x[:, 21:]
    return x


def spatter(x, c, rng):
    """MNIST-C's mud spatter: blobs of a thresholded blurred noise layer, painted dark grey."""
    liquid = _gaussian(rng.normal(size=x.shape, loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    mask = _gaussian(np.where(liquid > c[3], 1.0, 0.0), c[4])
    mask[mask < 0.8] = 0
    return x * (1 - mask) + 63 / 255 * mask


def _line(c0, r0, c1, r1, size=MNIST_SIZE):
    """MNIST-C's anti-aliased line from column c0, row r0 to column c1, row r1."""
    if c1 == c0:
        return np.zeros((size, size))
    cc, rr = np.meshgrid(np.linspace(0, size - 1, size), np.linspace(0, size - 1, size), sparse=True)
    dist = np.clip(np.abs(rr - ((r1 - r0) / (c1 - c0) * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    line[:, :int(np.floor(c0))] = 0
    line[:, int(np.ceil(c1)):] = 0
    return line


def dotted_line(x, c, rng):
    r0, r1 = rng.integers(0, 27, size=2)
    line = _line(0, r0, 27, r1)
    for k, start in enumerate(range(0, 28, 2)):  # every other 2-column band is a gap
        if k % 2 == 0:
            line[:, start:start + 2] = 0
    return x + line


def zigzag(x, c, rng):
    """MNIST-C's zigzag: 2-pixel teeth along a random line from column 2 to 25."""
    a = b = 2.0
    c0, c1 = 2, 25
    r0 = rng.integers(0, 27)
    r1 = r0 + rng.integers(-5, 5)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)] + [((2 * i + 1) * a, (-1) ** i * b) for i in range(int((d - a) // (2 * a)) + 1)]
    last = (2 * a) * (d // (2 * a))
    if d != last:
        points.append((d, points[-1][1] / (2 * (d - last))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ np.array(points).T
    cs, rs = cs + c0, rs + r0
    for i in range(1, len(cs)):
        x = np.clip(x + _line(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
    return x


def canny_edges(x, c, rng):
    from skimage import feature
    return feature.canny(x).astype(np.float64)

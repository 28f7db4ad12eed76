"""A hand-written ResNet18 (He et al. 2016) for 32x32 inputs in [0, 1].

Normalization is the model's first layer, so everything outside the model
(attacks, eps, augmentation) works in pixel space. Parameter names follow
torchvision's resnet18, so its ImageNet weights load without renaming.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

STEMS = ("imagenet", "cifar")


class Conv2d(nn.Conv2d):
    """nn.Conv2d with an exact fast path for convolutions whose output is a single pixel.

    With a 32x32 input and the ImageNet stem, layer4 runs on 1x1 maps (its first conv
    sees 2x2). When the whole input lies inside the kernel's window, the convolution is
    one matrix product with the taps that meet the input; every other tap sees padding.
    oneDNN's CPU backward for these shapes was measured 5-20x slower than the product
    and took two thirds of a training step. Outputs and gradients are the same.
    """

    def forward(self, x):
        h, w = x.shape[-2:]
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if (self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and ph + h <= kh and pw + w <= kw
                and (h + 2 * ph - kh) // self.stride[0] == 0
                and (w + 2 * pw - kw) // self.stride[1] == 0):
            taps = self.weight[:, :, ph:ph + h, pw:pw + w]
            return F.linear(x.flatten(1), taps.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


def _norm(channels, use_bn):
    return nn.BatchNorm2d(channels) if use_bn else nn.Identity()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, use_bn=True):
        super().__init__()
        bias = not use_bn
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm(planes, use_bn)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=bias)
        self.bn2 = _norm(planes, use_bn)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            layers = [nn.Conv2d(in_planes, planes, 1, stride=stride, bias=bias)]
            if use_bn:
                layers.append(nn.BatchNorm2d(planes))
            self.downsample = nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, use_bn=True, stem="imagenet",
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dropout=0.0):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        bias = not use_bn
        if stem == "imagenet":
            # 7x7/2 conv + 3x3/2 max-pool: a 32x32 image reaches layer1 at 8x8,
            # which keeps a CPU epoch of CIFAR-10 to about a minute.
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=bias)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            # 3x3/1 conv, no pooling: layer1 runs at 32x32 (about 10x the compute).
            self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=bias)
            self.maxpool = nn.Identity()
        self.bn1 = _norm(64, use_bn)

        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(block(in_planes, planes, s, use_bn))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.feature_dim = 512 * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x):
        """Penultimate 512-d features of images in [0, 1]."""
        x = (x - self.mean) / self.std
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x, return_features=False):
        feats = self.features(x)
        logits = self.fc(self.dropout(feats))
        return (logits, feats) if return_features else logits


def feature_map_sizes(stem="imagenet", size=32):
    """{stage: side of its square feature maps} for a size x size input: with the ImageNet
    stem a 32x32 image reaches layer4 at 1x1, with the CIFAR stem at 4x4."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    down = lambda s, k, p: (s + 2 * p - k) // 2 + 1  # noqa: E731  a stride-2 window
    side = down(down(size, 7, 3), 3, 1) if stem == "imagenet" else size
    sizes = {"layer1": side}
    for stage in ("layer2", "layer3", "layer4"):
        side = down(side, 3, 1)
        sizes[stage] = side
    return sizes


def resnet18(num_classes=10, use_bn=True, stem="imagenet", mean=(0.0, 0.0, 0.0),
             std=(1.0, 1.0, 1.0), dropout=0.0):
    """ResNet18: BasicBlocks [2, 2, 2, 2]. `mean`/`std` normalize inputs inside the model."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, use_bn=use_bn, stem=stem,
                  mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                  dropout=float(dropout))


def load_torchvision_weights(model, state_dict, load_fc=None):
    """Copy a torchvision resnet18 state dict into `model`.

    Names already match; only the stem and the classifier may differ in shape.
    The classifier is loaded when its shape matches (`load_fc=None`), or as forced
    by `load_fc`. Raises ValueError naming every tensor that does not fit.
    """
    if not isinstance(model.bn1, nn.BatchNorm2d):
        raise ValueError("torchvision resnet18 weights need a model built with use_bn=True")
    own = model.state_dict()
    fc_fits = all(k in state_dict and state_dict[k].shape == own[k].shape
                  for k in ("fc.weight", "fc.bias"))
    if load_fc is None:
        load_fc = fc_fits
    elif load_fc and not fc_fits:
        raise ValueError("fc shapes differ: the weights' classifier cannot be loaded")
    wanted = {k: v for k, v in own.items()
              if k not in ("mean", "std") and not (k.startswith("fc.") and not load_fc)}
    missing = sorted(k for k in wanted if k not in state_dict)
    mismatched = sorted(k for k in wanted if k in state_dict and state_dict[k].shape != own[k].shape)
    if missing or mismatched:
        raise ValueError(
            "these weights do not fit a torchvision-style resnet18: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"shape mismatch {mismatched[:5]}{'...' if len(mismatched) > 5 else ''} "
            "(ImageNet weights need stem='imagenet')")
    model.load_state_dict({**own, **{k: state_dict[k] for k in wanted}})
    return model

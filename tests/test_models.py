import pytest
import torch
import torch.nn as nn
import torchvision

from models import load_torchvision_weights, resnet18


def test_logits_equal_torchvision_resnet18_with_same_weights():
    reference = torchvision.models.resnet18(num_classes=10).eval()
    ours = resnet18(num_classes=10, mean=(0, 0, 0), std=(1, 1, 1)).eval()
    load_torchvision_weights(ours, reference.state_dict())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)
        x = torch.rand(2, 3, 64, 64)
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)


def test_parameter_names_match_torchvision():
    ours = {k for k in resnet18().state_dict() if k not in ("mean", "std")}
    assert ours == set(torchvision.models.resnet18(num_classes=10).state_dict())


def test_imagenet_classifier_is_skipped_when_classes_differ():
    reference = torchvision.models.resnet18()  # 1000 classes
    ours = resnet18(num_classes=10)
    fc_before = ours.fc.weight.clone()
    load_torchvision_weights(ours, reference.state_dict())
    assert torch.equal(ours.fc.weight, fc_before)
    assert torch.equal(ours.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    with pytest.raises(ValueError, match="fc shapes differ"):
        load_torchvision_weights(ours, reference.state_dict(), load_fc=True)


def test_weights_that_do_not_fit_are_rejected_by_name():
    with pytest.raises(ValueError, match="use_bn=True"):
        load_torchvision_weights(resnet18(use_bn=False), torchvision.models.resnet18().state_dict())
    with pytest.raises(ValueError, match="conv1.weight"):
        load_torchvision_weights(resnet18(stem="cifar"), torchvision.models.resnet18().state_dict())


def test_normalization_is_the_first_layer():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalized = resnet18(mean=mean, std=std).eval()
    plain = resnet18().eval()
    plain.load_state_dict({**normalized.state_dict(), "mean": plain.mean, "std": plain.std})
    x = torch.rand(2, 3, 32, 32)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), plain((x - m) / s), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("use_bn", [True, False])
def test_shapes_features_and_architecture(stem, use_bn):
    model = resnet18(num_classes=7, use_bn=use_bn, stem=stem)
    logits, feats = model(torch.rand(3, 3, 32, 32), return_features=True)
    assert logits.shape == (3, 7) and feats.shape == (3, 512)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    assert len(blocks) == 8
    for block in blocks:
        assert block.conv1.kernel_size == block.conv2.kernel_size == (3, 3)
        assert (block.conv1.bias is None) == use_bn
    # projection shortcuts exactly where stride or width change: first block of layers 2-4
    assert [b.downsample is not None for b in blocks] == [False, False, True, False] + [True, False] * 2
    proj = blocks[2].downsample
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1)
    assert (len(proj) == 2 and isinstance(proj[1], nn.BatchNorm2d)) == use_bn
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == use_bn
    assert isinstance(model.maxpool, nn.MaxPool2d) == (stem == "imagenet")
    assert model.conv1.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))


def test_unknown_stem_is_rejected():
    with pytest.raises(ValueError, match="stem"):
        resnet18(stem="vit")

from models.resnet18_custom import BasicBlock, ResNet, load_torchvision_weights, resnet18

__all__ = ["BasicBlock", "ResNet", "resnet18", "load_torchvision_weights"]

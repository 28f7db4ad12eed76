from models.resnet18_custom import (BasicBlock, ResNet, feature_map_sizes, load_torchvision_weights,
                                    resnet18)

__all__ = ["BasicBlock", "ResNet", "resnet18", "feature_map_sizes", "load_torchvision_weights"]

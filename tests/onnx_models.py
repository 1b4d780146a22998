"""Small PyTorch CNNs in the shape of torchvision's VGG, ResNet and MobileNetV2 (random weights, randomised
BatchNorm statistics), exported to ONNX for the ONNX reader's parity tests."""

import torch
from torch import nn


class VGGish(nn.Module):
    """VGG's features / adaptive average pool / flatten (as ``x.view(x.size(0), -1)``) / classifier, with a
    ``ceil_mode`` max pool."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, ceil_mode=True))
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(nn.Linear(16 * 16, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.view(x.size(0), -1))  # Shape → Gather → Unsqueeze → Concat → Reshape


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride > 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + identity)


class ResNetish(nn.Module):
    """ResNet's stem (7×7 stride 2, padded max pool), basic blocks with BatchNorm, global pool, fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        h = cin * expand
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(True)),
            nn.Sequential(nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(True)),
            nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetish(nn.Module):
    """MobileNetV2's inverted residuals: depthwise 3×3 convolutions and ReLU6 (exported as Clip(0, 6))."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(True)),
            InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 16, 2, 3), InvertedResidual(16, 16, 1, 3))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


MODELS = {"vgg": VGGish, "resnet": ResNetish, "mobilenet": MobileNetish}


def randomise_batch_norm(model: nn.Module, gamma=(0.5, 1.5)) -> nn.Module:
    """Seeded BatchNorm statistics and affine weights away from the identity (``gamma``: the scale's range)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(*gamma)
                m.bias.uniform_(-0.2, 0.2)
    return model


def build(name: str, seed: int = 0) -> nn.Module:
    """The model in eval mode with seeded weights and BatchNorm statistics away from the identity."""
    torch.manual_seed(seed)
    return randomise_batch_norm(MODELS[name]().eval())


def export(model: nn.Module, path, size: int = 64, **kwargs) -> str:
    """``torch.onnx.export`` with the TorchScript exporter, a free batch size."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, **kwargs)
    return str(path)


class ConvNeXtish(nn.Module):
    """ConvNeXt's block (depthwise 7×7, channels-last LayerNorm and MLP with GELU, layer scale, residual), then a
    transposed convolution, global pool and classifier: LayerNormalization, Erf, MatMul on 4D values, Transpose
    pairs and ConvTranspose."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.dwconv = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8, eps=1e-6)
        self.pwconv1 = nn.Linear(8, 32)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        x = x + y.permute(0, 3, 1, 2)
        x = torch.relu(self.up(x))
        return self.head(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
        self.activation, self.scale_activation = nn.SiLU(), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class EfficientNetish(nn.Module):
    """EfficientNet's MBConv (SiLU, squeeze-and-excitation scaling a map by a [N, C, 1, 1] gate) and
    MobileNetV3's Hardswish/Hardsigmoid."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.expand = nn.Sequential(nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(24, 24, 5, 1, 2, groups=24, bias=False), nn.BatchNorm2d(24), nn.SiLU())
        self.se = SqueezeExcite(24, 6)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.Conv2d(8, 16, 1), nn.Hardswish())
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        return self.classifier(self.head(x).mean((2, 3)))


MODELS["convnext"] = ConvNeXtish
MODELS["efficientnet"] = EfficientNetish

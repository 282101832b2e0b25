"""TinyResNet: a stem, three stages of basic blocks (each halving the resolution after the
first) and a linear classifier; ``build`` is the factory a zoo names (``tinynets.resnet:build``)."""

from __future__ import annotations

from torch import Tensor, nn

from tinynets.blocks import BasicBlock, ConvBN


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int, width: int, blocks: int = 1) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width]
        self.stem = ConvBN(3, width, 3)
        stages, cin = [], width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(blocks)]))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initializer: He normal for convolutions, BatchNorm at identity, a small normal for
        the classifier (what `randomize` draws a fresh layer from)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.relu(self.stem(x))
        return self.fc(self.pool(self.stages(x)).flatten(1))


def build(num_classes: int = 10, width: int = 16, blocks: int = 1) -> TinyResNet:
    """An untrained TinyResNet with ``num_classes`` outputs and ``width`` channels in its first stage."""
    return TinyResNet(num_classes, width, blocks)

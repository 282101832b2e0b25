"""Training recipes, the PGD attack and the trainer of the demo zoo (tiny, fast runs)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from layercrit.data import ImageSet, to_model_input
from layercrit.models.training import (
    AUGMENTATIONS,
    CUTOUT_FRACTION,
    TrainingRecipe,
    evaluate_accuracy,
    pgd_attack,
    train_classifier,
)
from layercrit.models.training.augment import crop_flip as _crop_flip
from layercrit.models.training.augment import cutout as _cutout
from layercrit.synthetic import make_synthetic_images

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def _one_thread():
    # Bitwise determinism is only promised for a fixed thread count; one thread is also fastest here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def demo_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        "resnet50", pretrained=False, layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), stem_width=16, num_classes=10
    )


class TinyNet(nn.Module):
    """A small CNN that learns fast (the loss-decrease and schedule tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn1(self.conv1(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny_data() -> ImageSet:
    return make_synthetic_images(0, 64)


# --- recipe ----------------------------------------------------------------------------------


def test_from_config_round_trips() -> None:
    cfg = {
        "epochs": 3,
        "lr": 0.05,
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "augment": ["crop_flip", "mixup"],
        "adversarial_norm": "linf",
        "adversarial_epsilon": 4,
        "adversarial_steps": 1,
    }
    recipe = TrainingRecipe.from_config(cfg)
    assert recipe.augment == ("crop_flip", "mixup")
    assert recipe.attack_epsilon == pytest.approx(4 / 255)
    assert TrainingRecipe.from_config(recipe.to_dict()) == recipe
    assert TrainingRecipe.from_config({"adversarial_norm": "l2", "adversarial_epsilon": 0.5}).attack_epsilon == 0.5


def test_from_config_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]; allowed:.*'epochs'.*'freeze_backbone'"):
        TrainingRecipe.from_config({"epoch": 3})


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"schedule": "linear"}, r"'schedule': 'linear' is not allowed; allowed: \['step', 'cosine'\]"),
        ({"augment": ["crop_flip", "autoaugment"]}, r"'autoaugment' is not allowed; allowed: \['crop_flip', 'cutout', 'color_jitter', 'mixup'\]"),
        ({"augment": "cutmix"}, r"'cutmix' is not of type 'array'"),
        ({"adversarial_norm": "l1", "adversarial_epsilon": 1.0}, r"'norm': 'l1' is not allowed; allowed: \['linf', 'l2'\]"),
        ({"adversarial_epsilon": 4.0}, r"adversarial_norm and a positive adversarial_epsilon go together, got None and 4.0"),
        ({"adversarial_norm": "linf"}, r"go together, got 'linf' and 0"),
        ({"adversarial_norm": "linf", "adversarial_epsilon": 1, "adversarial_steps": 0}, r"adversarial_steps"),
        ({"epochs": 0}, r"epochs"),
        ({"epochs": 2, "warmup_epochs": 3}, r"warmup_epochs"),
        ({"lr": 0}, r"lr"),
        ({"label_smoothing": 1.0}, r"label_smoothing"),
        ({"augment": ["cutout", "cutout"]}, r"'augment': .*non-unique"),
        ({"freeze_backbone": "yes"}, r"freeze_backbone"),
        ({"batch_size": 1}, r"'batch_size': 1 is less than the minimum of 2"),
        ({"momentum": 1.0}, r"'momentum': 1.0 is greater than or equal to the maximum of 1"),
    ],
)
def test_from_config_rejects_bad_values(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingRecipe.from_config(cfg)


def test_from_config_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        TrainingRecipe.from_config(["epochs", 3])  # type: ignore[arg-type]


# --- attack ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_in_the_epsilon_ball(tiny_data: ImageSet, norm: str, epsilon: float) -> None:
    # TinyNet sees every pixel (the demo ResNet at init sees only a corner: residual branches
    # start at zero and its strided 1×1 shortcuts subsample), so every pixel gets a gradient.
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = tiny_data.images[:32].float() / 255
    y = tiny_data.labels[:32]
    x_adv = pgd_attack(
        model, x, y, norm=norm, epsilon=epsilon, steps=3, mean=MEAN, std=STD, generator=torch.Generator().manual_seed(0)
    )
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= epsilon + 1e-6
        # Not a no-op: the steps reach the border of the ball (the random start alone averages ε/2).
        assert delta.abs().max() >= epsilon - 1e-6
        assert (delta.abs() >= epsilon - 1e-6).float().mean() > 0.5
    else:
        assert (delta.norm(dim=1) <= epsilon * (1 + 1e-5)).all()
        assert delta.norm(dim=1).mean() > 0.5 * epsilon
    with torch.no_grad():
        clean = F.cross_entropy(model(to_model_input(tiny_data.images[:32], MEAN, STD)), y)
        attacked = F.cross_entropy(
            model((x_adv - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)), y
        )
    assert attacked > clean


def test_pgd_leaves_model_state_alone_and_is_seeded(tiny_data: ImageSet) -> None:
    model = demo_resnet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = tiny_data.images[:16].float() / 255
    y = tiny_data.labels[:16]

    def attack(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return pgd_attack(model, x, y, norm="linf", epsilon=2 / 255, steps=2, mean=MEAN, std=STD, generator=gen)

    a, b, c = attack(0), attack(0), attack(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for k, v in model.state_dict().items():  # BatchNorm running statistics included
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_pgd_rejects_unknown_norm(tiny_data: ImageSet) -> None:
    x = tiny_data.images[:2].float() / 255
    with pytest.raises(ValueError, match="allowed: linf, l2"):
        pgd_attack(TinyNet(), x, tiny_data.labels[:2], norm="l1", epsilon=0.1, steps=1, mean=None, std=None)


# --- augmentation --------------------------------------------------------------------------------


def test_crop_flip_shifts_and_flips() -> None:
    x = torch.rand(8, 3, 32, 32)
    out = _crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Each output is the input shifted by ≤ 4 px (zeros come in), possibly mirrored.
    for i in range(len(x)):
        found = False
        for img in (x[i], x[i].flip(2)):
            padded = F.pad(img, (4, 4, 4, 4))
            for dy in range(9):
                for dx in range(9):
                    if torch.equal(padded[:, dy : dy + 32, dx : dx + 32], out[i]):
                        found = True
        assert found


def test_cutout_fills_one_square() -> None:
    x = torch.ones(16, 3, 32, 32)
    out = _cutout(x, torch.Generator().manual_seed(0), torch.zeros(1, 3, 1, 1))
    holes = (out == 0).all(1)  # (B, H, W)
    side = round(CUTOUT_FRACTION * 32)
    assert holes.flatten(1).sum(1).max() == side * side  # a full square where it fits inside
    assert (holes.flatten(1).sum(1) > 0).all()


# --- training ------------------------------------------------------------------------------------


def _loss(model: nn.Module, data: ImageSet) -> float:
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(to_model_input(data.images, MEAN, STD)), data.labels).item()


def test_training_decreases_loss() -> None:
    data = make_synthetic_images(0, 256)
    torch.manual_seed(0)
    model = TinyNet()
    before = _loss(model, data)
    recipe = TrainingRecipe(epochs=6, batch_size=32, lr=0.05, warmup_epochs=0)
    history = train_classifier(model, data, recipe, mean=MEAN, std=STD, seed=0, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert _loss(model, data) < before - 0.05
    assert len(history["epoch"]) == len(history["lr"]) == len(history["seconds"]) == 6
    assert history["recipe"] == recipe.to_dict()
    assert 0 <= history["train_accuracy"][-1] <= 100
    assert not model.training


def test_training_is_deterministic(tiny_data: ImageSet) -> None:
    recipe = TrainingRecipe(
        epochs=1,
        batch_size=32,
        lr=0.05,
        warmup_epochs=0,
        augment=AUGMENTATIONS,
        adversarial_norm="linf",
        adversarial_epsilon=2,
        adversarial_steps=1,
    )

    def run(seed: int) -> tuple[dict, dict]:
        model = demo_resnet()
        history = train_classifier(model, tiny_data, recipe, mean=MEAN, std=STD, seed=seed, progress=False)
        return model.state_dict(), history

    (a, ha), (b, hb), (c, _) = run(0), run(0), run(1)
    assert ha["loss"] == hb["loss"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_leaves_global_rng_and_layout_alone(tiny_data: ImageSet) -> None:
    model = TinyNet()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(
        model, tiny_data, TrainingRecipe(epochs=1, batch_size=32), mean=MEAN, std=STD, seed=0, progress=False
    )
    assert torch.equal(torch.rand(3), expected)
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last undone: safetensors-ready


def test_freeze_backbone_changes_only_fc(tiny_data: ImageSet) -> None:
    model = demo_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = TrainingRecipe(epochs=2, batch_size=32, lr=0.1, augment=("crop_flip",), freeze_backbone=True)
    train_classifier(model, tiny_data, recipe, mean=MEAN, std=STD, seed=0, progress=False)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    # BatchNorm stays in eval mode, so even its running statistics keep their initial values.
    assert changed == {"fc.weight", "fc.bias"}
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_step_schedule_and_warmup() -> None:
    data = make_synthetic_images(0, 32)
    recipe = TrainingRecipe(epochs=4, batch_size=32, lr=0.1, warmup_epochs=0, schedule="step")
    history = train_classifier(TinyNet(), data, recipe, mean=MEAN, std=STD, seed=0, progress=False)
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.001])

    data = make_synthetic_images(0, 64)  # 8 iterations per epoch at batch 8
    recipe = TrainingRecipe(epochs=4, batch_size=8, lr=0.1, warmup_epochs=1, schedule="cosine")
    history = train_classifier(TinyNet(), data, recipe, mean=MEAN, std=STD, seed=0, progress=False)
    lr = history["lr"]
    assert lr[0] == pytest.approx(0.1 * sum(range(1, 9)) / 8 / 8)  # linear warm-up: mean of 1/8 … 8/8
    assert lr[1] > lr[2] > lr[3] > 0
    assert lr[1] < 0.1 and math.isclose(lr[1], 0.1, rel_tol=0.2)


def test_evaluate_accuracy(tiny_data: ImageSet) -> None:
    model = TinyNet().train()
    acc = evaluate_accuracy(model, tiny_data, mean=MEAN, std=STD, batch_size=10)
    assert 0 <= acc <= 100
    assert model.training  # mode restored
    with torch.no_grad():
        model.eval()
        expected = (model(to_model_input(tiny_data.images, MEAN, STD)).argmax(1) == tiny_data.labels).float().mean()
    assert acc == pytest.approx(100 * expected.item())

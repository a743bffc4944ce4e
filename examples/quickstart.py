"""advkit in one file: train, attack, measure, prune, adversarially fine-tune, measure again.

Runs in under a minute on two CPU cores, on the SYNTHETIC demo data (shapes, not photos):

    python examples/quickstart.py

The study script, examples/animals10_study.py, does the same on the real data set and more.
"""

import torch
from torch.utils.data import DataLoader

import advkit
from advkit.data import SyntheticAnimals10
from advkit.evaluation import robust_accuracy

torch.manual_seed(0)

# 1. Data: images in [0, 1], never normalized by hand (the model does it, see 2.).
train = SyntheticAnimals10("train", image_size=32, num_images=2000, progress=False)
test = SyntheticAnimals10("val", image_size=32, num_images=2000, progress=False)
print(train.description)
shuffle = torch.Generator().manual_seed(0)
train_loader = DataLoader(train, batch_size=50, shuffle=True, generator=shuffle)
test_loader = DataLoader(test, batch_size=100)

# 2. A model that takes pixels: ResNet-18 with the ImageNet normalization as its first layer,
#    so eps below is measured in pixels. (weights="imagenet" loads the pretrained backbone.)
model = advkit.resnet18(num_classes=10)
print("first layer:", model.normalize)


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


# 3. Plain training for a few epochs: a weak but real classifier (seconds, not a study).
advkit.Trainer(model, adam, device="cpu", progress=False).fit(train_loader, epochs=5)

# 4. Attack one batch: PGD with eps 2/255 (pixel space), 10 steps, from a random start.
images, labels = next(iter(test_loader))
pgd = advkit.PGD(eps=2 / 255, steps=10)
adversarial = pgd(model, images, labels)  # same shape and dtype, detached; model untouched
with torch.no_grad():
    clean_hits = (model(images).argmax(1) == labels).sum().item()
    adv_hits = (model(adversarial).argmax(1) == labels).sum().item()
print(f"PGD on one batch: max |x_adv - x| = {(adversarial - images).abs().max() * 255:.2f}/255, "
      f"correct {clean_hits} -> {adv_hits} of {len(labels)}")  # fmt: skip

# 5. Robust accuracy on the test set, with 95% Wilson intervals and sanity checks.
attack = advkit.IFGSM(eps=2 / 255, steps=5)


def evaluate(name, net):
    result = robust_accuracy(net, test_loader, attack, progress=False)
    print(f"{name:<28} clean {result.clean.format()}%  robust {result.robust.format()}%  "
          f"params {advkit.count_parameters(net):,}  checks passed: {result.passed}")  # fmt: skip


evaluate("trained", model)

# 6. Prune: physically remove 40% of the filters of layer4's first convolutions (L1 norm).
pruner = advkit.Pruner(ratio=0.4, targets="backbone.layer4.*.conv1")
plan = pruner.plan(model, images[:1])
pruned = pruner.apply(model, plan)  # a smaller copy; model is unchanged
evaluate("pruned 40% of layer4.conv1", pruned)

# 7. Adversarial fine-tuning, one epoch: loss = 0.5 * clean + 0.5 * I-FGSM(eps 2/255, 3 steps).
trainer = advkit.Trainer(
    pruned, adam, attack=advkit.IFGSM(eps=2 / 255, steps=3), adv_weight=0.5, device="cpu",
    progress=False,
)  # fmt: skip
history = trainer.fit(train_loader, epochs=1)
print(f"adversarial fine-tuning: train loss {history.last['train_loss']:.3f}")
evaluate("pruned + adversarial epoch", pruned)

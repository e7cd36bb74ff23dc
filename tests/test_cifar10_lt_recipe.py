"""The CIFAR-10-LT configs are the field's standard recipe (issue 12), as benchmarks/cifar10_lt/run.sh trains them.

The truth is the published recipe written out by hand (LDAM-DRW, Cao et al. 2019, whose schedule the logit
adjustment and VS papers reuse): ResNet-32, 200 epochs, batch 128, SGD lr 0.1 momentum 0.9 weight decay 2e-4 on
every parameter, 5 linear warm-up epochs, lr x0.01 from epoch 160 and x0.0001 from epoch 180 (0-based epochs of
the reference code's ``epoch > 160`` on 1-based ones), DRW from epoch 160 with effective-number weights
(beta 0.9999), random crop (padding 4) + flip, no class weights for VS; validation from CIFAR-10's test set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lossdial.config import load_config
from lossdial.train.factory import lr_factor

ROOT = Path(__file__).resolve().parents[1]
# the overrides benchmarks/cifar10_lt/run.sh gives LDAM-DRW and the logit-adjusted loss (DRW at 200 * 8 / 10)
LDAM_DRW = ["loss.family=ldam", "lct.enabled=false", "loss.params={scale: 30.0, drw_epoch: 160, drw_beta: 0.9999}"]
LA = ["loss.family=logit_adjust", "loss.params={}", "lct.enabled=false"]
STEPS = 97  # steps per epoch: ceil(12406 / 128) at ratio 100; the boundaries below hold for any count


@pytest.mark.parametrize("name,beta", [("cifar10_lt_exp100.yaml", 100), ("cifar10_lt_exp10.yaml", 10)])
def test_cifar10_lt_config_is_the_standard_recipe(name, beta):
    cfg = load_config(ROOT / "configs" / name)
    d = cfg.data
    assert (d.source, d.task, d.profile, d.beta, d.val_from, d.classes) == \
        ("cifar10_jpeg", "multiclass", "exp", beta, "test", None)
    assert cfg.model.backbone == "resnet32" and cfg.model.head == "linear"
    assert cfg.loss.family == "vs" and cfg.loss.params["class_weights"] == "none"
    assert cfg.lct.enabled and not cfg.lct.per_sample  # LCT: lambda drawn per batch
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, o.decay_norm_and_bias) == \
        ("sgd", 0.1, 0.9, False, 2e-4, True)
    t = cfg.train
    assert (t.epochs, t.batch_size, t.grad_clip, t.augment, t.crop_padding, t.drop_last) == \
        (200, 128, None, "crop_flip", 4, False)

    total = t.epochs * STEPS

    def lr(epoch, step=0):  # lr at the step-th step of 0-based epoch `epoch`
        return o.lr * lr_factor(epoch * STEPS + step, total, STEPS, cfg)

    assert lr(0) == pytest.approx(0.1 / (5 * STEPS))  # linear warm-up over 5 epochs
    assert lr(2, 0) == pytest.approx(0.1 * (2 * STEPS + 1) / (5 * STEPS))
    assert lr(4, STEPS - 1) == pytest.approx(0.1) and lr(5) == pytest.approx(0.1)
    assert lr(159, STEPS - 1) == pytest.approx(0.1)
    assert lr(160) == pytest.approx(1e-3) and lr(179, STEPS - 1) == pytest.approx(1e-3)
    assert lr(180) == pytest.approx(1e-5) and lr(199, STEPS - 1) == pytest.approx(1e-5)

    ldam = load_config(ROOT / "configs" / name, LDAM_DRW)
    assert ldam.model.head == "cosine"  # LDAM's normalised classifier, which s = 30 is meant for
    assert ldam.loss.params == {"scale": 30.0, "drw_epoch": 160, "drw_beta": 0.9999}
    # DRW starts where the lr first drops, as in the reference code
    assert ldam.schedule.milestones[0] * ldam.train.epochs == ldam.loss.params["drw_epoch"]
    la = load_config(ROOT / "configs" / name, LA)
    assert la.model.head == "linear" and la.loss.family == "logit_adjust"

import numpy as np
import torch

from deepens.augment import Augmentation
from deepens.models import build_model
from deepens.training import (
    batch_slices,
    cosine_schedule,
    cross_entropy,
    make_optimizer,
    train_epoch,
)

CONFIG = {
    "block_type": "v1",
    "activation": "relu",
    "stem_filters": 4,
    "filter_multiplier": 4,
    "blocks_stage1": 1,
    "blocks_stage2": 0,
    "blocks_stage3": 0,
    "blocks_stage4": 0,
    "learning_rate": 0.01,
    "l2": 0.0,
    "zoom": 0.1,
    "translation": 0.1,
    "shear": 0.1,
    "rotation": 10.0,
    "channel_shift": 0.1,
}


def test_batches_cover_every_sample_once_and_never_leave_a_single_one():
    batches = batch_slices(17, 8, torch.Generator().manual_seed(0))

    assert [len(b) for b in batches] == [8, 9]
    assert sorted(torch.cat(batches).tolist()) == list(range(17))


def test_training_with_a_trailing_single_sample_and_batch_norm_does_not_crash():
    images = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(9) % 2
    model = build_model(CONFIG, 1, 2, 8)

    loss = train_epoch(
        model,
        make_optimizer(model, CONFIG),
        Augmentation(CONFIG),
        images,
        labels,
        batch_size=4,
        device="cpu",
        generator=torch.Generator().manual_seed(0),
    )

    assert np.isfinite(loss)


def test_training_lowers_the_loss_on_a_learnable_problem():
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    labels = torch.arange(64) % 2
    images[labels == 1] = 255  # class 1 is white, class 0 black
    config = {
        **CONFIG,
        "zoom": 0,
        "translation": 0,
        "shear": 0,
        "rotation": 0,
        "channel_shift": 0,
    }
    model = build_model(config, 1, 2, 8)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)

    losses = [
        train_epoch(
            model,
            optimizer,
            Augmentation(config),
            images,
            labels,
            batch_size=16,
            device="cpu",
            generator=generator,
        )
        for _ in range(5)
    ]

    assert losses[-1] < losses[0] / 2


def test_augmentation_keeps_shape_and_range_and_identity_when_zero():
    images = torch.rand(5, 3, 12, 12)

    augmented = Augmentation(CONFIG)(images)
    untouched = Augmentation({})(images)

    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert not torch.equal(augmented, images)
    assert Augmentation({}).is_identity and torch.equal(untouched, images)


def test_cross_entropy_by_hand_and_not_finite():
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5]])

    assert cross_entropy(probabilities, np.array([1, 0])) == -np.mean(
        np.log([0.75, 0.5])
    )
    assert cross_entropy(probabilities * np.nan, np.array([1, 0])) == np.inf


def test_cosine_schedule_decays_from_the_base_rate_to_zero():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = cosine_schedule(optimizer, total_steps=4)
    rates = []

    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rates.append(optimizer.param_groups[0]["lr"])

    # 0.5 * (1 + cos(pi * k / 4)) for k = 0..4
    expected = [0.01, 0.01 * 0.8535534, 0.005, 0.01 * 0.1464466, 0.0]
    np.testing.assert_allclose(rates, expected, atol=1e-9)

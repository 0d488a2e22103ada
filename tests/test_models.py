import pytest
import torch

from deepens.errors import SpaceError
from deepens.models import (
    GroupedBottleneckBlock,
    PostActivationBlock,
    PreActivationBlock,
    build_model,
    count_flops,
    count_parameters,
)


def _config(**overrides):
    config = {
        "block_type": "v1",
        "activation": "relu",
        "stem_filters": 8,
        "filter_multiplier": 8,
        "blocks_stage1": 1,
        "blocks_stage2": 1,
        "blocks_stage3": 1,
        "blocks_stage4": 1,
    }
    config.update(overrides)
    return config


@pytest.mark.parametrize(
    ("block_type", "block_class"),
    [
        ("v1", PostActivationBlock),
        ("v2", PreActivationBlock),
        ("next", GroupedBottleneckBlock),
    ],
)
@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
def test_every_block_type_and_activation_trains(block_type, block_class, activation):
    model = build_model(
        _config(block_type=block_type, activation=activation, cardinality=4),
        in_channels=3,
        num_classes=5,
        image_size=16,
    )
    images = torch.rand(4, 3, 16, 16)

    logits = model(images)
    logits.sum().backward()

    assert logits.shape == (4, 5)
    blocks = [m for m in model.modules() if isinstance(m, block_class)]
    assert len(blocks) == 4
    activations = {type(m).__name__ for m in model.modules()}
    assert {"relu": "ReLU", "tanh": "Tanh", "elu": "ELU"}[activation] in activations


def test_stage_widths_double_and_blocks_per_stage_follow_config():
    model = build_model(
        _config(
            filter_multiplier=6,
            blocks_stage1=3,
            blocks_stage2=2,
            blocks_stage3=1,
            blocks_stage4=0,
        ),
        in_channels=1,
        num_classes=10,
        image_size=28,
    )

    blocks = list(model.stages)

    assert len(blocks) == 6
    assert model.classifier.in_features == 6 * 4  # last non-empty stage is the third


def test_small_images_get_a_3x3_stride_1_stem_and_large_a_7x7_stride_2():
    small = build_model(_config(), 3, 10, image_size=32)
    large = build_model(_config(), 3, 10, image_size=128)

    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert large.stem[0].kernel_size == (7, 7) and large.stem[0].stride == (2, 2)
    assert large(torch.rand(2, 3, 128, 128)).shape == (2, 10)


def test_grouped_convolution_uses_the_cardinality():
    model = build_model(_config(block_type="next", cardinality=3), 1, 10, 16)

    groups = {m.groups for m in model.modules() if isinstance(m, torch.nn.Conv2d)}

    assert 3 in groups


def test_parameter_and_flop_counts_grow_with_width_and_are_deterministic():
    narrow = build_model(_config(filter_multiplier=8), 1, 10, 28)
    wide = build_model(_config(filter_multiplier=16), 1, 10, 28)

    assert count_parameters(wide) > count_parameters(narrow)
    assert count_flops(wide, 1, (28, 28)) > count_flops(narrow, 1, (28, 28))
    assert count_flops(narrow, 1, (28, 28)) == count_flops(narrow, 1, (28, 28))


def test_first_linear_layer_flops_are_exact():
    # A network is dominated by convolutions, but the classifier's share is known:
    # 2 * in_features * classes multiply-adds per image.
    model = build_model(
        _config(blocks_stage2=0, blocks_stage3=0, blocks_stage4=0), 1, 10, 4
    )
    conv_only = build_model(
        _config(blocks_stage2=0, blocks_stage3=0, blocks_stage4=0), 1, 20, 4
    )

    difference = count_flops(conv_only, 1, (4, 4)) - count_flops(model, 1, (4, 4))

    assert difference == 2 * 8 * 10


def test_unknown_block_type_is_a_space_error():
    with pytest.raises(SpaceError, match="block_type 'v3'"):
        build_model(_config(block_type="v3"), 1, 10, 8)

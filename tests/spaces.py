"""Search spaces for tests: the small preset with tiny networks."""

from deepens.space import SearchSpace

TINY_NETWORK = dict(
    stem_filters=4,
    filter_multiplier=4,
    blocks_stage1=1,
    blocks_stage2=0,
    blocks_stage3=0,
    blocks_stage4=0,
)


def tiny_space(**parameters):
    """The small preset with tiny networks (a trial trains in about a second).

    ``parameters`` replace domains, in the JSON form of a space file.
    """
    document = SearchSpace.load("small").to_dict()
    document["parameters"].update({**TINY_NETWORK, **parameters})
    return SearchSpace.from_dict(document)

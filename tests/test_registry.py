import pytest
import torch

import dalip
from dalip.pooling import POOLERS, Pooler
from dalip.registry import Registry, UnknownComponentError


def test_list_poolers_has_the_five_families_and_presets():
    assert set(dalip.list_poolers()) >= {"cls", "mean", "cov", "isqrt_cov", "bdc", "mbdc", "mbdc_paper"}
    assert dalip.list_poolers() == sorted(dalip.list_poolers())


@pytest.mark.parametrize(
    "pattern, expected",
    [("*cov*", ["cov", "isqrt_cov"]), ("mbdc*", ["mbdc", "mbdc_paper"]), ("?ean", ["mean"]), ("nothing*", [])],
)
def test_list_poolers_wildcards(pattern, expected):
    assert dalip.list_poolers(pattern) == expected


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownComponentError) as err:
        dalip.create_pooler("mbcd", dim=8)
    message = str(err.value)
    assert "'mbcd'" in message and "Did you mean" in message
    for name in dalip.list_poolers():
        assert name in message
    assert isinstance(err.value, ValueError)


def test_bad_keyword_names_the_argument():
    with pytest.raises(TypeError, match="heeds") as err:
        dalip.create_pooler("mbdc", dim=8, heeds=2)
    assert "heads" in str(err.value)  # lists the valid ones


def test_missing_dim_is_a_clear_error():
    with pytest.raises(TypeError, match="dim"):
        POOLERS.create("mean")


def test_presets_fill_defaults_and_can_be_overridden():
    iso = dalip.create_pooler("isqrt_cov", dim=16, reduced_dim=4)
    assert iso.isqrt and not dalip.create_pooler("cov", dim=16).isqrt
    assert not dalip.create_pooler("isqrt_cov", dim=16, isqrt=False).isqrt
    paper = dalip.create_pooler("mbdc_paper", dim=64, heads=2)
    assert paper.heads == 2 and paper.reduced_dim == 46
    assert POOLERS.get("mbdc_paper").signature.parameters["reduced_dim"].default == 46


def test_register_custom_pooler_and_duplicate_guard():
    registry: Registry[Pooler] = Registry("widget")

    @registry.register("max")
    class MaxPool(Pooler):
        """Channel-wise max."""

        def pool(self, tokens, mask, guide):
            return tokens.amax(1)

    assert registry.list() == ["max"] and "max" in registry and len(registry) == 1
    assert registry.get("max").description == "Channel-wise max."
    out = registry.create("max", dim=4)(torch.ones(2, 3, 4))
    assert out.shape == (2, 4)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("max")(MaxPool)
    with pytest.raises(TypeError, match="unknown arguments"):
        registry.register("max2", defaults={"nope": 1})(MaxPool)


def test_public_register_pooler_adds_to_global_registry():
    @dalip.register_pooler("test_first_token")
    class FirstToken(Pooler):
        """The first token."""

        def pool(self, tokens, mask, guide):
            return tokens[:, 0]

    try:
        assert "test_first_token" in dalip.list_poolers("test_*")
        assert dalip.create_pooler("test_first_token", dim=3)(torch.ones(1, 2, 3)).shape == (1, 3)
    finally:
        POOLERS._entries.pop("test_first_token")


# ---------------------------------------------------------------- models, datasets, few-shot methods: one Registry
def test_every_component_table_is_a_registry_with_one_error_type():
    from dalip.adapt import METHODS, default_methods
    from dalip.data import DATASETS
    from dalip.losses import LOSSES
    from dalip.models import MODEL_CONFIGS, NamedModel

    for table in (POOLERS, LOSSES, DATASETS, MODEL_CONFIGS, METHODS):
        assert isinstance(table, Registry)
        with pytest.raises(UnknownComponentError, match="Known"):
            table.get("no-such-thing")
    assert MODEL_CONFIGS.list() == ["effl0-minilm"] and isinstance(MODEL_CONFIGS.create("effl0-minilm"), NamedModel)
    assert list(default_methods(5, ablations=False)) == ["zero-shot", "linear-probe", "tip-adapter", "tip-adapter-f", "dac"]
    assert set(default_methods(5)) == set(METHODS.list())
    assert METHODS.create("tip-adapter-f", steps=7).name == "tip-adapter-f"


def test_unknown_model_is_an_unknown_component():
    with pytest.raises(UnknownComponentError, match="unknown model 'no-such-model'.*effl0-minilm"):
        dalip.create_model("no-such-model")

"""Configs: YAML + overrides, validation with clear errors, composition."""

import pytest

from dalip.errors import ConfigError
from dalip.runs.config import config_to_dict, list_configs, load_config, parse_overrides


def test_quickstart_ships_and_loads():
    assert "quickstart" in list_configs()
    config = load_config("quickstart")
    assert config.model.name == "effl0-minilm" and config.model.second_order == "mbdc"
    assert config.loss.name == "distribution"


def test_overrides_are_parsed_as_yaml():
    config = load_config("quickstart", ["optim.lr=3e-4", "model.second_order=null", "loss.name=clip",
                                        "model.second_options={heads: 2}",
                                        "run.seed=7", "optim.grad_clip=null"])
    assert config.optim.lr == 3e-4 and config.model.second_order is None and config.run.seed == 7
    assert config.model.second_options == {"heads": 2}  # replaced, not merged
    assert config.optim.grad_clip is None
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'. Did you mean 'lr'"),
        ("optim.steps=ten", "'optim.steps' expects int, got str"),
        ("model.alpha=2", "alpha must be in"),
        ("model.alpha_learnable=true & model.alpha=1", "strictly inside"),
        ("model.alpha_learnable=true & model.second_order=null", "alpha_learnable needs second-order heads"),
        ("model.alpha_learnable=true & loss.name=clip", "trained by the 'distribution' loss"),
        ("model.alpha_learnable=true & loss.options={alpha: 0.5}", "remove loss.options.alpha"),
        ("eval.fusion=[0, 2]", r"eval.fusion: fusion weights must be numbers in \[0, 1\]"),
        ("eval.fusion=[0.5] & model.second_order=null & loss.name=clip", "fusion curves need second-order heads"),
        ("model.second_order=mdbc", "unknown pooler 'mdbc'; known: bdc, cls"),
        ("loss.name=clipp", "unknown loss 'clipp'"),
        ("model.name=ViT-Z", "unknown model 'ViT-Z'"),
        ("run.precision=fp8", "precision must be"),
        ("noequals", "not of the form"),
        ("optim=3", "optim must be a mapping"),
    ],
)
def test_bad_configs_name_the_problem(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart", override.split(" & "))  # "a & b": two overrides


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listy)


def test_configs_compose_from_a_base(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: quickstart\nmodel:\n  second_order: cov\n  second_options: {reduced_dim: 8}\n")
    config = load_config(child)
    assert config.model.second_order == "cov" and config.model.name == "effl0-minilm"
    assert config.optim.steps == load_config("quickstart").optim.steps


def test_resolved_config_round_trips(tmp_path):
    from dalip.runs.config import config_from_dict, save_config

    config = load_config("quickstart", ["optim.steps=5"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(config)
    assert config_to_dict(config_from_dict(config_to_dict(config))) == config_to_dict(config)


# ------------------------------------------------ validated up front (issue 14, items 1, 5, 8)
@pytest.mark.parametrize("override, message", [
    ("optim.lr=.nan", "optim.lr must be a finite number >= 0"),
    ("optim.lr=-1e-4", "optim.lr must be a finite number >= 0"),
    ("optim.head_lr=.inf", "optim.head_lr"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.eps=-1", "optim.eps"),
    ("optim.betas=[0.9, 1.0]", "optim.betas must be two numbers in"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.grad_clip=-1", "optim.grad_clip"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("data.spec.image_size=0", "data.spec: image_size must be a positive integer"),
    ("data.spec.no_such_option=1", "data.spec:.*no_such_option"),
    ("eval.embeddings=[fourth]", "eval.embeddings: unknown"),
    ("loss.options={temperature: 2}", "loss.options: .*temperature.*Valid arguments"),
    ("model.second_options={heads: 2, size: 3}", "model.second_options: pooler 'mbdc' .* does not take size"),
])
def test_bad_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", [override])


def test_second_order_embeddings_need_a_second_order_head():
    with pytest.raises(ConfigError, match="eval.embeddings: combined need a second-order head"):
        load_config("quickstart", ["model.second_order=null", "loss.name=clip", "eval.embeddings=[first, combined]"])
    assert load_config("quickstart", ["model.second_order=null", "loss.name=clip",
                                      "eval.embeddings=[first]"]).eval.embeddings == ["first"]


def test_changing_the_pooler_names_the_options_it_does_not_take():
    """quickstart's {heads, reduced_dim} belong to mbdc: isqrt_cov is refused before any model is built,
    with the fix; its own options (or {}) work."""
    with pytest.raises(ConfigError, match=r"'isqrt_cov' .* does not take heads .*model.second_options=\{\}"):
        load_config("quickstart", ["model.first_order=mean", "model.second_order=isqrt_cov"])
    config = load_config("quickstart", ["model.second_order=isqrt_cov", "model.second_options={reduced_dim: 16}"])
    assert config.model.second_options == {"reduced_dim": 16}
    assert load_config("quickstart", ["model.second_order=cov", "model.second_options={}"]).model.second_options == {}


def test_base_cycle_is_a_config_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\noptim: {steps: 3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"'base:' cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")


def test_non_utf8_and_duplicate_keys_are_config_errors(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("optim: {steps: 3}  # r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8"):
        load_config(latin)
    twice = tmp_path / "twice.yaml"
    twice.write_text("optim: {steps: 3}\noptim: {lr: 1.0e-3}\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: .*duplicate key 'optim'"):
        load_config(twice)

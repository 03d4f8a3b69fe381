"""Configs: YAML + overrides, validation with clear errors, composition."""

import pytest

from dalip.train.config import ConfigError, config_to_dict, list_configs, load_config, parse_overrides


def test_quickstart_ships_and_loads():
    assert "quickstart" in list_configs()
    config = load_config("quickstart")
    assert config.model.name == "effl0-minilm" and config.model.second_order == "mbdc"
    assert config.loss.name == "distribution"


def test_overrides_are_parsed_as_yaml():
    config = load_config("quickstart", ["optim.lr=3e-4", "model.second_order=null", "model.second_options={heads: 2}",
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
        load_config("quickstart", [override])


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
    child.write_text("base: quickstart\nmodel:\n  second_order: cov\n")
    config = load_config(child)
    assert config.model.second_order == "cov" and config.model.name == "effl0-minilm"
    assert config.optim.steps == load_config("quickstart").optim.steps


def test_resolved_config_round_trips(tmp_path):
    from dalip.train.config import config_from_dict, save_config

    config = load_config("quickstart", ["optim.steps=5"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == config_to_dict(config)
    assert config_to_dict(config_from_dict(config_to_dict(config))) == config_to_dict(config)

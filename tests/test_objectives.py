"""The objective registry and the config's `objective` key: selection by name or by the older `mixmo.enabled`
spelling, saved run configs that load again, clear errors, and the two objectives' interface."""
import os

import pytest
import torch
import yaml

from pretrain.engine.config import load_config
from pretrain.objectives import Objective, available_objectives, build_objective, objective_class, register

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = os.path.join(ROOT, "configs", "pretrain", "synthetic_cutmix.yaml")
MIXMO = os.path.join(ROOT, "configs", "mixmo", "synthetic_cut_mixmo.yaml")


def test_objective_is_chosen_by_name_or_by_the_enabled_section():
    assert {"classification", "mixmo"} <= set(available_objectives())
    assert load_config(VIT)["objective"] == "classification"
    cfg = load_config(MIXMO)  # mixmo.enabled: true, no objective key
    assert cfg["objective"] == "mixmo" and cfg["mixmo"]["enabled"]
    cfg = load_config(VIT, ["objective=mixmo", "model.arch=wrn", "mixer.name=none"])
    assert cfg["objective"] == "mixmo" and cfg["mixmo"]["enabled"]  # the section's switch follows the key


def test_saved_run_configs_load_again(tmp_path):
    for path in (VIT, MIXMO):
        cfg = load_config(path)
        saved = tmp_path / "config.yaml"
        saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert load_config(str(saved)) == cfg
        del cfg["objective"]  # a run saved before the key existed
        saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert load_config(str(saved))["objective"] == load_config(path)["objective"]


def test_objective_errors_are_clear():
    with pytest.raises(ValueError, match="objective must be one of .*got 'foo'"):
        load_config(VIT, ["objective=foo"])
    with pytest.raises(ValueError, match="objective: classification contradicts mixmo.enabled=true"):
        load_config(MIXMO, ["objective=classification"])
    with pytest.raises(ValueError, match="model.arch must be vit for the classification objective"):
        load_config(VIT, ["model.arch=resnet"])
    with pytest.raises(KeyError, match="unknown config key 'mixmo.foo'"):
        load_config(VIT, ["mixmo.foo=1"])


def test_both_objectives_implement_the_interface():
    for path, fmt, details in ((VIT, "vitmix-vit", 0), (MIXMO, "vitmix-mixmo", 2)):
        cfg = load_config(path, ["model.kwargs.depth=1"] if path == VIT else ["model.kwargs.depth=10"])
        cls = objective_class(cfg["objective"])
        assert issubclass(cls, Objective) and cls.weights_format == fmt
        for name in ("from_config", "build_model", "forward_loss", "evaluate", "eval_record", "arch"):
            assert name in vars(cls), (cls.name, name)  # defined by the objective, not the base's stub
        torch.manual_seed(0)
        objective = build_objective(cfg, seed=0)
        model = objective.build_model()
        objective.bind(model, total_steps=10)
        assert objective.num_details == details
        size = int(cfg["data"]["img_size"])
        images, labels = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3])
        loss, extra = objective.forward_loss(model, images, labels, step=0)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert (extra is None) if details == 0 else (tuple(extra.shape) == (details,))
        state = objective.state_dict()
        objective.load_state_dict(state)
        assert objective.arch(model) and objective.label()
        objective.close()


def test_register_adds_an_objective(monkeypatch):
    from pretrain.objectives import registry

    class Dummy(Objective):
        name = "dummy_for_test"

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real one as it was
    register("dummy_for_test", Dummy)
    assert objective_class("dummy_for_test") is Dummy
    with pytest.raises(ValueError, match="unknown objective 'nope'"):
        objective_class("nope")

import os
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from kdvision.core.checkpoint import check_state_dict, extract_state_dict, load_weights, read_checkpoint, save_atomic
from kdvision.core.errors import CheckpointError, ConfigError
from kdvision.core.registry import Registry


def test_registry_aliases_and_errors():
    reg = Registry("thing")
    reg.add("alpha", lambda x=1: ("alpha", x), aliases=("a",), family="greek")
    reg.add("beta", lambda: "beta")
    assert reg.create("a", x=3) == ("alpha", 3)
    assert reg.resolve("a") == "alpha" and reg.meta("a") == {"family": "greek"}
    assert reg.names() == ["alpha", "beta"] and reg.names(include_aliases=True) == ["a", "alpha", "beta"]
    with pytest.raises(ConfigError) as err:
        reg.get("alpah")
    msg = str(err.value)
    assert "unknown thing 'alpah'" in msg and "did you mean alpha" in msg and "valid: a, alpha, beta" in msg
    with pytest.raises(ValueError):
        reg.add("a", lambda: None)


class Tiny(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 2)


@pytest.mark.parametrize("container", ["raw", "state_dict", "model", "s_state_dict", "student"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_containers_and_module_prefix(tmp_path, container, prefix):
    src = Tiny()
    sd = OrderedDict((prefix + k, v) for k, v in src.state_dict().items())
    obj = sd if container == "raw" else {container: sd, "epoch": 3, "best_acc1": 91.2}
    torch.save(obj, tmp_path / "ck.pt")
    dst = load_weights(Tiny(), tmp_path / "ck.pt")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_strict_mismatch_error_names_keys(tmp_path):
    sd = Tiny(width=4).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc.bias"]
    torch.save(sd, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(Tiny(width=8), tmp_path / "ck.pt")
    msg = str(err.value)
    assert "missing 1: fc.bias" in msg
    assert "unexpected 1: extra.weight" in msg
    assert "shape mismatch" in msg and "conv.weight (4, 1, 3, 3) vs (8, 1, 3, 3)" in msg
    assert "\n" not in msg
    # non-strict loads what fits
    assert check_state_dict(Tiny(width=4), sd) == ["missing 1: fc.bias", "unexpected 1: extra.weight"]


def test_missing_and_unsafe_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "nope.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")
    torch.save({"epoch": 1, "note": "x"}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        extract_state_dict(read_checkpoint(tmp_path / "empty.pt"))


class Pickled:  # a class instance in a checkpoint: code the loader must refuse to import
    def __init__(self):
        self.x = 1


def pickled_function():
    return 1


def _write_checkpoint_cases(tmp_path):
    (tmp_path / "notes.txt").write_text("these are my notes\nnot a checkpoint\n")
    torch.save({"state_dict": Tiny().state_dict(), "extra": Pickled()}, tmp_path / "instance.pt")
    torch.save({"state_dict": Tiny().state_dict(), "hook": pickled_function}, tmp_path / "function.pt")
    torch.save(Tiny(), tmp_path / "module.pt")  # a whole pickled model (its class is code too)
    torch.save(Tiny().state_dict(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(Tiny().state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    (tmp_path / "truncated_legacy.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(bytes(range(1, 256)) * 4)


@pytest.mark.parametrize("name, expected", [
    ("notes.txt", "a text file, not a PyTorch checkpoint"),
    ("instance.pt", f"contains pickled code objects ({__name__}.Pickled; refused: only tensors and plain "
                    "containers are loaded)"),
    ("function.pt", f"contains pickled code objects ({__name__}.pickled_function; refused: only tensors and "
                    "plain containers are loaded)"),
    ("module.pt", f"contains pickled code objects ({__name__}.Tiny; refused"),
    ("truncated.pt", "truncated or corrupt"),
    ("truncated_legacy.pt", "truncated or corrupt"),
    ("zero.pt", "empty file (0 bytes), not a PyTorch checkpoint"),
    ("random.pt", "unknown format (neither a zip archive nor a pickle), not a PyTorch checkpoint"),
])
def test_unreadable_checkpoints_say_what_the_file_is(tmp_path, name, expected):
    _write_checkpoint_cases(tmp_path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / name)
    msg = str(err.value)
    assert msg.startswith(f"cannot read checkpoint {tmp_path / name}: {expected}"), msg
    assert "\n" not in msg
    assert "weights_only" not in msg and "trust" not in msg.lower() and "safe_globals" not in msg
    # nothing of PyTorch's advice travels along in the exception chain either (seen with --debug)
    assert err.value.__cause__ is None and err.value.__context__ is None
    # the good files still load
    assert set(read_checkpoint(tmp_path / "good.pt")) == set(Tiny().state_dict())
    assert set(read_checkpoint(tmp_path / "legacy.pt")) == set(Tiny().state_dict())


def test_plain_pickles_are_not_checkpoints_and_their_code_is_named(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    for protocol in (2, 4):
        with open(tmp_path / f"evil{protocol}.pt", "wb") as fh:
            pickle.dump({"state_dict": Evil()}, fh, protocol=protocol)
        with pytest.raises(CheckpointError, match=rf"contains pickled code objects \({os.system.__module__}\.system;"):
            read_checkpoint(tmp_path / f"evil{protocol}.pt")
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump({"a": 1}, fh, protocol=4)
    with pytest.raises(CheckpointError, match="a plain Python pickle, not a PyTorch checkpoint$"):
        read_checkpoint(tmp_path / "plain.pkl")


def test_atomic_save_keeps_previous_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while saving")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": torch.zeros(2), "b": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


def test_every_recipe_loads_in_one_process_and_method_variants_are_keyed_by_recipe():
    """``dfad`` is both a DFAD-recipe baseline and a data-free method: the two registrations must not collide."""
    import kdvision.core.recipes.datafree  # noqa: F401
    import kdvision.core.recipes.dfad  # noqa: F401
    import kdvision.core.recipes.supervised  # noqa: F401
    from kdvision.core.recipes.base import RECIPES, list_methods, method_recipe

    methods = list_methods()
    assert {"dfad/dfad", "datafree/dfad", "datafree/cmi", "supervised/supervised"} <= set(methods)
    assert method_recipe("dfad/dfad") == ("dfad", {"baseline": "dfad"})
    assert method_recipe("datafree/dfad") == ("datafree", {"method": "dfad"})
    for key in methods:  # every variant names a registered recipe, and its key starts with that recipe's name
        recipe, _ = method_recipe(key)
        assert recipe in RECIPES.names() and key.startswith(f"{recipe}/")

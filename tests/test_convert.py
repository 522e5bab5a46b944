from pathlib import Path

import pytest
import torch

from unext_monai import UNEXT_FEATURES, UNEXT_S_FEATURES, UNeXt, from_unext_pytorch
from unext_monai.networks.convert import convert_unext_pytorch_state_dict

# from ../shared/reference/unext_pytorch_reference_outputs.pt: the reference's UNext_S weights (its own keys), its
# first 256x256 input image and rows 64-191 of the reference's logits for it (the file stays under 2 MB)
REFERENCE_FIXTURE = Path(__file__).parent / "data" / "unext_s_reference.pt"


@pytest.fixture(scope="module")
def reference(shared_dir):
    return torch.load(shared_dir / "reference" / "unext_pytorch_reference_outputs.pt", weights_only=True)


def test_converted_unext_s_reproduces_the_reference_without_shared():
    """Reference parity in every clone, from the committed fixture."""
    entry = torch.load(REFERENCE_FIXTURE, weights_only=True)
    net = from_unext_pytorch(entry["state_dict"])
    assert net.features == UNEXT_S_FEATURES and sum(p.numel() for p in net.parameters()) == entry["params"]
    start, stop = entry["rows"]
    with torch.no_grad():
        out = net(entry["input"])
    assert out.shape == (1, 1, 256, 256)
    assert (out[:, :, start:stop] - entry["output_rows"]).abs().max().item() < 1e-4


@pytest.mark.parametrize("name,features", [("UNext", UNEXT_FEATURES), ("UNext_S", UNEXT_S_FEATURES)])
def test_converted_model_reproduces_reference_outputs(reference, name, features):
    entry = reference[name]
    net = from_unext_pytorch(entry["state_dict"])
    assert net.features == features and net.in_channels == 3 and net.out_channels == 1
    assert sum(p.numel() for p in net.parameters()) == entry["params"]
    assert not net.training
    assert len(entry["inputs"]) == 2
    with torch.no_grad():
        for x, expected in zip(entry["inputs"], entry["outputs"]):
            out = net(x)
            assert out.shape == expected.shape
            assert (out - expected).abs().max().item() < 1e-4


def test_reference_keys_file_is_fully_mapped(shared_dir):
    """Every key the reference checkpoint has (names and shapes from the keys file) maps onto UNeXt's."""
    state = {}
    for line in (shared_dir / "reference" / "unext_pytorch_state_dict_keys.txt").read_text().splitlines():
        key, shape = line.split("\t")
        state[key] = torch.zeros(eval(shape))  # shapes are tuples such as (16, 3, 3, 3)
    converted, kwargs = convert_unext_pytorch_state_dict(state)
    assert kwargs["features"] == UNEXT_FEATURES
    ours = UNeXt(**kwargs).state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_from_file_with_dataparallel_prefix(reference, tmp_path):
    entry = reference["UNext_S"]
    path = tmp_path / "model.pth"
    torch.save({f"module.{k}": v for k, v in entry["state_dict"].items()}, path)
    net = from_unext_pytorch(str(path))
    with torch.no_grad():
        assert (net(entry["inputs"][1]) - entry["outputs"][1]).abs().max() < 1e-4


def test_grayscale_multiclass_checkpoint_infers_channels():
    ours = UNeXt(2, 1, 3, features=UNEXT_S_FEATURES)
    # build a reference-style state dict by inverting the key map on a fresh UNeXt
    from unext_monai.networks.convert import _map_key

    ref_keys = [line for line in _reference_style_keys()]
    state = {}
    our_state = ours.state_dict()
    for key in ref_keys:
        value = our_state[_map_key(key)]
        state[key] = value[:, :, 0, 0] if ".fc" in key and key.endswith("weight") else value
    net = from_unext_pytorch(state)
    assert (net.in_channels, net.out_channels) == (1, 3)


def _reference_style_keys():
    blocks = ["block1.0", "block2.0", "dblock1.0", "dblock2.0"]
    keys = []
    for b in blocks:
        keys += [f"{b}.norm2.weight", f"{b}.norm2.bias", f"{b}.mlp.fc1.weight", f"{b}.mlp.fc1.bias",
                 f"{b}.mlp.dwconv.dwconv.weight", f"{b}.mlp.dwconv.dwconv.bias", f"{b}.mlp.fc2.weight",
                 f"{b}.mlp.fc2.bias"]
    for conv in ["encoder1", "encoder2", "encoder3", "decoder1", "decoder2", "decoder3", "decoder4", "decoder5",
                 "final", "patch_embed3.proj", "patch_embed4.proj", "patch_embed3.norm", "patch_embed4.norm",
                 "norm3", "norm4", "dnorm3", "dnorm4"]:
        keys += [f"{conv}.weight", f"{conv}.bias"]
    for bn in ["ebn1", "ebn2", "ebn3", "dbn1", "dbn2", "dbn3", "dbn4"]:
        keys += [f"{bn}.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    return keys


def test_not_a_unext_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"other.pth: not a UNeXt-pytorch.*missing keys"):
        from_unext_pytorch(path)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        from_unext_pytorch(tmp_path / "nothere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth"):
        from_unext_pytorch(tmp_path / "junk.pth")


def test_checkpoint_file_is_loaded_without_executing_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"encoder1.weight": Evil()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth"):
        from_unext_pytorch(path)

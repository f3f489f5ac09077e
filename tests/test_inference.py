
import pytest

from fmnist.config import TrainConfig
from fmnist.errors import FmnistError
from fmnist.inference import load_checkpoint
from fmnist.models import create_model


def test_checkpoint_of_another_layout_is_refused_by_name(tmp_path):
    # resnet_fm's blocks were conv-BN-act-pool (keys stages.N.conv.0/1) before they became conv-pool-BN-act
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fmnist.inference import save_checkpoint

    m = create_model("resnet_fm_small")
    new = save_checkpoint(m, tmp_path / "new.safetensors", TrainConfig(model="resnet_fm_small"), tuple("abcdefghij"))
    assert load_checkpoint(new)[1]["model"] == "resnet_fm_small"
    with safe_open(str(new), framework="pt") as f:
        meta = f.metadata()
    old = {k.replace(".conv.weight", ".conv.0.weight").replace(".norm.", ".conv.1."): v.contiguous()
           for k, v in m.state_dict().items()}
    save_file(old, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(FmnistError, match=r"old\.safetensors: weights do not fit model 'resnet_fm_small' "
                                          r"\(missing stages\.0\.conv\.weight\)"):
        load_checkpoint(tmp_path / "old.safetensors")


def test_saving_a_checkpoint_leaves_the_model_where_it_was(tmp_path):
    # a run is evaluated after its checkpoint is written: on the GPU it trained on, in channels_last
    import torch

    from fmnist.inference import save_checkpoint

    m = create_model("resnet_fm_small").eval().to(memory_format=torch.channels_last)
    conv = m.stages[0].conv.weight
    save_checkpoint(m, tmp_path / "m.safetensors", TrainConfig(model="resnet_fm_small"), tuple("abcdefghij"))
    assert m.stages[0].conv.weight is conv and conv.is_contiguous(memory_format=torch.channels_last)
    loaded = load_checkpoint(tmp_path / "m.safetensors")[0]
    assert loaded.stages[0].conv.weight.is_contiguous(memory_format=torch.channels_last)  # the faster layout
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x))


@pytest.mark.slow
def test_inference_never_imports_training_and_nothing_imports_the_cli():
    import ast
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, fmnist.predict, fmnist.export, fmnist.serve, fmnist.inference; "
            "print(sorted(m for m in sys.modules if m in ('fmnist.loop', 'fmnist.run', 'fmnist.cli', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
    src = Path(__file__).parent.parent / "src" / "fmnist"
    for f in src.rglob("*.py"):
        if f.name == "__main__.py" or f.parent.name == "cli":  # the CLI's own modules import each other
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n == "fmnist.cli" for n in names), f"{f} imports the CLI"
    for module in ("fmnist.data", "fmnist.models", "fmnist.config", "fmnist.loop", "fmnist.run", "fmnist.tuning",
                   "fmnist.cv", "fmnist.study", "fmnist.bench", "fmnist.plots"):  # each imports cleanly on its own
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_tta_views_are_the_image_its_mirror_and_one_pixel_shifts():
    import numpy as np
    import torch

    from fmnist.inference import predict_logits, tta_arrays, tta_views

    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 10, 3] = 255
    views = tta_arrays(img, "flip+shifts")
    assert len(tta_arrays(img, "")) == 1 and len(tta_arrays(img, True)) == 2 and len(views) == 10
    spots = {tuple(int(c) for c in np.argwhere(v[0])[0]) for v in views}
    assert spots == {(10, 3), (10, 24), (11, 3), (9, 3), (10, 4), (10, 2), (11, 24), (9, 24), (10, 25), (10, 23)}
    assert all(v.sum() == 255 for v in views)  # shifted, never wrapped around: black comes in
    with pytest.raises(FmnistError, match="tta 'rotate' unknown"):
        tta_views(torch.zeros(1, 1, 28, 28), "rotate")
    model = create_model("mlp_5x128").eval()
    x = torch.randn(5, 1, 28, 28)
    want = sum(model(v) for v in tta_views(x, "flip+shifts")) / 10
    assert torch.allclose(predict_logits(model, x, tta="flip+shifts"), want, atol=1e-5)


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
                                          r"\(Missing key\(s\) in state_dict: \"stages\.0\.conv\.weight\""):
        load_checkpoint(tmp_path / "old.safetensors")

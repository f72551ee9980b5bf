"""Issue 33, one place for each fact: SAM's radius and norm declared once with one contract per layer, a method's
facts in one record, detection's ways each an entry point of its own, and the 0.2 paths' one deprecation mechanism."""

import math

import pytest
import torch
from torch import nn

from noisysam.core.params import InvalidParameterError
from noisysam.methods.registry import get_method
from noisysam.methods.rules import METHOD_PARAMS
from noisysam.optim import sam as sam_module
from noisysam.optim import variants
from noisysam.run.config import CONFIG_PARAMS


# ------------------------------------------------------------------------------------------ rho and p


def test_rho_is_declared_once_with_one_contract_per_layer():
    """The optimizer takes rho = 0 (its base optimizer's trajectory); a method, an update rule and TrainConfig refuse
    it, every one of them through the same declaration."""
    assert sam_module.SAM_PARAMS.constraints["rho"] == (sam_module.RHO,)
    assert METHOD_PARAMS["rho"] is variants.VARIANT_PARAMS["rho"] is sam_module.METHOD_RHO
    assert CONFIG_PARAMS.constraints["rho"][0] is sam_module.METHOD_RHO
    model = nn.Linear(2, 2)
    assert sam_module.SAM(model.parameters(), torch.optim.SGD, rho=0, lr=0.1).param_groups[0]["rho"] == 0
    for name in ("sam", "looksam", "momentum-sam"):
        with pytest.raises(InvalidParameterError, match=r"^rho must be a finite float > 0, got 0 \(int\)$"):
            get_method(name, rho=0)


def test_p_says_whether_it_is_a_norm_or_a_probability():
    assert sam_module.SAM_PARAMS.constraints["p"] == (sam_module.P_NORM,)
    assert METHOD_PARAMS["p"] is sam_module.P_NORM and math.isinf(sam_module.P_NORM.high)
    assert variants.VARIANT_PARAMS["p"] is variants.VARIANT_PARAMS["p_start"] is variants.STEP_PROBABILITY
    assert get_method("random-sam", p=0.25).params["p"] == 0.25  # a probability: below SAM's p > 1
    with pytest.raises(InvalidParameterError, match="^p must be a float > 1"):
        get_method("sam", p=0.25)

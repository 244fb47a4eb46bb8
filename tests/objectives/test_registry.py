from __future__ import annotations

from typing import get_args

import pytest

from lmforge.config import ObjectiveName
from lmforge.errors import UserError
from lmforge.objectives import OBJECTIVES, get_objective


def test_every_configurable_objective_is_registered():
    assert set(OBJECTIVES) == set(get_args(ObjectiveName))
    assert all(get_objective(name).name == name for name in OBJECTIVES)


def test_unknown_objective_lists_the_choices():
    with pytest.raises(
        UserError, match="objective.name='mlm' is unknown; choose one of span_corruption, mlm_nsp"
    ):
        get_objective("mlm")


def test_family_check():
    get_objective("causal_sft").check_family("llama")
    with pytest.raises(UserError, match="objective.name=mlm_nsp needs model.family bert; got t5"):
        get_objective("mlm_nsp").check_family("t5")

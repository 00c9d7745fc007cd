"""The planner's public surface."""

import fleetcall.planner as planner


def test_all_names_exist() -> None:
    assert sorted(set(planner.__all__)) == sorted(planner.__all__)
    for name in planner.__all__:
        assert hasattr(planner, name), name

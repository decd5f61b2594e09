import pytest

from stabilitykit.names import PATH_SCALES, check_path_name, check_plain_name, is_path_name


@pytest.mark.parametrize("stage", ["stage_a", "stage_b", "stage_darcy", "stage_2_x", "stage_A9"])
def test_stage_names(stage):
    assert check_path_name("stage", stage) == stage


@pytest.mark.parametrize(
    "stage",
    [
        "../../x",
        "stage_a/../../x",
        "stage_",
        "stage",
        "stage_a.b",
        "stage_ä",
        "/stage_a",
        "",
        None,
        3,
    ],
)
def test_stage_names_that_could_leave_a_folder_are_refused(stage):
    with pytest.raises(ValueError, match=r"stage: got .*; allowed: 'stage_' then letters"):
        check_path_name("stage", stage)
    assert not is_path_name("stage", stage)


def test_scale_names():
    assert all(check_path_name("scale", s) == s for s in PATH_SCALES)
    assert PATH_SCALES == ("smoke", "proxy", "ci", "full", "custom")
    for bad in ("../../y", "none", "CI", "ci/..", ""):
        with pytest.raises(ValueError, match=r"the runs' scale: got .*; allowed: one of"):
            check_path_name("scale", bad, "the runs' scale")


def test_an_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="kind 'arm'"):
        check_path_name("arm", "x")


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "a\\b", "a\0b", None])
def test_plain_names(bad):
    assert check_plain_name("stage", "s") == "s"
    with pytest.raises(ValueError, match="stage: got"):
        check_plain_name("stage", bad)


def test_a_stage_name_longer_than_a_folder_name_should_be_is_refused_by_name():
    assert check_path_name("stage", "stage_" + "a" * 58) == "stage_" + "a" * 58  # 64
    long = "stage_" + "a" * 294
    message = r"stage: got 'stage_a+' \(300 characters\); allowed: .*at most 64"
    with pytest.raises(ValueError, match=message):
        check_path_name("stage", long)

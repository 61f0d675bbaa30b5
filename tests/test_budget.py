"""Time budgets (`fit --budget`): parsing, and a budget too small for the first stage refused before any write."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from catsdogs.budget import Budget, format_seconds, parse_duration
from catsdogs.cli import main
from catsdogs.errors import UsageError
from catsdogs.fit_plan import plan

from helpers import make_class_folders


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400),
                                                 ("600", 600), (0, 0), ("0", 0), (" 2M ", 120), ("1h2m3s", 3723)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-5m", "nan", "abc", "10x", "inf", "", "m", "10m5", True, "5m5m", "30m1h",
                                  "1h30m1h"])
def test_bad_durations_name_the_parameter(text):
    with pytest.raises(UsageError, match="budget must be a duration") as caught:
        parse_duration(text)
    assert caught.value.parameter == "budget"


@pytest.mark.parametrize("text", ["-5m", "nan", "abc", "10x", "5m5m"])
def test_bad_budget_on_the_command_line_is_exit_2(text, tmp_path: Path, capsys):
    assert main(["fit", str(tmp_path), "--out", str(tmp_path / "run"), f"--budget={text}"]) == 2
    err = capsys.readouterr().err
    assert "--budget must be a duration" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["-5m", "-1h30m", "-0.5"])
def test_negative_budget_after_a_space_reaches_its_own_check(text, tmp_path: Path, capsys):
    """`--budget -5m` as typed: argparse alone reads `-5m` as an option and says `expected one argument`."""
    assert main(["fit", str(tmp_path), "--out", str(tmp_path / "run"), "--budget", text]) == 2
    err = capsys.readouterr().err
    assert f"--budget must be a duration >= 0 such as 10m, 90s or 1h, got '{text}'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_plan_orders_stages_and_refuses_a_budget_too_small():
    stages = plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(600))
    assert [(stage.backbone, stage.model) for stage in stages] == [("a", "heads"), ("b", "heads"), ("a+b", "heads"),
                                                                   ("best", "finetune-top")]
    assert stages[0].estimate_s > stages[1].estimate_s  # a is ten times slower
    assert stages[3].estimate_s > stages[0].estimate_s  # its top's inputs extracted, then trained for epochs
    with pytest.raises(UsageError, match="too small for even the first stage") as caught:
        plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(60))
    assert caught.value.parameter == "budget"
    assert [stage.backbone for stage in plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(0))] == ["a", "b"]


def test_budget_bookkeeping():
    unlimited, small = Budget(0), Budget(5)
    assert unlimited.unlimited and unlimited.left() == math.inf and unlimited.allows(1e9)
    assert not small.unlimited and small.allows(1) and not small.allows(10)
    assert format_seconds(425) == "7 min 05 s" and format_seconds(42) == "42 s"


def test_too_small_a_budget_writes_nothing(tmp_path: Path, capsys):
    photos = make_class_folders(tmp_path / "photos", per_class=6)
    assert main(["fit", str(photos), "--out", str(tmp_path / "run"), "--budget", "1s", "--backbone",
                 "mobilenetv2"]) == 2
    err = capsys.readouterr().err
    assert "too small for even the first stage" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert main(["fit", str(photos), "--out", str(tmp_path / "run"), "--budget", "0.5s", "--backbone",
                 "mobilenetv2"]) == 2
    err = capsys.readouterr().err
    assert "--budget 0.5s is too small" in err and "0 s" not in err.split("small")[0], err


def test_a_resolution_stage_only_for_photos_larger_than_the_base(tmp_path: Path):
    from catsdogs.fit_plan import Stage, resolution_stage

    stages = [Stage("heads mobilenetv2", "mobilenetv2", 100.0)]  # its input: 160 px
    for name, (width, height), expected in (("big", (512, 384), 384), ("small", (180, 160), None),
                                            ("medium", (300, 224), 224)):
        data = tmp_path / name
        data.mkdir()
        (data / "classes.json").write_text('["a", "b"]')
        rows = "".join(f"train/a/{i}.jpg,a,train,x,{width},{height},s{i}\n" for i in range(5))
        (data / "manifest.csv").write_text("path,class,split,sha256,width,height,source\n" + rows)
        stage = resolution_stage(stages, data)
        assert (stage.image_size if stage else None) == expected
        if stage:
            assert stage.estimate_s > 100.0 and stage.folder == f"best@{expected}"


def test_the_eta_counts_every_planned_stage_and_the_finish():
    from catsdogs.fit_plan import finish_seconds, plan_eta, plan_line

    stages = plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(600))
    finish = finish_seconds(1000, 10.0)
    assert finish > 2 * 150 / 10.0  # at least the test split's two views at a's speed
    stages[1].status = "skipped"
    eta = plan_eta(stages, finish)
    assert eta == pytest.approx(stages[0].estimate_s + stages[2].estimate_s + stages[3].estimate_s + finish)
    line = plan_line(stages, Budget(500), finish)  # finetune-top does not fit after the others: left out of the ETA
    within = plan_eta(stages, finish, 500)
    assert within == pytest.approx(eta - stages[3].estimate_s)
    assert f"finetune-top best backbone ~{format_seconds(stages[3].estimate_s)} (if time allows)" in line
    assert line.endswith(f"ETA {format_seconds(within)}") and "heads b ~" not in line
    tight = stages[0].estimate_s + finish + 1  # the first stage and the finish fit, the pair does not
    assert plan_eta(stages, finish, tight) == pytest.approx(stages[0].estimate_s + finish)
    assert "(if time allows)" in plan_line(stages, Budget(tight), finish)


def test_finetune_top_takes_the_time_of_the_pair_and_the_second_backbone_when_the_budget_is_short():
    from catsdogs.fit_plan import expected_stages, finish_seconds, make_room

    def stages_for(budget: float):
        return plan(["a", "b"], {"a": 10.0, "b": 10.0}, 1000, Budget(budget)), finish_seconds(1000, 10.0)

    stages, finish = stages_for(10_000)
    full = sum(stage.estimate_s for stage in stages) + finish
    assert make_room(stages, finish, full) == []  # everything fits: nothing skipped
    stages, finish = stages_for(full - 1)
    skipped = make_room(stages, finish, full - 1)  # the pair first
    assert [stage.name for stage in skipped] == ["heads a+b"] and skipped[0].note.endswith("time for finetune-top")
    assert stages[-1] in expected_stages(stages, finish, full - 1)
    short = full - stages[2].estimate_s - 1
    stages, finish = stages_for(short)
    assert [stage.name for stage in make_room(stages, finish, short)] == ["heads a+b", "heads b"]
    hopeless = stages[0].estimate_s + finish + 1  # finetune-top cannot fit even alone: the plan is left as it was
    stages, finish = stages_for(hopeless)
    assert make_room(stages, finish, hopeless) == [] and all(stage.status == "planned" for stage in stages)


def test_stages_the_budget_cannot_hold_are_skipped_at_planning_with_the_budget_that_would():
    from catsdogs.fit_plan import finish_seconds, plan_eta, skip_unexpected
    from catsdogs.fit_report import fit_section

    stages = plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(500))
    finish = finish_seconds(1000, 10.0)
    eta = plan_eta(stages, finish, 500)
    skipped = skip_unexpected(stages, finish, Budget(500))
    assert [stage.name for stage in skipped] == ["finetune-top best backbone"] and skipped[0].status == "skipped"
    need = math.ceil((sum(stage.estimate_s for stage in stages) + finish) / 60)  # every stage before it runs
    assert f"give budget {need}m or more" in skipped[0].note
    assert plan_eta(stages, finish, 500) == pytest.approx(eta)  # what the plan expected still runs, nothing more
    assert skip_unexpected(stages, finish, Budget(500)) == []
    skipped[0].note = "<script>alert(1)</script>"  # the report escapes what it shows
    record = {"stages": [vars(stage) for stage in stages], "chosen": "a", "chosen_on": "validation accuracy"}
    assert "<script>" not in fit_section(record) and "&lt;script&gt;" in fit_section(record)


def test_a_stage_skipped_for_time_runs_after_all_when_the_stages_before_it_ran_fast():
    from catsdogs.fit_plan import Stage, admit_after_all

    heads, top = Stage("heads a", "a", 60.0, status="done"), Stage("finetune-top best backbone", "a", 100.0,
                                                                 model="finetune-top", status="done")
    def tuning(**kw) -> Stage:  # (e) skipped at planning: 220 s over two epochs of 100 s, 120 s over one
        return Stage("fine-tuning best backbone", "best", 220.0, status="skipped", note="give budget 13m",
                     model="finetune", epochs=2, epoch_s=100.0, **kw)

    stage = tuning(if_time=True)
    assert not admit_after_all(stage, [heads, top, stage], 119.0, 1.0) and stage.status == "skipped"  # not one
    assert admit_after_all(stage, [heads, top, stage], 230.0, 1.0) and stage.epochs == 2  # both epochs fit
    assert stage.status == "planned" and "run after all" in stage.note
    stage = tuning(if_time=True)  # at 0.8 of the estimates, 110 s hold one epoch (96 s), not two (176 s)
    assert admit_after_all(stage, [heads, top, stage], 110.0, 0.8) and stage.epochs == 1
    assert stage.estimate_s == pytest.approx(120.0)
    stage = tuning(if_time=True)
    assert not admit_after_all(stage, [heads, top, stage], 110.0, 1.5) and stage.status == "skipped"
    room = Stage("heads a+b", "a+b", 10.0, status="skipped", note="skipped at planning to leave time")
    assert not admit_after_all(room, [heads, room], 1000.0, 0.5)  # skipped to make room: it stays skipped
    top.status, stage = "skipped", tuning(if_time=True)  # nothing to continue from
    assert not admit_after_all(stage, [heads, top, stage], 1000.0, 0.5)


def test_stages_skipped_at_planning_for_time_are_marked_to_run_if_time_allows():
    from catsdogs.fit_plan import finetune_stage, finish_seconds, skip_unexpected

    stages = plan(["a", "b"], {"a": 10.0, "b": 100.0}, 1000, Budget(500))
    finish = finish_seconds(1000, 10.0)
    skipped = skip_unexpected(stages, finish, Budget(500))
    assert skipped and all(stage.if_time and "faster than planned" in stage.note for stage in skipped)
    tuning = finetune_stage(stages, {"a": 1.0}, 1000, Budget(500), finish)  # (c) not planned: it cannot run
    assert tuning.status == "skipped" and not tuning.if_time

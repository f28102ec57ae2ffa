"""What `rlan` prints and returns when something fails: the line naming the cause, and the exit status."""

from orchestrator.cli import cause_line


def test_a_wrapped_traceback_gives_its_last_line():
    # How Ray Tune wraps a trial's error: the whole formatted traceback as the message.
    wrapped = (
        "Traceback (most recent call last):\n"
        '  File "tune_controller.py", line 1223, in _on_result\n'
        "    on_result(trial, *args, **kwargs)\n"
        "ValueError: Trial returned a result which did not include the specified metric(s) `score`\n"
    )
    assert cause_line(RuntimeError(wrapped)).startswith("ValueError: Trial returned a result")


def test_a_plain_message_gives_its_first_line_and_a_long_one_is_cut():
    assert cause_line(RuntimeError("disk full\nmore detail")) == "disk full"
    assert cause_line(RuntimeError("")) == ""
    line = cause_line(RuntimeError("x" * 1000), limit=50)
    assert len(line) == 50 and line.endswith("...")


def test_a_sweep_with_failed_trials_exits_1_unless_partial_results_are_accepted(capsys):
    from orchestrator.cli.sweeps import trials_exit_status

    assert trials_exit_status("sweep", {"trials": 4, "errors": 0}, False) == 0
    assert capsys.readouterr().err == ""
    assert trials_exit_status("sweep", {"trials": 4, "errors": 1}, False) == 1
    assert "1 of 4 trials failed" in capsys.readouterr().err
    assert trials_exit_status("ablate", {"trials": 4, "errors": 1}, True) == 0
    assert "accepted (--allow-partial)" in capsys.readouterr().err
    assert trials_exit_status("resume", {"trials": 2, "errors": 2}, True) == 1  # nothing to accept
    assert "no trial finished" in capsys.readouterr().err

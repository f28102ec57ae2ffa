"""The one line `rlan` prints for an unexpected failure names the cause, not the word 'Traceback'."""

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

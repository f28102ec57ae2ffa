"""The writer thread behind the sweep's MLflow callback: order, survival of a failing call, ticks, draining."""

import threading

from orchestrator.tracking.serial_writer import SerialWriter


def test_calls_run_in_order_on_one_thread_and_a_failing_call_does_not_stop_the_rest(capsys):
    done, ticks, threads = [], [], set()

    def call(i):
        threads.add(threading.current_thread().name)
        if i == 2:
            raise ValueError("a bad write")
        done.append(i)

    writer = SerialWriter(ticks.append, tick_every_s=3600.0, name="test-writer")
    for i in range(5):
        writer.submit(call, i)
    writer.wait_idle()
    assert done == [0, 1, 3, 4] and threads == {"test-writer"}
    assert ticks == [False] * 5  # after each call; never idle for an hour
    assert "ValueError: a bad write" in capsys.readouterr().err
    writer.close()
    assert ticks[-1] is True  # the last tick sends everything still waiting


def test_an_idle_writer_ticks_and_close_runs_what_is_queued():
    idle = threading.Event()
    writer = SerialWriter(lambda was_idle: was_idle and idle.set(), tick_every_s=0.01)
    assert idle.wait(5)  # an idle queue ticks with idle=True
    done = []
    for i in range(50):
        writer.submit(done.append, i)
    writer.close()
    assert done == list(range(50))

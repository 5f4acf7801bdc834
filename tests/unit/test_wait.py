from livedash.wait import poll


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_poll_returns_the_first_result_that_is_done() -> None:
    t = FakeTime()
    answers = iter([None, None, "up"])
    assert poll(lambda: next(answers), 10, 1, clock=t.clock, sleep=t.sleep) == "up"
    assert t.sleeps == [1, 1]


def test_poll_gives_up_at_the_deadline_with_the_last_result_after_one_more_look() -> None:
    t = FakeTime()
    calls: list[float] = []

    def check() -> int:
        calls.append(t.now)
        return 0

    assert poll(check, 2.5, 1, clock=t.clock, sleep=t.sleep) == 0
    assert calls == [0, 1, 2, 2.5]  # the last sleep is cut to the deadline


def test_poll_with_its_own_notion_of_done() -> None:
    t = FakeTime()
    counts = iter(range(100))
    assert poll(lambda: next(counts), 100, 1, done=lambda n: n >= 3, clock=t.clock, sleep=t.sleep) == 3

"""Frames decoded and encoded in threads beside the model: order kept, errors raised where they
belong, threads stopped."""
import threading

import pytest

from brushwork.video.pipeline import BackgroundWriter, prefetch


def test_prefetch_keeps_order_and_raises_the_decoders_error_in_place():
    assert list(prefetch(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for f in prefetch(broken()):
            got.append(f)
    assert got == [1, 2]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    before = threading.active_count()
    gen = prefetch(iter(range(10 ** 6)), depth=2)
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before


class _Sink:
    def __init__(self, fail_at=None):
        self.frames, self.fail_at = [], fail_at

    def write(self, f):
        if f == self.fail_at:
            raise OSError("disk full")
        self.frames.append(f)


def test_background_writer_writes_every_frame_in_order():
    sink = _Sink()
    w = BackgroundWriter(sink)
    for i in range(100):
        w.write(i)
    w.close()
    assert sink.frames == list(range(100))


def test_background_writer_raises_the_encoders_error():
    w = BackgroundWriter(_Sink(fail_at=3), depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            w.write(i)
        w.close()

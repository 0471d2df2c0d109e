"""Ctrl-C between two writes that belong together (a step's buffers and its step counter)
must not leave half of them written: ``deferred`` holds SIGINT back until the block ends,
then delivers it."""
import _signal  # signal's own core: signal.signal adds enum conversions to every call
import contextlib
import signal
import threading

_MAIN = threading.main_thread()
_SIGINT = int(signal.SIGINT)


@contextlib.contextmanager
def deferred():
    """Run the block with SIGINT held back (main thread only: Python delivers signals there),
    then deliver it to the handler that was installed."""
    if threading.current_thread() is not _MAIN:
        yield
        return
    received = []
    try:
        previous = _signal.signal(_SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        _signal.signal(_SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])
        elif received and previous == signal.default_int_handler:
            raise KeyboardInterrupt

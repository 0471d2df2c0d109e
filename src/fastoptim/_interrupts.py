"""Ctrl-C between two writes that belong together (a step's buffers and its step counter)
must not leave half of them written: ``deferred`` holds SIGINT back until the block ends,
then delivers it."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred():
    """Run the block with SIGINT held back (main thread only: Python delivers signals there),
    then deliver it to the handler that was installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])
        elif received and previous == signal.default_int_handler:
            raise KeyboardInterrupt

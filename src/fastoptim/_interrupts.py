"""Ctrl-C between two writes that belong together (a step's buffers and its step counter)
must not leave half of them written: ``deferred`` holds SIGINT back until the block ends,
then delivers it."""
import _signal  # signal's core: signal.signal/getsignal add enum conversions to every call
import contextlib
import signal
import threading

_MAIN = threading.main_thread()
_SIGINT = int(signal.SIGINT)


@contextlib.contextmanager
def deferred():
    """Run the block with SIGINT held back (main thread only: Python delivers signals there),
    then deliver it as the handler that was installed would have: KeyboardInterrupt, the
    program's own handler, or the default action (the process ends) under SIG_DFL."""
    if threading.current_thread() is not _MAIN:
        yield
        return
    previous = _signal.getsignal(_SIGINT)
    # None: a handler installed outside Python, which Python cannot put back
    if previous is None or previous == _signal.SIG_IGN:
        yield
        return
    received = []
    try:
        _signal.signal(_SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        _signal.signal(_SIGINT, previous)
        if received and previous == _signal.SIG_DFL:
            signal.raise_signal(_SIGINT)
        elif received:
            previous(*received[0])

"""Ctrl-C between two writes that belong together (a step's buffers and its step counter)
must not leave half of them written: ``deferred`` holds SIGINT back until the block ends,
then delivers it."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred():
    """Run the block with SIGINT held back (main thread only: Python delivers signals there),
    then deliver it as the handler that was installed would have: KeyboardInterrupt, the
    program's own handler, or the default action (the process ends) under SIG_DFL."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    # None: a handler installed outside Python, which Python cannot put back
    if previous is None or previous == signal.SIG_IGN:
        yield
        return
    received = []
    try:
        signal.signal(signal.SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)
        elif received:
            previous(*received[0])

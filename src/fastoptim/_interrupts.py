"""Ctrl-C between two writes that belong together (a step's buffers and its step counter)
must not leave half of them written: ``deferred`` holds SIGINT back until the block ends,
then delivers it."""
import _signal  # signal's core: signal.signal/getsignal add enum conversions to every call
import signal
import threading

_MAIN = threading.main_thread()
_SIGINT = int(signal.SIGINT)


class deferred:
    """``with deferred():`` runs the block with SIGINT held back (main thread only: Python
    delivers signals there), then delivers it as the handler that was installed would have:
    KeyboardInterrupt, the program's own handler, or the default action (the process ends)
    under SIG_DFL. (A class, not a generator: it is entered on every step.)"""

    __slots__ = ("previous", "received")

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is not _MAIN:
            return self
        previous = _signal.getsignal(_SIGINT)
        # None: a handler installed outside Python, which Python cannot put back
        if previous is None or previous == _signal.SIG_IGN:
            return self
        self.received = []
        try:
            _signal.signal(_SIGINT, self._hold)
        except ValueError:  # not the main interpreter
            return self
        self.previous = previous
        return self

    def _hold(self, *args):
        self.received.append(args)

    def __exit__(self, *exc):
        previous = self.previous
        if previous is None:
            return False
        _signal.signal(_SIGINT, previous)
        if self.received and previous == _signal.SIG_DFL:
            signal.raise_signal(_SIGINT)
        elif self.received:
            previous(*self.received[0])
        return False

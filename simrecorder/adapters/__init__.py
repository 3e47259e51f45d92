"""Classic storage APIs on top of simrecorder: MuMMI-style namespace I/O (``mummi``)."""

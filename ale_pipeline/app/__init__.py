"""``ale-app``: ALE editing in a web page (Gradio), served on this machine.

- :mod:`.cli`: the command (``--model``, ``--device``, ``--host``, ``--port``); imports nothing heavy.
- :mod:`.inputs`: the page's values as an edit's inputs (phrase rows, painted layers as masks, settings).
- :mod:`.session`: the work behind the page (masks, the edit with progress, the pictures shown).
- :mod:`.ui`: the page itself, and how it is served (queued, offline).
- :mod:`.offline`: what keeps the app from calling home.
"""

from .cli import main

__all__ = ["main"]
